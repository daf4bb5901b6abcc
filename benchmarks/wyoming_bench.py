"""Wyoming transcripts against ``halfsec run``'s on the same recordings, in one run.

    python benchmarks/wyoming_bench.py [--limit N] [--json OUT] [--fast]

One process, one set of engines.  For every shared recording with a verbatim transcript
(``../shared/speech/manifest.tsv``):

* ``wyoming``: the ``wyoming`` package's own client sends the whole file (16 kHz, 1024
  samples per ``audio-chunk``, as Home Assistant does, at real-time pace unless
  ``--fast``) to an in-process ``WyomingServer`` and reads the ``transcript``; the time
  from ``audio-stop`` to the ``transcript`` is what the user waits for;
* ``wyoming, no speculation``: the same through a second server with
  ``session.speculate = false`` (the final asked for only at ``audio-stop``), for the
  latency the speculative final saves;
* ``halfsec run``: the file goes through ``halfsec run``'s code path (real-time pace,
  VAD, partials, speculative finals; ``cli.run.run_one``) and the answered turn's
  transcript is kept;
* ``whole file``: one final on the whole file with no VAD, what the Wyoming server did
  before it gated the audio (for the before/after figure).

WER is pooled (``halfsec.measure.wer``).  Check: Wyoming's WER equals ``halfsec run``'s
(issue 12: "the same WER"); the files whose transcripts differ are listed with both
texts.  WER is not timing-sensitive; the ``audio-stop`` -> ``transcript`` times are, so
quote them only from a quiet machine (or the exclusive lock).  Every column but the
whole-file one plays at real-time pace, so the run takes about three times the
recordings' length (~93 s for the 36 files).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _cli import bench_parser, emit
from _speech import SPEECH, manifest_rows
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncClient

from halfsec.audio.io import load_audio
from halfsec.cli.run import run_one
from halfsec.config import load_config
from halfsec.lab.report.json import cpu_info
from halfsec.measure.percentile import percentile
from halfsec.measure.wer import word_errors
from halfsec.runtime.build import build_engines
from halfsec.runtime.engines import Engines
from halfsec.server.wyoming import WyomingServer, parse_uri

SAMPLES_PER_CHUNK = 1024
COLUMNS = ("wyoming", "halfsec run", "whole file", "wyoming, no speculation")
WYOMING = ("wyoming", "wyoming, no speculation")


async def wyoming_transcript(c: AsyncClient, pcm: np.ndarray, paced: bool) -> tuple[str, float]:
    """(transcript, ms from sending ``audio-stop`` to reading it)."""
    await c.write_event(Transcribe(language="en").event())
    await c.write_event(AudioStart(rate=16_000, width=2, channels=1).event())
    data = pcm.astype("<i2").tobytes()
    step = SAMPLES_PER_CHUNK * 2
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for k, i in enumerate(range(0, len(data), step)):
        if paced:  # a microphone: chunk k exists once its last sample was spoken
            await asyncio.sleep(max(0.0, t0 + (k + 1) * SAMPLES_PER_CHUNK / 16_000 - loop.time()))
        chunk = AudioChunk(rate=16_000, width=2, channels=1, audio=data[i : i + step])
        await c.write_event(chunk.event())
    await c.write_event(AudioStop().event())
    stopped = time.perf_counter()
    while True:
        event = await asyncio.wait_for(c.read_event(), 60)
        if event is None:
            raise SystemExit("the Wyoming server closed the connection")
        if Transcript.is_type(event.type):
            return Transcript.from_event(event).text, (time.perf_counter() - stopped) * 1000
        if event.type == "error":
            raise SystemExit(f"Wyoming error: {event.data}")


async def whole_file(engines: Engines, pcm: np.ndarray) -> str:
    stream = engines.stt.open_stream()
    stream.feed(pcm)
    text = (await stream.hypothesis(final=True)).text
    stream.close()
    return text


def transcribed(speech: Path, limit: int) -> list[dict[str, str]]:
    rows = [r for r in manifest_rows(speech / "manifest.tsv") if r["transcript"].strip()]
    return rows[:limit] if limit else rows


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = transcribed(args.speech, args.limit)
    cfg = load_config(environ={})
    engines = build_engines(cfg)
    server = WyomingServer(engines, cfg, parse_uri("tcp://127.0.0.1:0"))
    no_spec = load_config(overrides=["session.speculate=false"], environ={})
    plain = WyomingServer(engines, no_spec, parse_uri("tcp://127.0.0.1:0"))
    uri, plain_uri = await server.start(), await plain.start()
    out_dir = Path(tempfile.mkdtemp(prefix="halfsec-wyoming-bench-"))
    totals = {c: [0, 0] for c in COLUMNS}
    stop_ms: dict[str, list[float]] = {c: [] for c in WYOMING}
    files: list[dict[str, Any]] = []
    paced = not args.fast
    try:
        async with AsyncClient.from_uri(uri) as c, AsyncClient.from_uri(plain_uri) as p:
            for i, row in enumerate(rows, 1):
                path = args.speech / row["file"]
                pcm = load_audio(path)
                # Alternate which Wyoming server goes first (the other runs on warmer caches).
                order = [(WYOMING[0], c), (WYOMING[1], p)][:: 1 if i % 2 else -1]
                texts: dict[str, str] = {}
                for col, conn in order:
                    texts[col], ms = await wyoming_transcript(conn, pcm, paced)
                    stop_ms[col].append(ms)
                texts["halfsec run"] = (await run_one(path, engines, cfg, out_dir))["transcript"]
                texts["whole file"] = await whole_file(engines, pcm)
                entry: dict[str, Any] = {"file": row["file"], "ref": row["transcript"]}
                for col, text in texts.items():
                    e, n = word_errors(row["transcript"], text)
                    totals[col][0] += e
                    totals[col][1] += n
                    entry[col] = {"text": text, "errors": e}
                files.append(entry)
                print(f"{i}/{len(rows)} {path.name}", file=sys.stderr)
    finally:
        await server.stop()
        await plain.stop()
        await engines.aclose()
    wer = {c: round(100.0 * e / max(1, n), 2) for c, (e, n) in totals.items()}
    differ = [
        {"file": f["file"], "ref": f["ref"], **{c: f[c]["text"] for c in COLUMNS[:2]}}
        for f in files
        if f["wyoming"]["errors"] != f["halfsec run"]["errors"]
    ]
    return {
        "recordings": len(files),
        "words": totals["wyoming"][1],
        "wer_pct": wer,
        "errors": {c: e for c, (e, _n) in totals.items()},
        "paced": paced,
        "audio_stop_to_transcript_ms": {
            c: {"p50": percentile(v, 50), "p95": percentile(v, 95)} for c, v in stop_ms.items()
        },
        "checks": {
            "wyoming_minus_run_points": round(wer["wyoming"] - wer["halfsec run"], 2),
            "same_wer": totals["wyoming"][0] == totals["halfsec run"][0],
        },
        "scored_differently": differ,
        "files": files if args.records else None,
        "cpu": cpu_info(),
    }


def main() -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--speech", type=Path, default=SPEECH)
    ap.add_argument("--limit", type=int, default=0, help="first N transcribed recordings only")
    ap.add_argument("--records", action="store_true", help="every file's texts in the output")
    ap.add_argument("--fast", action="store_true", help="send each file at once, not in real time")
    args = ap.parse_args()
    out = asyncio.run(run(args))
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
