"""Replay one recording through the real pause detector and collect, per pause, what an
end-of-turn policy could know and when.

Per pause: when the detector saw it (``at_ms``), its estimate of where speech stopped
(``end_ms``), when speech resumed (``resume_ms``, None for the last), the speculative
final transcript the session would have asked for at that moment (Whisper on the turn's
audio up to the pause) with its compute time, the domain's verdict on it, and Smart
Turn's probability with its compute time (at the pause, again as it lasts, and before it
when the voice went quiet there: ``Pause.early``).  A policy is then a pure function of these,
so every window and threshold can be swept without decoding again
(``lab/eot/simulate.py``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from halfsec import FRAME_MS, INTERNAL_RATE
from halfsec.audio.framing import frames_of
from halfsec.lab.eot.recordings import Recording
from halfsec.logic.engine import LogicEngine
from halfsec.logic.state import DialogueState
from halfsec.measure.end_of_speech import last_voiced_sample
from halfsec.stt.engine import STTEngine
from halfsec.turn.detector import TurnDetector
from halfsec.turn.options import TurnOptions
from halfsec.turn.policy import SMART_TURN_SCHEDULE_MS
from halfsec.turn.smart_turn import SmartTurn

TAIL_MS = 2500
"""Silence appended after each recording, so the longest window swept can still fire."""
SMART_TURN_PREROLL_MS = 500
"""Audio before the detected onset that Smart Turn sees (pipecat's ``pre_speech_ms``)."""


@dataclass
class Pause:
    at_ms: float
    end_ms: float
    resume_ms: float | None
    transcript: str = ""
    stt_ms: float = 0.0
    complete: bool | None = None
    audio: list[list[float]] = field(default_factory=list)
    """Smart Turn verdicts ``[asked_at_ms, probability, compute_ms]``, one per
    ``SMART_TURN_SCHEDULE_MS`` moment the pause lasted to."""
    early: list[float] = field(default_factory=list)
    """The verdict asked before the pause, once the voice went quiet
    (``TurnDetector.quiet_end``) at this pause's estimated end, as the runtime's
    combined policy asks it: ``[asked_at_ms, probability, compute_ms]``; empty when the
    pause ended speech elsewhere (the runtime then asks at the pause)."""
    tail: bool | None = None
    """The domain on the transcript's tail (``LogicEngine.tail_said``); evidence saved
    before stop 11 has none: ``fill_tails`` computes it from the transcript."""


@dataclass
class Replayed:
    name: str
    set: str
    split: str
    true_end_ms: float
    horizon_ms: float
    pauses: list[Pause] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Replayed:
        pauses = [Pause(**p) for p in d.pop("pauses")]
        return Replayed(**d, pauses=pauses)


def detect_pauses(pcm: np.ndarray, turn: TurnOptions) -> tuple[float, list[Pause]]:
    """Onset of the first speech and every pause of the padded recording."""
    det = TurnDetector(turn)
    onset: float | None = None
    pauses: list[Pause] = []
    quiet: tuple[float, float] | None = None  # (asked at, estimated end), as the runtime
    for frame in frames_of(pcm):
        for ev in det.process(frame):
            if ev.kind == "start" and onset is None:
                onset = ev.speech_ms
            elif ev.kind == "pause":
                p = Pause(at_ms=ev.audio_ms, end_ms=ev.speech_ms, resume_ms=None)
                if quiet is not None and quiet[1] == ev.speech_ms:
                    p.early = [quiet[0]]
                pauses.append(p)
            elif ev.kind == "resume" and pauses:
                pauses[-1].resume_ms = ev.audio_ms
        end = det.quiet_end()
        if end is not None and (quiet is None or quiet[1] != end):
            quiet = (det.pos_ms, end)
    return (onset or 0.0), pauses


def ask_times(p: Pause) -> list[float]:
    """When the model is asked in this pause: at the pause, then at each scheduled
    silence, while the pause lasts."""
    times = [p.at_ms] + [p.end_ms + s for s in SMART_TURN_SCHEDULE_MS if p.end_ms + s > p.at_ms]
    return [t for t in times if p.resume_ms is None or t < p.resume_ms]


async def replay(
    rec: Recording,
    stt: STTEngine,
    logic: LogicEngine | None,
    smart: SmartTurn | None,
    turn: TurnOptions | None = None,
) -> Replayed | None:
    """Evidence for every pause of ``rec``; None when it holds no speech."""
    opt = turn or TurnOptions()
    end = last_voiced_sample(rec.pcm)
    if end is None:
        return None
    pcm = np.concatenate([rec.pcm, np.zeros(TAIL_MS * INTERNAL_RATE // 1000, dtype=np.int16)])
    onset, pauses = detect_pauses(pcm, opt)
    per_ms = INTERNAL_RATE / 1000
    for p in pauses:
        # The session feeds STT up to the frame before the one that saw the pause.
        upto = int((p.at_ms - FRAME_MS) * per_ms)
        start = max(0, int((onset - opt.preroll_ms) * per_ms))
        stream = stt.open_stream()
        stream.feed(pcm[start:upto])
        tr = await stream.hypothesis(final=True)
        stream.close()
        p.transcript, p.stt_ms = tr.text, tr.compute_ms
        if logic is not None and tr.text.strip():
            p.complete = logic.is_complete(tr.text, DialogueState())
            p.tail = logic.tail_said(tr.text, DialogueState())
        if smart is not None:
            s = max(0, int((onset - SMART_TURN_PREROLL_MS) * per_ms))
            for ask in ask_times(p):
                prob = smart.probability(pcm[s : int(ask * per_ms)])
                p.audio.append([ask, prob, smart.last_ms])
            if p.early:
                prob = smart.probability(pcm[s : int(p.early[0] * per_ms)])
                p.early += [prob, smart.last_ms]
    return Replayed(
        rec.name,
        rec.set,
        rec.split,
        true_end_ms=end / per_ms,
        horizon_ms=pcm.size / per_ms,
        pauses=pauses,
    )


def fill_tails(recs: list[Replayed], logic: LogicEngine) -> None:
    """The domain's tail verdict for evidence collected before it was recorded (the
    transcripts are there; the verdict is a pure function of them)."""
    for r in recs:
        for p in r.pauses:
            if p.tail is None and p.transcript.strip():
                p.tail = logic.tail_said(p.transcript, DialogueState())
