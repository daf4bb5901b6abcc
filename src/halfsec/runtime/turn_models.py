"""The end-of-turn models every session shares, loaded and run once before the server
listens.

Silero VAD (``turn/vad.py``) and Smart Turn (``turn/combined.shared_smart_turn``) are
process-wide, but each is loaded by the first session that needs it, inside that
session's constructor, on the event loop: ~80 ms for the VAD and ~40 ms load + ~50 ms
first inference for Smart Turn (measured 2026-12-01 on the 2-core box).  So the first
caller waited, and every other session's audio stalled behind the loop meanwhile: in the
10-minute soak the slowest turns of the first minute were the first callers'.  The
server pays it at start-up instead (``server/app.py``), before ``/healthz`` and
``/ready`` answer, and so does every warmed ``build_engines`` (``runtime/build.py``:
``halfsec run``, Wyoming, an embedding program), after the engines' own warm-up.
"""

from __future__ import annotations

import numpy as np

from halfsec.turn import vad
from halfsec.turn.combined import shared_smart_turn, smart_turn_loaded
from halfsec.turn.options import TurnOptions

__all__ = ["preload_turn_models"]

_SAMPLE_RATE = 16_000


def preload_turn_models(turn: TurnOptions, end_of_turn: str) -> None:
    """Load the VAD and, when ``end_of_turn`` is the combined policy with Smart Turn on,
    Smart Turn, and run each once on a second of quiet noise (first-run allocations).
    Nothing to do for what this process has loaded already (a server built on warmed
    engines: ``build_engines`` preloaded them)."""
    smart_on = end_of_turn == "combined" and turn.smart_turn
    if vad.loaded() and (not smart_on or smart_turn_loaded(turn.smart_turn_threads)):
        return
    noise = (np.random.default_rng(0).standard_normal(_SAMPLE_RATE) * 300).astype(np.int16)
    vad.SileroVAD().push(noise)
    if smart_on:
        smart = shared_smart_turn(turn.smart_turn_threads)
        if smart is not None:
            smart.probability(noise)
