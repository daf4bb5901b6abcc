"""The text-to-speech engine interface.

The runtime hands an engine one clause at a time (the logic stage streams clauses), so
the first audio leaves after the first clause, not after the whole reply.  An engine
yields int16 mono chunks at its native ``sample_rate``; the runtime resamples to the
consumer's rate with soxr.

Which clause of its reply a ``synthesize`` call speaks is told out of band, with
``set_clause_index`` in the turn's task (a context variable, so the interface stays one
text in, audio out): an engine shared by many sessions puts every reply's first clause
ahead of the later clauses of others (``tts/clause_queue.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

import numpy as np

_CLAUSE_INDEX: ContextVar[int] = ContextVar("halfsec_tts_clause_index", default=0)


def set_clause_index(index: int) -> None:
    """The running task's next ``synthesize`` calls speak clause ``index`` (0: first) of
    a reply.  A task has its own context, so one turn's setting never reaches another."""
    _CLAUSE_INDEX.set(index)


def clause_index() -> int:
    """The clause the running task speaks (0 when nobody said: a lone call is urgent)."""
    return _CLAUSE_INDEX.get()


class TTSEngine(ABC):
    name: str = "tts"
    sample_rate: int = 22_050
    prefill_safe: bool = False
    """May ``synthesize`` run on a private event loop during warmup (``tts/phrase_cache``)?
    True for engines that keep nothing bound to the loop they first ran on (local ones);
    an engine holding an HTTP client must stay False and fill its cache on first use."""

    @abstractmethod
    def synthesize(self, text: str) -> AsyncIterator[np.ndarray]:
        """Yield int16 chunks for ``text``; inference runs off the event loop.

        Cancelling the consuming task must stop synthesis at the next chunk boundary."""

    def warmup(self) -> None:  # noqa: B027 - optional hook
        """Run once before the first turn so the first user does not pay model load."""


class WrappedTTS(TTSEngine):
    """Base of an engine that stands in front of another (the phrase cache, the lab's fault
    plan): it is heard as the inner engine (same name, rate and prefill safety), warms it,
    and passes everything it does not define itself (``render_blocking``, ``aclose``,
    ``close``, options) to it.  One base, so a new wrapper cannot forget one of these."""

    def __init__(self, inner: TTSEngine) -> None:
        self.inner = inner
        self.name = inner.name
        self.sample_rate = inner.sample_rate
        self.prefill_safe = inner.prefill_safe

    def warmup(self) -> None:
        self.inner.warmup()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
