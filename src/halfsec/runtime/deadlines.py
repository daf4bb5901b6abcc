"""When each stage of a turn is late: the deadlines the fallback ladder acts on.

A stage that is merely slow and a stage that is hung look the same from outside until a
clock says which: a turn with no deadline waits forever on a hung Whisper decode, and the
user hears nothing.  The deadlines come from the latency budget (``budgets/default.toml``:
the line each stage is held to at p95), so "late" means late by the same account every
report uses.  The reliability target under a fault is twice the v2v budget (p95 <= 1000
ms for the 500 ms budget): a fault may cost one v2v budget, no more.  The defaults, from
the default budget's lines (endpointing 250, stt 200, logic 150, tts 50, network 100,
v2v 500 ms):

* STT final: endpointing + stt (450 ms after the pause).  The speculative final starts
  at the pause, so by the budget it is due once both lines have passed.
* logic first clause: 2 x logic (300 ms); the retry after "One moment.": v2v (500 ms);
  a reply quiet between two clauses: 2 x the fault target (2000 ms).
* TTS first audio of a clause (and each gap after it): 2 x (tts + network) = 300 ms.
  The tts line alone (50 ms) is below Piper's healthy p95 on 2 cores (~180 ms), so a
  deadline on it would replace a good voice with espeak-ng on healthy turns.
* a hung decode: 2 x v2v (1000 ms) after it started, the longest a faulted turn may take.

The numbers live in ``SessionOptions`` (``session.*_deadline_ms``: config file,
``HALFSEC_SESSION_...`` or ``--set``); :func:`derive_from_budget` is the rule above, and
a test keeps the defaults equal to it applied to ``budgets/default.toml``.  The product
never reads the budget file itself: it belongs to the lab.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from halfsec.runtime.options import SessionOptions

FAULT_TARGET_FACTOR = 2.0
"""v2v p95 under a fault may be this many times the v2v budget (issue 9: <= 1000 ms)."""


@dataclass(frozen=True, slots=True)
class Deadlines:
    """The deadlines of one turn's stages, in milliseconds (see the module docstring)."""

    stt_final_ms: float
    """From ``stt.start`` to the final transcript."""
    logic_first_clause_ms: float
    """From ``logic.start`` to the first reply clause."""
    logic_retry_ms: float
    """From the retry's start to its first clause."""
    logic_gap_ms: float
    """Between two clauses of a reply that has begun."""
    tts_first_audio_ms: float
    """From a clause's synthesis start to its first audio, and between its chunks."""
    stt_hung_ms: float
    """From a final decode's start until its abandoned worker is replaced."""

    @classmethod
    def from_options(cls, options: SessionOptions) -> Deadlines:
        return cls(
            stt_final_ms=options.stt_deadline_ms,
            logic_first_clause_ms=options.logic_deadline_ms,
            logic_retry_ms=options.logic_retry_ms,
            logic_gap_ms=options.logic_gap_ms,
            tts_first_audio_ms=options.tts_deadline_ms,
            stt_hung_ms=options.stt_hung_ms,
        )


def derive_from_budget(lines_ms: Mapping[str, float], v2v_ms: float) -> dict[str, float]:
    """``SessionOptions`` deadline values for a budget's ``lines_ms`` (line name ->
    limit: endpointing, stt, logic, tts, network) and its ``v2v_ms``.

    A deployment with another budget can apply this and pass the result with ``--set
    session.<key>=<value>``."""
    k = FAULT_TARGET_FACTOR
    return {
        "stt_deadline_ms": lines_ms["endpointing"] + lines_ms["stt"],
        "logic_deadline_ms": k * lines_ms["logic"],
        "logic_retry_ms": (k - 1.0) * v2v_ms,
        "logic_gap_ms": k * k * v2v_ms,
        "tts_deadline_ms": k * (lines_ms["tts"] + lines_ms["network"]),
        "stt_hung_ms": k * v2v_ms,
    }
