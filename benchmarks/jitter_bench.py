"""Jitter buffer benchmark: buffer delay and concealment over simulated links, plus the
Opus codec's CPU cost per frame.

Usage::

    python benchmarks/jitter_bench.py [--seconds 60] [--seeds 3] [--json OUT] [--no-codec]

Real speech (the LJSpeech and LibriSpeech/VCTK sentences of ``../shared/speech``,
concatenated and looped to ``--seconds``) is Opus-encoded at 16 kHz, 24 kbit/s, FEC on
(expected loss 5 %), sent every 20 ms over each network profile of the lab
(``halfsec.lab.netem.profile.PROFILES``, through the relays' own per-packet model: see
``halfsec.lab.netem.packet_sim``), seeded, and played out by ``JitterBuffer`` in
simulated time, with a different playout tick phase per seed.

Reported per profile, pooled over seeds:

* ``delay_p50_ms`` / ``delay_p95_ms``: time from a packet's arrival to its playout (the
  time the audio sat in the buffer; what the lab shows as ``jitter_buffer_ms``);
* ``concealed_pct``: frames the listener heard as Opus PLC *instead of* the talker's
  audio (lost or too late, and not rebuilt by FEC), over frames played;
* ``fec_pct``: frames rebuilt from the next packet's in-band FEC;
* ``synthetic_pct``: all PLC output, including frames *inserted* to grow the delay
  (stretch) while no audio was lost - reported so that nothing is hidden.

Target: at ``4g`` (30 ms one way = 60 ms RTT, 15 ms jitter standard deviation, 1 %
loss), p50 <= 40 ms with <= 1 % concealed.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np
import soundfile as sf
from _cli import bench_parser, emit
from _speech import SPEECH

from halfsec.lab.netem.packet_sim import run_simulation, simulate_arrivals
from halfsec.lab.netem.profile import PROFILES
from halfsec.lab.report.json import default_meta
from halfsec.measure.percentile import percentile_rows
from halfsec.wire.frame_decoders import OpusFrameDecoder
from halfsec.wire.jitter import JitterBuffer
from halfsec.wire.opus import OpusDecoder, OpusEncoder, libopus_version

FRAME = 320


def load_speech(seconds: float) -> np.ndarray:
    files = sorted((SPEECH / "audio").glob("ljspeech_*.flac")) + sorted(
        (SPEECH / "audio").glob("librispeech_*.flac")
    )
    pcm = np.concatenate([sf.read(f, dtype="int16")[0] for f in files])
    reps = int(np.ceil(seconds * 16000 / pcm.size))
    return np.tile(pcm, reps)[: int(seconds * 16000)]


def codec_cost(pcm: np.ndarray, frames: int = 1500) -> dict[str, float]:
    """Mean CPU microseconds per 20 ms frame for each codec call (process time, one
    thread), at 16 kHz (what the pipeline uses) and 48 kHz (browser rate)."""
    out: dict[str, float] = {}
    for rate in (16000, 48000):
        n = rate // 50
        src = pcm if rate == 16000 else np.repeat(pcm, 3)
        chunks = [src[i * n : (i + 1) * n] for i in range(min(frames, src.size // n))]
        enc = OpusEncoder(rate)
        t = time.process_time()
        packets = [enc.encode(c) for c in chunks]
        out[f"encode_us_{rate // 1000}k"] = (time.process_time() - t) / len(chunks) * 1e6
        dec = OpusDecoder(rate)
        t = time.process_time()
        for p in packets:
            dec.decode(p)
        out[f"decode_us_{rate // 1000}k"] = (time.process_time() - t) / len(packets) * 1e6
        t = time.process_time()
        for _ in range(len(packets)):
            dec.conceal()
        out[f"plc_us_{rate // 1000}k"] = (time.process_time() - t) / len(packets) * 1e6
        t = time.process_time()
        for p in packets:
            dec.decode_fec(p)
        out[f"fec_us_{rate // 1000}k"] = (time.process_time() - t) / len(packets) * 1e6
        out[f"bytes_per_packet_{rate // 1000}k"] = float(np.mean([len(p) for p in packets]))
    return {k: round(v, 1) for k, v in out.items()}


def run_profile(name: str, packets: list[bytes], seeds: int) -> dict[str, Any]:
    delays: list[float] = []
    tot: dict[str, int] = {}
    jb_us: list[float] = []
    targets: list[float] = []
    for seed in range(seeds):
        jb = JitterBuffer(OpusFrameDecoder(16000))
        events = simulate_arrivals(PROFILES[name], packets, seed=seed)
        t = time.process_time()
        run_simulation(jb, events, len(packets), tick_phase_ms=(seed * 7.3) % 20)
        jb_us.append((time.process_time() - t) / max(1, jb.stats.played) * 1e6)
        delays += jb.stats.delays_ms
        targets.append(jb.target_delay_ms)
        s = jb.stats.summary()
        for k in (
            "played",
            "concealed",
            "stretched",
            "fec_recovered",
            "dropped_for_delay",
            "late_dropped",
            "duplicates",
        ):
            tot[k] = tot.get(k, 0) + int(s[k])
    played = max(1, tot["played"])
    return {
        # Per seed the spec's seed is replaced by 0..seeds-1; the rest is the profile.
        "profile": PROFILES[name].as_dict(),
        "delay_p50_ms": round(float(percentile_rows(np.asarray(delays), 50)), 1),
        "delay_p95_ms": round(float(percentile_rows(np.asarray(delays), 95)), 1),
        "concealed_pct": round(100 * tot["concealed"] / played, 2),
        "fec_pct": round(100 * tot["fec_recovered"] / played, 2),
        "synthetic_pct": round(100 * (tot["concealed"] + tot["stretched"]) / played, 2),
        "final_target_ms": [round(t, 1) for t in targets],
        "buffer_cpu_us_per_frame": round(float(np.mean(jb_us)), 1),
        **tot,
    }


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--profiles", default=",".join(PROFILES))
    ap.add_argument("--no-codec", action="store_true")
    args = ap.parse_args(argv)

    pcm = load_speech(args.seconds)
    enc = OpusEncoder(16000, bitrate=24000, fec=True, expected_loss_pct=5)
    packets = [enc.encode(pcm[i * FRAME : (i + 1) * FRAME]) for i in range(pcm.size // FRAME)]
    results = {name: run_profile(name, packets, args.seeds) for name in args.profiles.split(",")}
    four_g = results.get("4g")
    report: dict[str, Any] = {
        "meta": default_meta(
            "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
            cpus=os.cpu_count(),
            libopus=libopus_version(),
            frames_per_seed=len(packets),
            seeds=args.seeds,
        ),
        "profiles": results,
    }
    if four_g:
        report["target_4g"] = {
            "delay_p50_ms<=40": four_g["delay_p50_ms"] <= 40.0,
            "concealed_pct<=1": four_g["concealed_pct"] <= 1.0,
        }
    if not args.no_codec:
        report["codec_cost"] = codec_cost(pcm)
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
