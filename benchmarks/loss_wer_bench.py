"""What packet loss does to recognition: Whisper WER after Opus with random loss.

Usage::

    python benchmarks/loss_wer_bench.py [--loss 5] [--seed 0] [--limit N] [--json OUT]

Every transcribed recording of ``../shared/speech`` is fed, in 20 ms frames, to our
Whisper engine (``create_stt(STTOptions())``) in four conditions:

* ``clean``: the original 16 kHz PCM;
* ``opus``: Opus 16 kHz, 24 kbit/s, no loss (the codec's own cost);
* ``fec_plc``: Opus with in-band FEC (expected loss = ``--loss``), ``--loss`` % of
  packets dropped at random (seeded, the same packets in both lossy columns); a lost
  frame whose successor arrived is rebuilt with ``decode_fec``, otherwise concealed;
* ``plc``: Opus without FEC (all bits for the main signal), same losses, PLC only.

WER is pooled (total edits / total reference words, ``halfsec.stt.wer.word_errors``).
Target: ``fec_plc`` raises WER by at most 5 points over ``clean``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from halfsec.lab.report_json import default_meta
from halfsec.stt.factory import create_stt
from halfsec.stt.options import STTOptions
from halfsec.stt.wer import word_errors
from halfsec.transport.opus import OpusDecoder, OpusEncoder, libopus_version

SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "speech"
FRAME = 320
CONDITIONS = ("clean", "opus", "fec_plc", "plc")


def through_opus(pcm: np.ndarray, lost: np.ndarray, fec: bool, loss_pct: float) -> np.ndarray:
    enc = OpusEncoder(16000, bitrate=24000, fec=fec, expected_loss_pct=int(loss_pct))
    dec = OpusDecoder(16000)
    n = pcm.size // FRAME
    packets = [enc.encode(pcm[i * FRAME : (i + 1) * FRAME]) for i in range(n)]
    out = []
    for i, p in enumerate(packets):
        if not lost[i]:
            out.append(dec.decode(p))
        elif fec and i + 1 < n and not lost[i + 1]:
            out.append(dec.decode_fec(packets[i + 1]))
        else:
            out.append(dec.conceal())
    return np.concatenate(out) if out else pcm[:0]


async def transcribe(engine: Any, pcm: np.ndarray) -> str:
    stream = engine.open_stream()
    for i in range(pcm.size // FRAME):
        stream.feed(pcm[i * FRAME : (i + 1) * FRAME])
    text = (await stream.hypothesis(final=True)).text
    stream.close()
    return str(text)


def transcribed_rows() -> list[dict[str, str]]:
    with open(SPEECH / "manifest.tsv", newline="") as f:
        return [r for r in csv.DictReader(f, delimiter="\t") if r["transcript"].strip()]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = transcribed_rows()
    if args.limit:
        rows = rows[: args.limit]
    engine = create_stt(STTOptions())
    rng = np.random.default_rng(args.seed)
    totals = {c: [0, 0] for c in CONDITIONS}
    lost_frames = frames = 0
    per_file = []
    for row in rows:
        pcm = np.asarray(sf.read(SPEECH / row["file"], dtype="int16")[0])
        n = pcm.size // FRAME
        lost = rng.random(n) * 100.0 < args.loss
        lost_frames += int(lost.sum())
        frames += n
        audio = {
            "clean": pcm[: n * FRAME],
            "opus": through_opus(pcm, np.zeros(n, bool), True, args.loss),
            "fec_plc": through_opus(pcm, lost, True, args.loss),
            "plc": through_opus(pcm, lost, False, 0),
        }
        entry: dict[str, Any] = {"file": row["file"], "ref": row["transcript"]}
        for c in CONDITIONS:
            hyp = await transcribe(engine, audio[c])
            e, w = word_errors(row["transcript"], hyp)
            totals[c][0] += e
            totals[c][1] += w
            entry[c] = hyp
        per_file.append(entry)
    wer = {c: round(100.0 * e / max(1, w), 2) for c, (e, w) in totals.items()}
    return {
        "meta": default_meta(
            "python " + " ".join(sys.argv),
            cpus=os.cpu_count(),
            libopus=libopus_version(),
            loss_pct=args.loss,
            seed=args.seed,
            files=len(rows),
            frames=frames,
            lost_frames=lost_frames,
            words=totals["clean"][1],
        ),
        "wer_pct": wer,
        "wer_delta_points": {c: round(wer[c] - wer["clean"], 2) for c in CONDITIONS},
        "target_fec_plc_delta<=5": wer["fec_plc"] - wer["clean"] <= 5.0,
        "files": per_file if args.per_file else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loss", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--per-file", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    report = asyncio.run(run(args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
