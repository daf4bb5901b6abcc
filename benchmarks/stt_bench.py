"""STT benchmark: our streaming engines against batch faster-whisper on real speech.

Usage::

    python benchmarks/stt_bench.py [--limit N] [--json OUT] [--no-trim] [--no-sphinx]
        [--no-pipeline] [--beam N] [--set stt.beam_size=5]

For every recording in ``../shared/speech/manifest.tsv`` that has a transcript:

* our ``WhisperEngine``: the audio is fed to a stream in 20 ms frames, as the runtime
  does, then one final is requested; its ``compute_ms`` is the final's decode time;
* with ``--beam N`` (N > 1), the same engine decoding with beam N (what beam search
  would cost the final, and buy);
* the streaming pipeline (unless ``--no-pipeline``): the whole file through ``halfsec
  run``'s code path (``cli.run.run_one``: real-time pace, the session's VAD deciding
  what the STT stream gets, partials, speculative finals, the domain prompt); its text
  is the answered turn's transcript, its time the turn's final ``stt_compute_ms``;
  ``--set KEY=VALUE`` (repeatable) changes its configuration (``stt.beam_size=5``);
  This is "the streaming transcript" of issue 11 (the others are single finals);
* batch faster-whisper: the same packaged tiny.en, int8, one thread, beam 5 and the
  standard 30 s window (``WhisperModel.transcribe`` defaults) - the accuracy reference;
* PocketSphinx (unless ``--no-sphinx``): same streaming protocol as ours.

WER is pooled over the corpus (total edits / total reference words, after
``halfsec.measure.wer.normalize_text``).  Latency percentiles cover utterances of 6 s or
less, the length of a voice command.  By default each file is trimmed to its speech
with a simple energy threshold (the runtime's VAD feeds speech, not the silence around
it); ``--no-trim`` feeds whole files.  The pipeline always gets the whole file (its VAD
trims) and plays it at real-time pace, so it adds the recordings' length (~95 s for the
36) to the run.  Check: the pipeline's WER within 1 point of the batch reference (issue
11), and the final's p50 within 80 ms.  Timings depend on what else runs on the machine:
``cpu_ms`` (process CPU time during the final) is printed next to wall time because it
is less sensitive to other processes competing for the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from _cli import bench_parser, emit, pct
from _speech import SPEECH as DEFAULT_SPEECH
from _speech import manifest_rows

from halfsec.cli.run import run_one
from halfsec.config import HalfsecConfig, load_config
from halfsec.lab.report.json import cpu_info
from halfsec.measure.percentile import percentile
from halfsec.measure.wer import word_errors
from halfsec.runtime.build import build_engines
from halfsec.runtime.engines import Engines
from halfsec.stt.engine import STTEngine
from halfsec.stt.options import STTOptions
from halfsec.stt.pocketsphinx import PocketSphinxEngine
from halfsec.stt.whisper import WhisperEngine
from halfsec.stt.whisper_decoder import packaged_model_path

FRAME = 320
SHORT_S = 6.0
OURS = "halfsec whisper (short window, greedy)"
PIPELINE = "halfsec pipeline (halfsec run: VAD, partials, prompt)"
BATCH = "faster-whisper batch (30 s, beam 5)"
PIPELINE_GAP_POINTS = 1.0


def trim_to_speech(pcm: np.ndarray, margin_s: float = 0.2) -> np.ndarray:
    """Cut leading/trailing silence: 20 ms frames within 35 dB of the loudest count as
    speech (and never below -50 dBFS); keep ``margin_s`` around them."""
    n = pcm.size // FRAME
    if n == 0:
        return pcm
    frames = pcm[: n * FRAME].astype(np.float64).reshape(n, FRAME) / 32768.0
    db = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    loud = np.flatnonzero(db > max(-50.0, float(db.max()) - 35.0))
    if loud.size == 0:
        return pcm
    margin = int(margin_s * 16_000)
    start = max(0, int(loud[0]) * FRAME - margin)
    end = min(pcm.size, (int(loud[-1]) + 1) * FRAME + margin)
    return pcm[start:end]


@dataclass
class Column:
    name: str
    errors: int = 0
    words: int = 0
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    short_wall_ms: list[float] = field(default_factory=list)
    short_cpu_ms: list[float] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)

    def add(self, stem: str, ref: str, text: str, wall: float, cpu: float, dur: float) -> None:
        e, n = word_errors(ref, text)
        self.errors += e
        self.words += n
        self.texts[stem] = text
        self.wall_ms.append(wall)
        self.cpu_ms.append(cpu)
        if dur <= SHORT_S:
            self.short_wall_ms.append(wall)
            self.short_cpu_ms.append(cpu)

    def summary(self) -> dict[str, Any]:
        return {
            "wer": round(100.0 * self.errors / max(1, self.words), 2),
            "files": len(self.wall_ms),
            "short_files": len(self.short_wall_ms),
            "final_ms_p50_short": pct(self.short_wall_ms, 50),
            "final_ms_p95_short": pct(self.short_wall_ms, 95),
            "cpu_ms_p50_short": pct(self.short_cpu_ms, 50),
            "cpu_ms_p95_short": pct(self.short_cpu_ms, 95),
            "final_ms_p50_all": pct(self.wall_ms, 50),
            "final_ms_p95_all": pct(self.wall_ms, 95),
        }


async def stream_final(engine: STTEngine, pcm: np.ndarray) -> tuple[str, float, float]:
    """Feed 20 ms frames, then time one final: (text, compute_ms, cpu_ms)."""
    stream = engine.open_stream()
    for i in range(0, pcm.size, FRAME):
        stream.feed(pcm[i : i + FRAME])
    if isinstance(engine, PocketSphinxEngine):
        await stream.hypothesis(final=False)  # let streaming catch up, as in real time
    cpu0 = time.process_time()
    result = await stream.hypothesis(final=True)
    cpu = (time.process_time() - cpu0) * 1000.0
    stream.close()
    return result.text, result.compute_ms, cpu


async def pipeline_final(
    engines: Engines, cfg: HalfsecConfig, path: Path, out_dir: Path
) -> tuple[str, float, float]:
    """``halfsec run`` on the whole file: (answered turn's transcript, its final's compute
    ms, process CPU ms over the whole run)."""
    c0 = time.process_time()
    result = await run_one(path, engines, cfg, out_dir)
    cpu = (time.process_time() - c0) * 1000.0
    return result.get("transcript", ""), result.get("stages", {}).get("stt_compute_ms", 0.0), cpu


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--speech", type=Path, default=DEFAULT_SPEECH)
    ap.add_argument("--limit", type=int, default=0, help="first N transcribed files only")
    ap.add_argument("--no-trim", action="store_true", help="feed whole files")
    ap.add_argument("--no-sphinx", action="store_true", help="skip PocketSphinx")
    ap.add_argument(
        "--no-pipeline", action="store_true", help="skip the real-time halfsec run column"
    )
    ap.add_argument("--beam", type=int, default=1, help="also our engine at this beam size")
    ap.add_argument(
        "--set", dest="overrides", action="append", default=[], help="pipeline config KEY=VALUE"
    )
    args = ap.parse_args(argv)
    return asyncio.run(run(args))


async def run(args: argparse.Namespace) -> int:
    rows = [r for r in manifest_rows(args.speech / "manifest.tsv") if r["transcript"].strip()]
    if args.limit:
        rows = rows[: args.limit]

    from faster_whisper import WhisperModel

    ours = WhisperEngine(STTOptions())
    ours.warmup()
    batch = WhisperModel(
        str(packaged_model_path()), device="cpu", compute_type="int8", cpu_threads=1
    )
    batch.transcribe(np.zeros(16_000, np.float32), beam_size=5, language="en")
    engines: list[tuple[Column, STTEngine | Engines | None]] = [(Column(OURS), ours)]
    if args.beam > 1:
        beam = WhisperEngine(replace(STTOptions(), beam_size=args.beam))
        beam.warmup()
        engines.append((Column(f"halfsec whisper (short window, beam {args.beam})"), beam))
    cfg = load_config(overrides=args.overrides, environ={})
    if not args.no_pipeline:
        pipeline = build_engines(cfg)
        engines.append((Column(PIPELINE), pipeline))
    engines.append((Column(BATCH), None))
    if not args.no_sphinx:
        sphinx = PocketSphinxEngine(STTOptions(engine="pocketsphinx"))
        sphinx.warmup()
        engines.append((Column("pocketsphinx (streaming)"), sphinx))
    out_dir = Path(tempfile.mkdtemp(prefix="halfsec-stt-bench-"))

    per_file: list[dict[str, Any]] = []
    for row in rows:
        stem = Path(row["file"]).stem
        whole, rate = sf.read(args.speech / row["file"], dtype="int16")
        if rate != 16_000:
            raise SystemExit(f"{row['file']}: expected 16 kHz, got {rate}")
        pcm = np.asarray(whole) if args.no_trim else trim_to_speech(np.asarray(whole))
        dur = pcm.size / 16_000
        ref = row["transcript"]
        entry: dict[str, Any] = {"file": row["file"], "seconds": round(dur, 3), "ref": ref}
        for column, engine in engines:
            if engine is None:
                audio = pcm.astype(np.float32) / 32768.0
                t0, c0 = time.perf_counter(), time.process_time()
                segments, _ = batch.transcribe(audio, beam_size=5, language="en")
                text = " ".join(s.text.strip() for s in segments)
                wall = (time.perf_counter() - t0) * 1000.0
                cpu = (time.process_time() - c0) * 1000.0
            elif isinstance(engine, Engines):
                text, wall, cpu = await pipeline_final(
                    engine, cfg, args.speech / row["file"], out_dir
                )
            else:
                text, wall, cpu = await stream_final(engine, pcm)
            column.add(stem, ref, text, wall, cpu, dur)
            entry[column.name] = {"text": text, "ms": round(wall, 1)}
        per_file.append(entry)
        print(".", end="", flush=True, file=sys.stderr)
    print(file=sys.stderr)

    summary = {c.name: c.summary() for c, _ in engines}
    header = f"{'engine':52} {'WER%':>6} {'p50 ms':>7} {'p95 ms':>7} {'cpu p50':>8} {'all p50':>8}"
    err = sys.stderr  # the table and the verdict on stderr, the JSON on stdout
    print(
        f"{len(rows)} files ({'whole' if args.no_trim else 'trimmed to speech'}); "
        f"latency columns: finals of utterances <= {SHORT_S:g} s (pipeline: the turn's "
        "final, 0 when a partial was promoted; cpu: the whole real-time run)",
        file=err,
    )
    print(header, file=err)
    print("-" * len(header), file=err)
    for name, s in summary.items():
        print(
            f"{name:52} {s['wer']:6.2f} {s['final_ms_p50_short'] or 0:7.0f} "
            f"{s['final_ms_p95_short'] or 0:7.0f} {s['cpu_ms_p50_short'] or 0:8.0f} "
            f"{s['final_ms_p50_all'] or 0:8.0f}",
            file=err,
        )
    gap = summary[OURS]["wer"] - summary[BATCH]["wer"]
    p50 = summary[OURS]["final_ms_p50_short"] or 0.0
    verdict: dict[str, Any] = {
        "wer_gap_points": round(gap, 2),
        "wer_within_3_points": gap <= 3.0,
        "final_p50_le_80ms": p50 <= 80.0,
    }
    if PIPELINE in summary:
        pipe_gap = summary[PIPELINE]["wer"] - summary[BATCH]["wer"]
        verdict["pipeline_wer_gap_points"] = round(pipe_gap, 2)
        verdict["pipeline_within_1_point"] = pipe_gap <= PIPELINE_GAP_POINTS
        verdict["pipeline_differs_from_batch"] = [
            {
                "file": e["file"],
                "ref": e["ref"],
                "pipeline": e[PIPELINE]["text"],
                "batch": e[BATCH]["text"],
            }
            for e in per_file
            if word_errors(e["ref"], e[PIPELINE]["text"]) != word_errors(e["ref"], e[BATCH]["text"])
        ]
    print(json.dumps(verdict, indent=1), file=err)
    result = {
        "command": "python benchmarks/stt_bench.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "cpu": cpu_info(),
        "summary": summary,
        "targets": verdict,
        "trimmed": not args.no_trim,
        "median_seconds": percentile([e["seconds"] for e in per_file], 50) if per_file else 0,
        "files": per_file,
    }
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
