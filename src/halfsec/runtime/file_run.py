"""Play a recording into a session like a live microphone and record what comes back.

This is the in-process client behind ``halfsec run``.  Frame ``k`` (samples
``[k*320, (k+1)*320)``) is handed to the session at ``t0 + (k+1) * 20 ms``: a real
microphone cannot deliver a frame before its last sample was spoken, so the 20 ms framing
cost is inside the measurement.  After the file, silence keeps flowing until the reply has
finished playing.  Voice-to-voice is measured on this client's timeline by the one rule
of ``halfsec.measure.v2v``: from the last voiced input sample (reference end of speech on
the clean file) to the first audible reply sample.  ``run_conversation`` plays several
recordings into one session, each after the previous reply (``halfsec run
--conversation``), and measures each the same way."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from halfsec import FRAME_SAMPLES, INTERNAL_RATE
from halfsec.audio.framing import frames_of
from halfsec.audio.timeline import PlaybackTimeline
from halfsec.clock import now_ns
from halfsec.frames import (
    EndOfTurn,
    ErrorFrame,
    FinalTranscript,
    Frame,
    IntentFrame,
    Interruption,
    PartialTranscript,
    ReplyAudio,
    ReplyDone,
    ReplyPaused,
    ReplyResumed,
    ReplyText,
    SpeechStarted,
    TimingMark,
)
from halfsec.logic.state import DialogueState
from halfsec.measure.audible import AUDIBLE_DBFS
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.measure.v2v import premature_replies, voice_to_voice
from halfsec.runtime.session import VoiceSession


@dataclass
class TurnRecord:
    turn_id: int
    speech_start_ns: int | None = None
    eot_ns: int | None = None
    eot_reason: str = ""
    transcript: str = ""
    stt_compute_ms: float = 0.0
    intent: str | None = None
    slots: dict[str, str] = field(default_factory=dict)
    reply_text: list[str] = field(default_factory=list)
    first_audio_ns: int | None = None
    first_audio_sample: int | None = None
    done: bool = False
    interrupted: bool = False
    marks: dict[str, int] = field(default_factory=dict)
    partials: int = 0


@dataclass
class FileRun:
    pcm: np.ndarray
    t0_ns: int
    timeline: PlaybackTimeline
    turns: dict[int, TurnRecord]
    voiced: tuple[int, int] | None
    errors: list[str]
    interruptions: list[Interruption]
    dialogue: DialogueState | None = None
    """The session's dialogue state once this recording's reply had played."""

    def reply_audio(self) -> np.ndarray:
        """Reply audio on the input's timeline, at least as long as the input."""
        n_in = int(self.pcm.size * self.timeline.rate / INTERNAL_RATE)
        return self.timeline.audio(min_len=n_in)

    def answer_turn(self) -> TurnRecord | None:
        """The turn that answered the user's last words: the last committed, uninterrupted one."""
        done = [t for t in self.turns.values() if t.eot_ns is not None and not t.interrupted]
        return done[-1] if done else None

    def summary(self, audible_dbfs: float | None = None) -> dict[str, Any]:
        """What ``halfsec run`` prints for one file; ``audible_dbfs`` None = ``AUDIBLE_DBFS``."""
        t = self.answer_turn()
        out: dict[str, Any] = {
            "transcript": t.transcript if t else "",
            "intent": t.intent if t else None,
            "slots": dict(t.slots) if t else {},
            "reply_text": " ".join(t.reply_text) if t else "",
            "v2v_ms": None,
            "stages": {},
            "turns": len([x for x in self.turns.values() if x.eot_ns is not None]),
            "interruptions": len(self.interruptions),
            "errors": list(self.errors),
        }
        if self.voiced is None:
            out["errors"].append("no speech detected in the input")
            return out
        rate = self.timeline.rate
        last_voiced = self.voiced[1]
        t_last_ns = self.t0_ns + int(last_voiced * 1e9 / INTERNAL_RATE)
        dbfs = AUDIBLE_DBFS if audible_dbfs is None else audible_dbfs
        out["premature_replies"] = premature_replies(
            self.timeline.played,
            rate,
            [x.first_audio_sample for x in self.turns.values() if x.first_audio_sample is not None],
            last_voiced,
            dbfs=dbfs,
        )
        v = voice_to_voice(self.timeline.played, rate, last_voiced, dbfs=dbfs)
        if v is None or t is None:
            out["errors"].append("no audible reply after the end of speech")
            return out
        out["v2v_ms"] = round(v.v2v_ms, 1)
        out["last_voiced_ms"] = round(v.ref_end_ms, 1)
        out["first_audible_ms"] = round(v.first_audible_ms, 1)
        out["stages"] = self._stages(t, t_last_ns, v.first_audible_sample)
        return out

    def _stages(self, t: TurnRecord, t_last_ns: int, audible: int) -> dict[str, float]:
        """Where the time went, on the client's timeline; the first four add up to v2v."""
        ms = lambda a, b: round((b - a) / 1e6, 1)  # noqa: E731
        st: dict[str, float] = {}
        if t.eot_ns is None or t.first_audio_ns is None or t.first_audio_sample is None:
            return st
        st["endpointing_ms"] = ms(t_last_ns, t.eot_ns)
        st["reply_ready_after_eot_ms"] = ms(t.eot_ns, t.first_audio_ns)
        # Playback may start later than arrival if the previous audio is still playing.
        arrival_sample = self.timeline.sample_at(t.first_audio_ns)
        st["playback_queue_ms"] = round(
            (t.first_audio_sample - arrival_sample) * 1000 / self.timeline.rate, 1
        )
        st["leading_silence_ms"] = round(
            (audible - t.first_audio_sample) * 1000 / self.timeline.rate, 1
        )
        m = t.marks
        st["stt_compute_ms"] = round(t.stt_compute_ms, 1)
        if "stt.end" in m:
            st["stt_after_eot_ms"] = max(0.0, ms(t.eot_ns, m["stt.end"]))
        if "logic.start" in m and "logic.first_clause" in m:
            st["logic_first_clause_ms"] = ms(m["logic.start"], m["logic.first_clause"])
        if "tts.start" in m and "tts.first_audio" in m:
            st["tts_first_audio_ms"] = ms(m["tts.start"], m["tts.first_audio"])
        if "stt.start" in m and "tts.first_audio" in m:
            st["pipeline_compute_ms"] = ms(m["stt.start"], m["tts.first_audio"])
        return st


async def run_file(
    session: VoiceSession,
    pcm: np.ndarray,
    *,
    max_tail_s: float = 10.0,
    settle_s: float = 0.3,
) -> FileRun:
    """Feed ``pcm`` at real-time pace, then silence until the reply has played out."""
    runs = await run_conversation(session, [pcm], max_tail_s=max_tail_s, settle_s=settle_s)
    return runs[0]


async def run_conversation(
    session: VoiceSession,
    pcms: list[np.ndarray],
    *,
    max_tail_s: float = 10.0,
    settle_s: float = 0.3,
) -> list[FileRun]:
    """Play ``pcms`` into one session as one conversation, each once the reply to the
    previous one has finished playing (silence flows in between, as from a live
    microphone).  One :class:`FileRun` per recording, on a timeline that starts where
    the recording starts, with the session's dialogue state after its reply."""
    if not pcms:
        return []
    lead_ns = 20_000_000
    t0 = now_ns() + lead_ns
    runs: list[FileRun] = []
    k = 0  # frames pushed so far; frame k is due at t0 + (k + 1) * 20 ms

    def begin(pcm: np.ndarray) -> FileRun:
        t_start = t0 + k * 20_000_000
        run = FileRun(
            pcm, t_start, PlaybackTimeline(session.output_rate, t_start), {}, None, [], []
        )
        runs.append(run)
        return run

    def owner(f: Frame) -> FileRun:
        """The recording a frame's turn belongs to (a late frame of an earlier turn
        still goes to its own recording)."""
        return next((r for r in reversed(runs) if f.turn_id in r.turns), runs[-1])

    def rec(f: Frame) -> TurnRecord:
        return owner(f).turns.setdefault(f.turn_id, TurnRecord(f.turn_id))

    async def collect() -> None:
        async for f in session.events():
            t_recv = now_ns()
            if isinstance(f, ReplyAudio):
                r = rec(f)
                start = owner(f).timeline.place(f.pcm, t_recv, f.turn_id)
                if r.first_audio_ns is None:
                    r.first_audio_ns, r.first_audio_sample = t_recv, start
            elif isinstance(f, SpeechStarted):
                rec(f).speech_start_ns = f.t_ns
            elif isinstance(f, EndOfTurn):
                r = rec(f)
                r.eot_ns, r.eot_reason = f.t_ns, f.reason
            elif isinstance(f, FinalTranscript):
                r = rec(f)
                r.transcript, r.stt_compute_ms = f.text, f.stt_ms
            elif isinstance(f, IntentFrame):
                r = rec(f)
                r.intent, r.slots = f.intent, dict(f.slots)
            elif isinstance(f, ReplyText):
                rec(f).reply_text.append(f.text)
            elif isinstance(f, ReplyDone):
                rec(f).done = True
            elif isinstance(f, TimingMark):
                rec(f).marks[f.name] = f.t_ns
            elif isinstance(f, PartialTranscript):
                rec(f).partials += 1
            elif isinstance(f, Interruption):
                rec(f).interrupted = True
                owner(f).interruptions.append(f)
                owner(f).timeline.stop(t_recv)
            elif isinstance(f, ReplyPaused):
                owner(f).timeline.pause(t_recv)
            elif isinstance(f, ReplyResumed):
                owner(f).timeline.resume(t_recv)
            elif isinstance(f, ErrorFrame):
                owner(f).errors.append(f"{f.code}: {f.message}")

    collector = asyncio.create_task(collect())

    async def push_frame(frame: np.ndarray) -> None:
        nonlocal k
        due = t0 + (k + 1) * 20_000_000
        delay = (due - now_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        await session.push(frame)
        k += 1

    try:
        for pcm in pcms:
            run = begin(pcm)
            for frame in frames_of(pcm):
                await push_frame(frame)
            silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
            t_end = now_ns()
            while True:
                elapsed = (now_ns() - t_end) / 1e9
                if elapsed > max_tail_s:
                    if not session.idle:
                        run.errors.append(
                            f"reply not finished {max_tail_s:.0f} s after the input ended"
                        )
                    break
                playing = now_ns() < run.timeline.playing_until_ns
                if elapsed >= settle_s and session.idle and not playing:
                    break
                await push_frame(silence)
            run.dialogue = session.dialogue
    finally:
        await session.close()
        await collector
    for run in runs:
        run.voiced = voiced_bounds(run.pcm)
    return runs
