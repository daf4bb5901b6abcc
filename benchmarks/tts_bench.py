"""Time to first audio of the TTS engines for typical first reply clauses.

    python benchmarks/tts_bench.py [--json OUT] [--rounds N] [--engines piper,espeak]

"First audio" is measured from the moment the clause is handed to
``TTSEngine.synthesize`` to the moment its first chunk is yielded on the event loop,
i.e. exactly the TTS share of voice-to-voice latency (the logic stage hands over the
first clause; playback starts on the first chunk).  Engines are warmed up first, as the
runtime does, so the numbers are the steady state a user meets.

Real-time factor = compute time / audio duration, over every clause: below 1 means
the engine renders faster than playback, so later clauses never starve the speaker.

Target: Piper first audio <= 80 ms p50.  On a shared 2-core machine these numbers are
indicative; run it alone for numbers to quote.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from _cli import bench_parser, emit

from halfsec.clock import ms_since, now_ns
from halfsec.lab.report.json import cpu_info
from halfsec.measure.percentile import percentile_rows
from halfsec.tts import TTSEngine, TTSOptions, create_tts

CLAUSES = (
    "Sure.",
    "Okay.",
    "Anything else?",
    "One large latte, coming up.",
    "Got it, a small cappuccino with oat milk.",
    "Sorry, I didn't catch that.",
    "Your total is four dollars fifty.",
    "Hello! How can I help you today?",
)
"""First clauses a voice agent typically says; lengths from one word to one sentence."""

PIPER_TARGET_MS = 80.0


@dataclass
class EngineResult:
    engine: str
    sample_rate: int
    load_ms: float
    warmup_ms: float
    first_audio_ms: list[float] = field(default_factory=list)
    compute_s: float = 0.0
    audio_s: float = 0.0
    per_clause_p50_ms: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        first = np.asarray(self.first_audio_ms)
        return {
            "engine": self.engine,
            "sample_rate": self.sample_rate,
            "load_ms": round(self.load_ms, 1),
            "warmup_ms": round(self.warmup_ms, 1),
            "first_audio_p50_ms": round(float(percentile_rows(first, 50)), 2),
            "first_audio_p95_ms": round(float(percentile_rows(first, 95)), 2),
            "first_audio_max_ms": round(float(first.max()), 2),
            "rtf": round(self.compute_s / self.audio_s, 4) if self.audio_s else None,
            "samples": int(first.size),
            "per_clause_p50_ms": {k: round(v, 2) for k, v in self.per_clause_p50_ms.items()},
        }


async def measure_clause(engine: TTSEngine, text: str) -> tuple[float, float, float]:
    """(first audio ms, total compute s, audio s) for one clause."""
    start = now_ns()
    first: float | None = None
    samples = 0
    async for chunk in engine.synthesize(text):
        if first is None:
            first = ms_since(start)
        samples += chunk.size
    total = ms_since(start) / 1000
    if first is None:
        raise RuntimeError(f"{engine.name} produced no audio for {text!r}")
    return first, total, samples / engine.sample_rate


async def bench_engine(name: str, rounds: int, split_clauses: bool) -> EngineResult:
    start = now_ns()
    engine = create_tts(
        TTSOptions(engine=name, piper_split_clauses=split_clauses)  # type: ignore[arg-type]
    )
    load_ms = ms_since(start)
    start = now_ns()
    engine.warmup()
    warmup_ms = ms_since(start)
    result = EngineResult(name, engine.sample_rate, load_ms, warmup_ms)
    per_clause: dict[str, list[float]] = {text: [] for text in CLAUSES}
    for _ in range(rounds):
        for text in CLAUSES:  # interleaved, so drift in machine load hits every clause
            first, total, audio = await measure_clause(engine, text)
            per_clause[text].append(first)
            result.first_audio_ms.append(first)
            result.compute_s += total
            result.audio_s += audio
    result.per_clause_p50_ms = {
        t: float(percentile_rows(np.asarray(v), 50)) for t, v in per_clause.items()
    }
    close = getattr(engine, "close", None)
    if callable(close):
        close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=10, help="passes over the clauses")
    parser.add_argument("--engines", default="piper,espeak", help="comma-separated list")
    parser.add_argument(
        "--split-clauses",
        action="store_true",
        help="Piper: render each comma-separated part separately (TTSOptions.piper_split_clauses)",
    )
    args = parser.parse_args(argv)

    results = [
        asyncio.run(bench_engine(name.strip(), args.rounds, args.split_clauses)).summary()
        for name in args.engines.split(",")
        if name.strip()
    ]
    # The tables on stderr, the JSON on stdout (and in --json OUT).
    header = f"{'engine':8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'RTF':>7} {'load ms':>8}"
    print(header, file=sys.stderr)
    for r in results:
        print(
            f"{r['engine']:8} {r['first_audio_p50_ms']:8.2f} {r['first_audio_p95_ms']:8.2f} "
            f"{r['first_audio_max_ms']:8.2f} {r['rtf']:7.3f} {r['load_ms']:8.1f}",
            file=sys.stderr,
        )
    for r in results:
        print(f"\n{r['engine']}: first audio p50 per clause", file=sys.stderr)
        for text, ms in r["per_clause_p50_ms"].items():
            print(f"  {ms:7.2f} ms  {text}", file=sys.stderr)
    verdict = True
    for r in results:
        if r["engine"] == "piper":
            verdict = r["first_audio_p50_ms"] <= PIPER_TARGET_MS
            print(
                f"\npiper first audio p50 {r['first_audio_p50_ms']:.1f} ms "
                f"(target <= {PIPER_TARGET_MS:.0f} ms): {'PASS' if verdict else 'MISS'}",
                file=sys.stderr,
            )
    report = {
        "benchmark": "tts_first_audio",
        "rounds": args.rounds,
        "piper_split_clauses": args.split_clauses,
        "clauses": list(CLAUSES),
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0],
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "cpu": cpu_info(),
        },
        "results": results,
        "piper_target_ms": PIPER_TARGET_MS,
    }
    emit(report, args.json)
    return 0 if verdict else 1


if __name__ == "__main__":
    raise SystemExit(main())
