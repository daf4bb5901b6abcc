"""Session options: what the orchestration does beyond each stage's own options."""

from __future__ import annotations

from dataclasses import dataclass

from halfsec.options_check import ConfigKeys, OneOf, Rule, check_fields, positive

_DEADLINE = positive("ms", at_most=60_000)

_RULES: dict[str, Rule] = {
    "partial_interval_ms": positive("ms", at_most=60_000),
    "end_of_turn": OneOf(("combined", "transcript", "silence")),
    "max_turn_s": positive("s", at_most=3600),
    "stt_deadline_ms": _DEADLINE,
    "logic_deadline_ms": _DEADLINE,
    "logic_retry_ms": _DEADLINE,
    "logic_gap_ms": _DEADLINE,
    "tts_deadline_ms": _DEADLINE,
    "stt_hung_ms": _DEADLINE,
    "barge_in": OneOf(("pause", "cancel")),
    "interrupt_min_speech_ms": positive("ms", at_most=60_000),
    "backchannel_wait_ms": positive("ms", at_most=60_000),
}


@dataclass(frozen=True, slots=True)
class SessionOptions:
    speculate: bool = True
    """Start STT, logic and the first clause's TTS as soon as the user pauses, and release
    the result only at the end-of-turn decision.  The decision then finds the reply ready:
    voice-to-voice approaches the endpointing wait itself.  Off = classic sequential
    pipeline (useful as the A/B baseline)."""
    partials: bool = True
    """Emit partial transcripts while the user speaks."""
    partial_interval_ms: float = 500.0
    """Audio between two partial decodes (each costs one decode on the STT engine's
    low-priority partial lane)."""
    end_of_turn: str = "combined"
    """``combined`` (the words, the domain and the Smart Turn audio model weighed as they
    arrive, ``turn/combined.py``; docs/turn-taking.md measures why it is the default),
    ``transcript`` (longer window for unfinished phrases) or ``silence`` (fixed window)."""
    max_turn_s: float = 30.0
    """A turn longer than this is ended by force (a stuck-open VAD must not hold the
    session forever)."""
    stt_deadline_ms: float = 450.0
    """The final transcript is late this long after STT started (the pause, when
    speculating): the turn goes on with the best partial transcript, or PocketSphinx when
    there is none.  Default: the budget's endpointing + stt lines (250 + 200 ms,
    ``budgets/default.toml``): the speculative final starts at the pause, so by the
    budget's own account it is due when both have passed.  See ``runtime/deadlines.py``."""
    logic_deadline_ms: float = 300.0
    """No first reply clause this long after logic started: "One moment." is spoken and
    the reply is asked for once more.  Default: twice the budget's logic line."""
    logic_retry_ms: float = 500.0
    """How long the retry may take (while "One moment." plays) before the domain's
    templates answer.  Default: the v2v budget, what a fault may add to a turn."""
    logic_gap_ms: float = 2000.0
    """A reply that goes quiet this long between two clauses (an LLM stalling after its
    first words) ends there, with what was said.  Default: twice the fault target."""
    tts_deadline_ms: float = 300.0
    """A clause with no audio this long after its synthesis started (or a gap this long
    between its chunks) is spoken by espeak-ng.  Default: twice the budget's tts +
    network lines (the tts line alone, 50 ms, is below Piper's healthy p95 on 2 cores)."""
    stt_hung_ms: float = 1000.0
    """An abandoned final decode still running this long after it started is hung: its
    worker is replaced (CTranslate2 cannot abort a decode).  Default: twice the v2v
    budget, the most a faulted turn may take."""
    fallback_engines: bool = True
    """Load the fallback engines the deadlines switch to (PocketSphinx for STT, espeak-ng
    for TTS) and render the apology once at start-up.  Off: a late or failed stage can
    only fall back to partial transcripts and templates."""

    barge_in: str = "pause"
    """Speech during a reply: ``pause`` stops its audio at the first voiced VAD window and
    then resumes it (a backchannel or noise) or cancels it (an interruption), see
    ``runtime/barge_in.py``; ``cancel`` cancels the reply once speech has lasted
    ``turn.min_speech_ms`` (the behaviour before pausing existed)."""
    interrupt_min_speech_ms: float = 900.0
    """Speech this long during a paused reply interrupts it whatever its words (no
    backchannel lasts so long); shorter speech is judged by its transcript."""
    backchannel_wait_ms: float = 1500.0
    """After short speech during a paused reply ends, how long to wait for its transcript
    before resuming the reply anyway (LiveKit's ``false_interruption_timeout``)."""

    def __post_init__(self) -> None:
        check_fields(self, _RULES, ConfigKeys("session"))
