"""End-of-turn policies replayed over collected evidence, and their curves.

A policy here is ``need(evidence) -> ms of silence``, asked on every 20 ms frame of a
pause exactly as ``VoiceSession`` asks it, with each piece of evidence arriving when it
was computed (transcript ``stt_ms`` after the pause was seen, Smart Turn ``audio_ms``
after).  Policies that read the transcript also follow the session's rule of waiting up
to ``max_wait_for_transcript_ms`` past their window for it.

Per recording two outcomes: **premature** (the policy fires in a pause after which the
user still speaks: a reply would start mid-request) and **delay** (when it fires after
the real end of speech, ``measure.end_of_speech``, minus that end; a policy that never
fires is charged the rest of the recording).  Premature rate is per recording (turn)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from halfsec import FRAME_MS
from halfsec.lab.eot.replay import Pause, Replayed
from halfsec.measure.percentile import percentile
from halfsec.turn.end_of_turn import TranscriptAwarePolicy
from halfsec.turn.options import TurnOptions
from halfsec.turn.policy import Evidence, Windows, reask, required_silence

Need = Callable[[Evidence], float]
PACE_MIN_PAUSE_MS = 100.0
"""An earlier pause shorter than this is a VAD flicker, not the user's pace."""


@dataclass(frozen=True)
class Policy:
    name: str
    knob: float
    need: Need
    reads_transcript: bool
    first_verdict_only: bool = False
    """Smart Turn asked once per pause (pipecat), not again as the pause goes on."""
    pace: Callable[[float, tuple[float, ...]], float] | None = None
    """Adapts ``need``'s answer to the user's pace: it gets the lengths (ms) of the
    pauses the user already made in this turn."""
    live_asks: bool = False
    """Smart Turn asked as the runtime's combined policy asks it (``verdicts``)."""


@dataclass(frozen=True)
class Point:
    """One policy setting over a set of recordings."""

    policy: str
    knob: float
    turns: int
    premature: int
    delay_p50_ms: float | None
    delay_p95_ms: float | None

    @property
    def premature_rate(self) -> float:
        return self.premature / self.turns if self.turns else 0.0


def verdicts(p: Pause, live: bool) -> list[list[float]]:
    """The model's verdicts in a pause as a policy gets them.  ``live``: as the runtime's
    combined policy asks (``turn/combined.py``): the first before the pause when the voice
    went quiet at its end (``Pause.early``), and again at a scheduled silence only while
    the latest verdict heard by then is unsure (``turn.policy.reask``)."""
    if not live:
        return p.audio
    out = [p.early] if p.early else p.audio[:1]
    for asked, prob, ms in p.audio[1:]:
        heard = [v[1] for v in out if v[0] + v[2] <= asked]
        if reask(heard[-1] if heard else None):
            out.append([asked, prob, ms])
    return out


def evidence_at(p: Pause, t: float, first_only: bool = False, live: bool = False) -> Evidence:
    ready = t >= p.at_ms + p.stt_ms
    asked = p.audio[:1] if first_only else verdicts(p, live)
    heard = [prob for at, prob, ms in asked if at + ms <= t]
    return Evidence(
        transcript=p.transcript if ready else None,
        complete=p.complete if ready else None,
        audio_p=heard[-1] if heard else None,
        tail=p.tail if ready else None,
    )


def fires_at(
    p: Pause, policy: Policy, until: float, max_wait_ms: float, before: tuple[float, ...] = ()
) -> float | None:
    """The first frame at which ``policy`` ends the turn in pause ``p`` before ``until``
    (``before``: the turn's earlier pauses, ms)."""
    t = p.at_ms
    while t < until:
        ev = evidence_at(p, t, policy.first_verdict_only, policy.live_asks)
        need = policy.need(ev)
        if policy.pace is not None:
            need = policy.pace(need, before)
        silence = t - p.end_ms
        if silence >= need and not (
            policy.reads_transcript and ev.transcript is None and silence < need + max_wait_ms
        ):
            return t
        t += FRAME_MS
    return None


def outcome(r: Replayed, policy: Policy, max_wait_ms: float) -> tuple[bool, float]:
    """(premature, delay after the real end of speech in ms) of one recording."""
    premature = False
    before: tuple[float, ...] = ()
    for p in r.pauses:
        until = p.resume_ms if p.resume_ms is not None else r.horizon_ms
        t = fires_at(p, policy, until, max_wait_ms, before)
        if p.resume_ms is not None:
            before += (p.resume_ms - p.end_ms,)
        if p.resume_ms is not None and p.resume_ms < r.true_end_ms:
            premature = premature or t is not None
            continue
        if t is not None:
            return premature, t - r.true_end_ms
    return premature, r.horizon_ms - r.true_end_ms


def evaluate(recs: Sequence[Replayed], policy: Policy, max_wait_ms: float = 400.0) -> Point:
    delays: list[float] = []
    premature = 0
    for r in recs:
        pre, d = outcome(r, policy, max_wait_ms)
        premature += pre
        delays.append(d)
    return Point(
        policy.name,
        policy.knob,
        len(recs),
        premature,
        percentile(delays, 50),
        percentile(delays, 95),
    )


def fixed(w: float) -> Policy:
    return Policy("vad_fixed", w, lambda ev: w, False)


def transcript_aware(k: float, opt: TurnOptions | None = None) -> Policy:
    """The current default, ``TranscriptAwarePolicy``, with every window times ``k``."""
    o = opt or TurnOptions()

    def need(ev: Evidence) -> float:
        if ev.transcript is None or not ev.transcript.strip():
            return k * o.silence_ms
        if TranscriptAwarePolicy.looks_incomplete(ev.transcript) or ev.complete is False:
            return k * o.incomplete_silence_ms
        if ev.complete is None and ev.transcript.rstrip().endswith(","):
            return k * o.uncertain_silence_ms
        return k * o.silence_ms

    return Policy("transcript", k, need, True)


def smart_turn(threshold: float, base_ms: float = 200.0, stop_ms: float = 3000.0) -> Policy:
    """Pipecat's use of Smart Turn: after ``base_ms`` of silence the model decides; a
    turn it calls unfinished ends only after ``stop_ms`` (pipecat's ``stop_secs``)."""

    def need(ev: Evidence) -> float:
        return base_ms if ev.audio_p is not None and ev.audio_p >= threshold else stop_ms

    return Policy(f"smart_turn@{base_ms:.0f}", threshold, need, False, first_verdict_only=True)


def combined(
    k: float,
    w: Windows,
    audio: bool = True,
    listing: bool = True,
    live: bool = True,
    tail: bool = True,
) -> Policy:
    """``turn.policy.required_silence`` with every window times ``k``; ``audio=False``
    ignores the audio model (transcript and domain only); ``listing=False`` is the first
    version, which took a domain-complete transcript ending on a comma as complete;
    ``live=False`` asks the model at the pause and at every scheduled silence (the
    runtime until stop 10) instead of as the runtime asks now (``verdicts``);
    ``tail=False`` does not split complete requests by their tail (stop 10's default)."""
    ws = w.scaled(k)

    def need(ev: Evidence) -> float:
        if not audio:
            ev = replace(ev, audio_p=None)
        return required_silence(ev, ws, listing, tail)

    name = "combined" if audio else "combined_text"
    if not listing:
        name += "_v1"
    elif audio and not live:
        name += "_asked_at_pause"
    elif audio and not tail:
        name += "_no_tail"
    return Policy(name, k, need, True, live_asks=audio and listing and live)


def paced(k: float, w: Windows, mode: str, amount: float) -> Policy:
    """``combined`` adapted to the user's pace in this turn, once they have already
    paused >= ``PACE_MIN_PAUSE_MS`` in it: ``mult`` makes every window ``1 + amount``
    times longer; ``echo`` waits at least the longest such pause plus ``amount`` ms (at
    most the unknown class's slow end)."""
    base = combined(k, w)
    cap = w.scaled(k).unknown_slow

    def adapt(need: float, before: tuple[float, ...]) -> float:
        real = [d for d in before if d >= PACE_MIN_PAUSE_MS]
        if not real:
            return need
        if mode == "mult":
            return need * (1.0 + amount)
        return max(need, min(max(real) + amount, cap))

    return Policy(f"pace_{mode}{amount:g}", k, base.need, True, pace=adapt)


def at_premature(points: Sequence[Point], rate: float) -> Point | None:
    """The lowest-delay setting whose premature rate is at most ``rate``."""
    ok = [p for p in points if p.premature_rate <= rate + 1e-12 and p.delay_p50_ms is not None]
    return min(ok, key=lambda p: (p.delay_p50_ms or 0.0, p.delay_p95_ms or 0.0), default=None)
