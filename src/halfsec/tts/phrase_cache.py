"""Synthesized audio of short clauses, kept for the next time they are said.

Why: a domain's replies open with the same few clauses ("Sure.", "Got it.", "What size?"),
and the first clause's synthesis sits between the end of the turn and the reply's first
audible sample (Piper, 2 cores: ~20-30 ms, more while Whisper's final still runs).  The
same words from the same voice need not be rendered again: a hit yields the kept audio at
once and leaves the CPU to the recognizer.  Piper's VITS decoder draws noise, so a kept
clause sounds exactly like its first rendering instead of a near copy: for the fixed
openers of a reply that consistency is a feature, not a loss.

What is kept: clauses of at most ``max_chars`` characters whose stream ran to its end (a
stream its consumer stopped early is never kept), least recently used out first, at most
``entries``.  The key includes whether the clause opens its reply
(``tts.engine.clause_index``), because engines trim the leading silence of a reply's first
clause only.  ``prefill`` (a domain's fixed clauses) is rendered during ``warmup`` as
openers, so even the first caller of a process hears a kept "Sure."; engines whose
streams hold a client bound to one event loop (remote APIs) declare
``prefill_safe = False`` and fill on first use instead.

A wrapper rather than a feature of each engine: it works the same for Piper, espeak-ng,
an OpenAI-compatible server and plugins, and the fault wrappers still wrap it (an
injected TTS stall stalls a kept clause too).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence

import numpy as np

from halfsec.tts.engine import TTSEngine, WrappedTTS, clause_index

log = logging.getLogger(__name__)

_Key = tuple[str, bool]


class PhraseCache(WrappedTTS):
    """``inner`` with its short clauses' audio kept (see the module docstring)."""

    def __init__(
        self,
        inner: TTSEngine,
        *,
        entries: int,
        max_chars: int,
        prefill: Sequence[str] = (),
    ) -> None:
        super().__init__(inner)
        self.entries = entries
        self.max_chars = max_chars
        self.prefill = tuple(dict.fromkeys(t.strip() for t in prefill if t.strip()))
        self.hits = 0
        self.misses = 0
        self._kept: OrderedDict[_Key, tuple[np.ndarray, ...]] = OrderedDict()

    def _key(self, text: str, first: bool) -> _Key | None:
        text = text.strip()
        if self.entries <= 0 or not text or len(text) > self.max_chars:
            return None
        return (text, first)

    def kept(self, text: str, first: bool = True) -> bool:
        """Is ``text`` kept (as an opener when ``first``)?  For tests and diagnostics."""
        key = self._key(text, first)
        return key is not None and key in self._kept

    def _keep(self, key: _Key, chunks: tuple[np.ndarray, ...]) -> None:
        self._kept[key] = chunks
        self._kept.move_to_end(key)
        while len(self._kept) > self.entries:
            self._kept.popitem(last=False)

    async def synthesize(self, text: str) -> AsyncIterator[np.ndarray]:
        key = self._key(text, clause_index() == 0)
        hit = self._kept.get(key) if key is not None else None
        if key is not None and hit is not None:
            self.hits += 1
            self._kept.move_to_end(key)
            for chunk in hit:
                yield chunk.copy()  # consumers may scale or resample in place
            return
        if key is None:
            async for chunk in self.inner.synthesize(text):
                yield chunk
            return
        self.misses += 1
        rendered: list[np.ndarray] = []
        async for chunk in self.inner.synthesize(text):
            rendered.append(chunk.copy())
            yield chunk
        # Reached only when the stream ran to its end: a consumer that stopped early
        # closed this generator at the ``yield`` above, and a partial clause is not kept.
        self._keep(key, tuple(rendered))

    def warmup(self) -> None:
        """Warm the engine, then render ``prefill`` as openers (at most ``entries``)."""
        super().warmup()
        if not self.prefill_safe or self.entries <= 0:
            return
        texts = [t for t in self.prefill if self._key(t, True) is not None][: self.entries]
        if not texts:
            return
        # A private event loop on its own thread: warmup may be called from inside a
        # running loop (a server's startup), where asyncio.run would refuse to start.
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tts-prefill") as ex:
            for text in texts:
                try:
                    chunks = ex.submit(asyncio.run, _render(self.inner, text)).result()
                except Exception as e:  # noqa: BLE001 - a clause that fails is rendered on use
                    log.warning("tts phrase cache: could not prefill %r: %s", text, e)
                    continue
                key = self._key(text, True)
                assert key is not None
                self._keep(key, chunks)
        log.debug("tts phrase cache: %d clauses prefilled", len(self._kept))


async def _render(engine: TTSEngine, text: str) -> tuple[np.ndarray, ...]:
    """``text`` as a reply's first clause (a fresh thread's context: clause index 0)."""
    return tuple([c.copy() async for c in engine.synthesize(text)])
