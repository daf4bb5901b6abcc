"""What packet loss does to recognition: Whisper WER after Opus with random loss.

Usage::

    python benchmarks/loss_wer_bench.py [--loss 5[,10,20]] [--seed 0] [--limit N] [--json OUT]

Every transcribed recording of ``../shared/speech`` is fed, in 20 ms frames, to our
Whisper engine (``create_stt(STTOptions())``) in these conditions (L: each loss rate):

* ``clean``: the original 16 kHz PCM;
* ``opus``: Opus 16 kHz, 24 kbit/s, no loss (the codec's own cost);
* ``fec_plc@L``: Opus with in-band FEC (expected loss = ``--loss``), ``--loss`` % of
  packets dropped at random (seeded, the same packets in both lossy columns); a lost
  frame whose successor arrived is rebuilt with ``decode_fec``, otherwise concealed;
* ``plc@L``: Opus without FEC (all bits for the main signal), same losses, PLC only.

WER is pooled (total edits / total reference words, ``halfsec.measure.wer.word_errors``).
Target: ``fec_plc`` raises WER by at most 5 points over ``clean`` (at the first
``--loss``).  Several loss rates (``--loss 5,10,20``) are run on the same files.

Whisper shrugs off a few concealed 20 ms frames, so WER alone hardly separates FEC from
PLC at 5 %.  The contrast is also shown where it is: ``lost_frame_snr_db``, the SNR of
the frames that were lost, after repair, against the same frames decoded with no loss
(mean over lost frames; higher is closer to what was said).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import numpy as np
import soundfile as sf
from _cli import bench_parser, emit
from _speech import SPEECH, manifest_rows

from halfsec.lab.report.json import default_meta
from halfsec.measure.wer import word_errors
from halfsec.stt.factory import create_stt
from halfsec.stt.options import STTOptions
from halfsec.wire.opus import OpusDecoder, OpusEncoder, libopus_version

FRAME = 320


def lost_frame_snr_db(ref: np.ndarray, out: np.ndarray, lost: np.ndarray) -> list[float]:
    """Per lost frame: 10 log10(signal / error) of ``out`` against ``ref``, for frames
    whose reference is not silence (an SNR of silence means nothing)."""
    snrs = []
    for i in np.flatnonzero(lost[: min(ref.size, out.size) // FRAME]):
        r = ref[i * FRAME : (i + 1) * FRAME].astype(np.float64)
        o = out[i * FRAME : (i + 1) * FRAME].astype(np.float64)
        sig = float(np.sum(r * r))
        if sig < FRAME * 100.0**2:  # quieter than ~-50 dBFS: skip
            continue
        err = float(np.sum((r - o) ** 2)) + 1e-9
        snrs.append(10.0 * np.log10(sig / err))
    return snrs


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
    return [r for r in manifest_rows() if r["transcript"].strip()]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = transcribed_rows()
    if args.limit:
        rows = rows[: args.limit]
    losses = [float(x) for x in str(args.loss).split(",") if x.strip()]
    engine = create_stt(STTOptions())
    rng = np.random.default_rng(args.seed)
    conds = ["clean", "opus"] + [f"{c}@{x:g}" for x in losses for c in ("fec_plc", "plc")]
    totals = {c: [0, 0] for c in conds}
    snr: dict[str, list[float]] = {c: [] for c in conds[2:]}
    lost_frames = {f"{x:g}": 0 for x in losses}
    frames = 0
    per_file = []
    for row in rows:
        pcm = np.asarray(sf.read(SPEECH / row["file"], dtype="int16")[0])
        n = pcm.size // FRAME
        frames += n
        lossless = through_opus(pcm, np.zeros(n, bool), True, losses[0])
        audio = {"clean": pcm[: n * FRAME], "opus": lossless}
        ref_plc = through_opus(pcm, np.zeros(n, bool), False, 0)
        u = rng.random(n) * 100.0  # one draw per frame: a higher rate loses a superset
        for x in losses:
            lost = u < x
            lost_frames[f"{x:g}"] += int(lost.sum())
            audio[f"fec_plc@{x:g}"] = through_opus(pcm, lost, True, x)
            audio[f"plc@{x:g}"] = through_opus(pcm, lost, False, 0)
            snr[f"fec_plc@{x:g}"] += lost_frame_snr_db(lossless, audio[f"fec_plc@{x:g}"], lost)
            snr[f"plc@{x:g}"] += lost_frame_snr_db(ref_plc, audio[f"plc@{x:g}"], lost)
        entry: dict[str, Any] = {"file": row["file"], "ref": row["transcript"]}
        for c in conds:
            hyp = await transcribe(engine, audio[c])
            e, w = word_errors(row["transcript"], hyp)
            totals[c][0] += e
            totals[c][1] += w
            entry[c] = hyp
        per_file.append(entry)
    wer = {c: round(100.0 * e / max(1, w), 2) for c, (e, w) in totals.items()}
    first = f"{losses[0]:g}"
    return {
        "meta": default_meta(
            "python " + " ".join(sys.argv),
            cpus=os.cpu_count(),
            libopus=libopus_version(),
            loss_pct=losses,
            seed=args.seed,
            files=len(rows),
            frames=frames,
            lost_frames=lost_frames,
            words=totals["clean"][1],
        ),
        "wer_pct": wer,
        "wer_delta_points": {c: round(wer[c] - wer["clean"], 2) for c in conds},
        "lost_frame_snr_db": {
            c: round(float(np.mean(v)), 2) if v else None for c, v in snr.items()
        },
        "target_fec_plc_delta<=5": wer[f"fec_plc@{first}"] - wer["clean"] <= 5.0,
        "files": per_file if args.per_file else None,
    }


def main() -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--loss", default="5", help="loss %%, or several: 5,10,20")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--per-file", action="store_true")
    args = ap.parse_args()
    report = asyncio.run(run(args))
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
