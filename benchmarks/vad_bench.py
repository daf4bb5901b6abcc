"""Per-frame cost of VAD and of the pipeline's own plumbing, and Silero's decay lag.

    python benchmarks/vad_bench.py [--json OUT]

* ``silero_us_per_window``: one 32 ms Silero window through onnxruntime (1 thread).
* ``detector_us_per_frame``: one 20 ms frame through the turn detector (VAD + energy).
* ``session_us_per_frame``: one 20 ms frame through ``VoiceSession.push`` while nobody
  speaks (framing, detector, preroll): the runtime's fixed cost per frame.
* ``vad_lag_ms``: how long after the reference end of speech (energy-refined) Silero's
  probability falls below the pause threshold, over the shared recordings; and how far
  the detector's estimated end of speech is from the reference.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
from _cli import bench_parser, emit, pct
from _speech import SPEECH, manifest_rows

from halfsec.audio.framing import frames_of
from halfsec.audio.io import load_audio
from halfsec.lab.report.json import cpu_info
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.turn.detector import TurnDetector
from halfsec.turn.options import TurnOptions
from halfsec.turn.vad import WINDOW, SileroVAD


def per_call_us(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--files", type=int, default=80)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(WINDOW * 2000) * 1000).astype(np.int16)

    vad = SileroVAD()
    wins = iter(np.split(noise, 2000))
    silero = per_call_us(lambda: vad.push(next(wins)), 1999)

    det = TurnDetector(TurnOptions())
    frames = iter(list(frames_of(noise)))
    detector = per_call_us(lambda: det.process(next(frames)), 3000)

    class _NoEngines:  # the session never reaches an engine while nobody speaks
        stt = logic = tts = faults = None

    from halfsec.runtime.session import VoiceSession

    sess = VoiceSession(_NoEngines())  # type: ignore[arg-type]
    silence = np.zeros(320, dtype=np.int16)

    async def plumbing() -> float:
        t0 = time.perf_counter()
        for _ in range(3000):
            await sess.push(silence)
        return (time.perf_counter() - t0) / 3000 * 1e6

    session_us = asyncio.run(plumbing())

    rows = manifest_rows()[: args.files]
    lags: list[float] = []
    est_err: list[float] = []
    opt = TurnOptions()
    for r in rows:
        pcm = load_audio(SPEECH / r["file"])
        b = voiced_bounds(pcm)
        if b is None:
            continue
        ref_end_ms = b[1] / 16.0
        d = TurnDetector(opt)
        pauses = []
        for fr in frames_of(np.concatenate([pcm, np.zeros(16000, dtype=np.int16)])):
            pauses += [e for e in d.process(fr) if e.kind == "pause"]
        after = [p for p in pauses if p.audio_ms >= ref_end_ms - 40]
        if not after:
            continue
        lags.append(after[0].audio_ms - ref_end_ms)
        est_err.append(after[0].speech_ms - ref_end_ms)

    def q(xs: list[float]) -> dict[str, float | None]:
        return {f"p{p}": pct(xs, p) for p in (5, 50, 95)}

    out = {
        "silero_us_per_window": round(silero, 1),
        "detector_us_per_frame": round(detector, 1),
        "session_us_per_frame": round(session_us, 1),
        "vad_drop_after_reference_end_ms": q(lags),
        "estimated_end_minus_reference_ms": q(est_err),
        "files": len(lags),
        "cpu": cpu_info(),
    }
    emit(out, args.json)


if __name__ == "__main__":
    main()
