"""The combined end-of-turn policy: audio model + transcript + the domain, weighed together
and re-weighed as each piece of evidence arrives.

A pause starts with almost nothing known.  Within ~100 ms the speculative transcript
arrives (words: does it stop on "with", "and", "uh"?), the domain judges its meaning (an
order with no drink yet is unfinished; "Large." answers "What size?"), and the audio
model (Smart Turn v3.2, ~30 ms) says how finished it *sounds*.  Instead of picking one
window at the pause, the policy answers "how much silence is enough?" again each time
the session asks (every 20 ms frame), from whatever has arrived by then:

* what the words say sets a *class*: ``incomplete`` (trailing connective or filler, or
  the domain says a required slot is missing), ``complete`` (the domain accepts it and
  the transcript does not end on a comma), split by the request's *tail* where the
  domain can tell (``LogicEngine.tail_said``): ``finished`` (it also said what people
  add at the end: the coffee order's milk or sugar) or ``open`` (it could go on), or
  ``unknown`` (off-domain, empty, not decoded yet, or a listing comma: ``text_class``);
* within its class the audio model's probability slides the window linearly from the
  class's longest (model says "not done") to its shortest (model says "done"); with no
  model verdict yet the window is the class's longest.

The runtime form is ``turn/combined.py``.  The windows were tuned on the tune half of the shared recordings
(``benchmarks/eot_bench.py``) and checked on the held-out half and on Piper recordings
with deliberate hesitations; docs/turn-taking.md has the curves."""

from __future__ import annotations

from dataclasses import dataclass

from halfsec.turn.end_of_turn import TranscriptAwarePolicy

SMART_TURN_SCHEDULE_MS = (200.0, 300.0, 400.0, 550.0)
"""Silence (after the estimated end of speech) at which Smart Turn is asked again, after
its first call at the pause itself: with more of the pause behind it the model is surer
that a finished turn is finished (on the shared recordings the share of turn ends it
calls finished goes from 84 % at the pause to 93 % at 300 ms), so a turn that sounded
unfinished at first can still end before its slow window."""
REASK_BELOW = 0.9
"""The model is asked again only while its latest verdict is below this (or missing): a
verdict of 0.9 already puts the window within a tenth of its class's range of the fast
end, and a re-ask at 200 ms of silence lands just when the first clause is being
synthesized, on the same two cores.  On the replayed shared recordings the decisions are
the same at every setting swept, with 276 re-asks instead of 1007
(``benchmarks/eot_bench.py``, 2026-12-01)."""


def reask(latest: float | None) -> bool:
    """Ask the model again at the next scheduled silence, given its latest verdict?"""
    return latest is None or latest < REASK_BELOW


@dataclass(frozen=True, slots=True)
class Windows:
    """Silence (ms after the estimated end of speech) per class, at audio probability 0
    (``slow``) and 1 (``fast``).  The defaults are the grid point with the lowest median
    delay at <= 2 % premature on the tune half of the shared recordings
    (``benchmarks/eot_bench.py``, 2026-12-01; docs/turn-taking.md)."""

    complete_fast: float = 180.0
    complete_slow: float = 450.0
    unknown_fast: float = 240.0
    unknown_slow: float = 600.0
    incomplete_fast: float = 600.0
    """Raised by hand from the grid's 450: an order the domain calls unfinished ("Can I
    get a large" ...) must survive a 500 ms hesitation even when the voice falls like a
    finished sentence (Smart Turn p~1 on Piper; tests/test_dialogue.py).  On the replayed
    shared recordings this costs +36 ms of p95 delay and one fewer premature cut
    (31 -> 30 of 210 with the hesitation set; ``benchmarks/eot_bench.py``, 2026-12-01)."""
    incomplete_slow: float = 700.0
    finished_fast: float = 180.0
    finished_slow: float = 200.0
    """A complete request that said its tail ends after ~180-200 ms whatever the audio
    model says (the tune half's choice from 120-180 x 200-450 ms, stop 11): 3 of its 110
    pauses of >= 150 ms on the shared recordings were inside a turn."""
    open_fast: float = 180.0
    open_slow: float = 600.0
    """A complete request with its tail still open: 11 of its 42 such pauses were inside a
    turn ("a dark roast, double shot, drip coffee. | with soy milk").  The tune half
    scores 450 and 600 ms alike (its one premature turn is elsewhere); the longer is
    taken (docs/turn-taking.md)."""

    def scaled(self, k: float) -> Windows:
        """Every window times ``k`` (the evaluation's one knob for a curve)."""
        return Windows(*(k * getattr(self, f) for f in self.__slots__))


TEXT_WINDOWS = Windows(60.0, 300.0, 100.0, 450.0, 300.0, 700.0, 60.0, 300.0, 60.0, 300.0)
"""The windows when no audio model is there (only the ``slow`` ends count), tuned the
same way with the model left out.  Re-tuned with the listing-comma rule (complete 450 ->
300 ms): delay p50 447 -> 302 ms on all 186 shared turns at 3 premature (1 before);
held-out half 302 ms, 2 of 102 (``benchmarks/eot_bench.py``, 2026-12-01).  A request's
tail (``finished`` / ``open``) changes nothing here: both keep the complete windows."""


LISTING_MIN_WORDS = 4
"""Words a complete transcript ending on a comma needs to count as a list (``text_class``)."""


@dataclass(frozen=True, slots=True)
class Evidence:
    """What is known about a pause at one moment."""

    transcript: str | None = None
    """The speculative final transcript (None: not decoded yet)."""
    complete: bool | None = None
    """The domain's verdict on it (``LogicEngine.is_complete``; None: cannot tell)."""
    audio_p: float | None = None
    """Smart Turn's probability that the turn is finished (None: no verdict yet)."""
    tail: bool | None = None
    """The domain on the request's tail (``LogicEngine.tail_said``; None: cannot tell)."""


def text_class(
    transcript: str | None, complete: bool | None, listing: bool = True, tail: bool | None = None
) -> str:
    """``incomplete``, ``finished``, ``open``, ``complete`` or ``unknown``: what the words
    alone say (``tail``: the domain on the request's tail, ``LogicEngine.tail_said``: a
    complete request is ``finished`` when it said it, ``open`` when not, else ``complete``).

    ``listing``: a request the domain accepts but whose transcript ends on a comma is
    ``unknown``, not ``complete``.  Whisper writes a comma where the voice did not fall
    and a period or question mark where it did, and people list an order's parts with
    such pauses ("May I have a triple shot, drip coffee, | with a little bit of
    sweetener").  Among the shared recordings' pauses of >= 150 ms, a domain-complete
    transcript ending on a comma was a mid-turn pause 12 times in 23; without it, 14 in 152
    (``benchmarks/eot_bench.py`` evidence, 2026-12-01; docs/turn-taking.md).  The
    comma alone says nothing about an off-domain phrase, which is ``unknown`` anyway.  A
    list has parts: under ``LISTING_MIN_WORDS`` words the rule does not apply, for Whisper
    also writes "large," for a one-word answer to "What size?" (the replay is the same
    with a minimum of 1 to 4 words: every comma case there is a longer order)."""
    if transcript is None or not transcript.strip():
        return "unknown"
    if TranscriptAwarePolicy.looks_incomplete(transcript) or complete is False:
        return "incomplete"
    if (
        complete
        and listing
        and transcript.rstrip().endswith(",")
        and len(transcript.split()) >= LISTING_MIN_WORDS
    ):
        return "unknown"
    if not complete:
        return "unknown"
    return "complete" if tail is None else "finished" if tail else "open"


def required_silence(ev: Evidence, w: Windows, listing: bool = True, tail: bool = True) -> float:
    """The combined decision: silence needed given what has arrived so far
    (``listing=False``: the first version, which ignored a trailing comma; ``tail=False``:
    stop 10's, which did not split complete requests by their tail)."""
    cls = text_class(ev.transcript, ev.complete, listing, ev.tail if tail else None)
    fast = getattr(w, f"{cls}_fast")
    slow = getattr(w, f"{cls}_slow")
    if ev.audio_p is None:
        return float(slow)
    p = min(1.0, max(0.0, ev.audio_p))
    return float(slow + (fast - slow) * p)
