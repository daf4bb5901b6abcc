"""Voice-to-voice over every transport, in one run, on the same real recordings.

    python benchmarks/transport_bench.py --limit 10 --reps 2 [--net 4g] [--json OUT]

Modes (interleaved: each recording goes through every mode back to back, one session
each, so the modes' runs can be paired):

* ``inproc``: ``halfsec.runtime.file_run`` -- the pipeline with no transport at all;
* ``ws_pcm`` / ``ws_opus``: ``halfsec serve`` (a subprocess, like ``halfsec bench``) over
  the WebSocket, PCM16 or Opus both ways (Opus replies go through the client's jitter
  buffer);
* ``webrtc``: aiortc client <-> server on loopback;
* ``webrtc_<net>`` / ``ws_<net>``: the same through the network lab (two UDP relays for
  WebRTC, the TCP relay for the WebSocket).

Reported per mode: v2v p50/p95 (same reference end of speech and first-audible rule as
``halfsec bench``), the compute p50 (end-of-turn decision -> TTS first audio), the p50
of the breakdown's ``endpointing``, ``server_send`` (TTS first audio -> first packet
sent) and ``network_buffer`` (sent -> first audible at the client) stages, the latter
split into network and the client's jitter buffer, the server's jitter-buffer delay
p50, and the concealed share of frames.

What a transport adds (``paired_vs_inproc``): the median of per-run differences against
the in-process run of the same recording, raw and *less each run's own compute*.  The
transport's cost (codec delay, jitter buffers, packet pacing, network) lies outside the
compute, while on a slow 2-core machine the compute alone varies by hundreds of ms from
run to run and swamps a 30 ms effect; both figures are reported.  ``--eot silence``
(default) fixes the end-of-turn rule to the silence window for every mode, so the
moment of the decision depends on the audio frames only.

Targets checked: WebRTC loopback within 30 ms of in-process (paired, less compute);
WebRTC under ``--net`` p95 within 150 ms of loopback p95.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _cli import bench_parser, emit, pct
from _speech import SPEECH, shortest_orders

from halfsec.config import load_config
from halfsec.lab.bench.corpus import CorpusItem
from halfsec.lab.bench.records import make_record
from halfsec.lab.bench.server_process import ServerProcess
from halfsec.lab.clients.client_run import ClientRun
from halfsec.lab.clients.options import ClientOptions
from halfsec.lab.clients.webrtc import run_recording_webrtc
from halfsec.lab.clients.websocket import run_recording
from halfsec.lab.netem.path import impaired_url
from halfsec.lab.report.json import default_meta
from halfsec.measure.percentile import percentile, percentile_rows
from halfsec.runtime.build import build_engines
from halfsec.runtime.file_run import run_file
from halfsec.runtime.session import VoiceSession


def recordings(limit: int) -> list[tuple[Path, np.ndarray, dict[str, str]]]:
    return [(SPEECH / r["file"], pcm, r) for r, pcm in shortest_orders(limit, after_s=1.0)]


COMPUTE = ("stt_ms", "logic_ms", "tts_ms")
"""The server's compute after the end-of-turn decision (turn.end -> TTS first audio)."""


def compute_ms(rec: dict[str, Any]) -> float | None:
    st = rec.get("stages") or {}
    if "reply_ready_after_eot_ms" in st:  # in-process record
        return float(st["reply_ready_after_eot_ms"])
    if all(k in st for k in COMPUTE):
        return float(sum(st[k] for k in COMPUTE))
    return None


def summarize(mode: str, recs: list[dict[str, Any]], runs: list[ClientRun]) -> dict[str, Any]:
    ok = [r for r in recs if r.get("ok") and r.get("v2v_ms") is not None]
    v = [r["v2v_ms"] for r in ok]
    comp = [c for c in (compute_ms(r) for r in ok) if c is not None]
    cjb = [r["network_split"]["jitter_buffer_ms"] for r in recs if r.get("network_split")]
    sjb = [
        r["server_jitter_buffer_ms"] for r in recs if r.get("server_jitter_buffer_ms") is not None
    ]
    scon = [r["server_concealed_pct"] for r in recs if r.get("server_concealed_pct") is not None]
    stages = {
        k: percentile([r["stages"][k] for r in ok if k in (r.get("stages") or {})], 50)
        for k in ("endpointing_ms", "server_send_ms", "network_buffer_ms")
    }
    net = [r["network_split"]["network_ms"] for r in recs if r.get("network_split")]
    played = sum(run.jitter.stats.played for run in runs if run.jitter is not None)
    concealed = sum(run.jitter.stats.concealed for run in runs if run.jitter is not None)
    return {
        "mode": mode,
        "n": len(recs),
        "ok": len(v),
        "errors": [r.get("error") for r in recs if not r.get("ok")],
        "v2v_p50_ms": percentile(v, 50),
        "v2v_p95_ms": percentile(v, 95),
        "compute_p50_ms": percentile(comp, 50),
        **{f"{k[:-3]}_p50_ms": x for k, x in stages.items()},
        "network_p50_ms": percentile(net, 50),
        "client_jitter_buffer_p50_ms": percentile(cjb, 50),
        "server_jitter_buffer_p50_ms": percentile(sjb, 50),
        "server_concealed_pct_mean": float(np.mean(scon)) if scon else None,
        "client_concealed_pct": 100.0 * concealed / played if played else None,
    }


def paired(
    base: list[dict[str, Any]], other: list[dict[str, Any]], seed: int = 0
) -> dict[str, Any]:
    """Median of per-run differences ``other - base`` (same recording, same repetition,
    run back to back), raw and less each run's own compute, with bootstrap 95 % CIs."""
    raw, less = [], []
    for b, o in zip(base, other, strict=True):
        if b.get("v2v_ms") is None or o.get("v2v_ms") is None:
            continue
        raw.append(o["v2v_ms"] - b["v2v_ms"])
        cb, co = compute_ms(b), compute_ms(o)
        if cb is not None and co is not None:
            less.append((o["v2v_ms"] - co) - (b["v2v_ms"] - cb))
    rng = np.random.default_rng(seed)

    def med_ci(xs: list[float]) -> dict[str, Any]:
        if not xs:
            return {"median_ms": None, "ci95_ms": None, "n": 0}
        a = np.asarray(xs)
        boots = percentile_rows(rng.choice(a, (2000, a.size)), 50, axis=1)
        lo, hi = percentile_rows(boots, [2.5, 97.5])
        return {
            "median_ms": pct(xs, 50),
            "ci95_ms": [round(float(lo), 1), round(float(hi), 1)],
            "n": int(a.size),
        }

    return {"raw": med_ci(raw), "less_compute": med_ci(less)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    recs_in = recordings(args.limit)
    overrides = ["session.end_of_turn=silence"] if args.eot == "silence" else []
    cfg = load_config(overrides=overrides)
    engines = build_engines(cfg)
    modes: list[tuple[str, str, str | None]] = [
        ("inproc", "inproc", None),
        ("ws_pcm", "ws_pcm", None),
        ("ws_opus", "ws_opus", None),
        ("webrtc", "webrtc", None),
        (f"webrtc_{args.net}", "webrtc", args.net),
        (f"ws_{args.net}", "ws_pcm", args.net),
    ]
    if args.modes:
        wanted = set(args.modes.split(",")) | {"inproc"}
        modes = [m for m in modes if m[0] in wanted or m[1] in wanted]
    recs: dict[str, list[dict[str, Any]]] = {m[0]: [] for m in modes}
    runs: dict[str, list[ClientRun]] = {m[0]: [] for m in modes}
    async with ServerProcess(overrides=overrides) as proc:
        base = f"http://127.0.0.1:{proc.port}"
        # Interleaved: each recording goes through every mode back to back, so slow
        # drift of a shared machine hits all modes alike and differences can be paired.
        for rep in range(args.reps):
            for path, pcm, row in recs_in:
                item = CorpusItem(path=path, transcript=row["transcript"], intent=row["intent"])
                for name, kind, net in modes:
                    if kind == "inproc":
                        session = VoiceSession(
                            engines, cfg.turn, cfg.session, output_rate=cfg.audio.output_rate
                        )
                        fr = await run_file(session, pcm)
                        await session.close()
                        s = fr.summary()
                        recs[name].append({"ok": s["v2v_ms"] is not None, **s})
                        continue
                    if kind == "webrtc":
                        run = await run_recording_webrtc(base, pcm, ClientOptions(), net)
                    else:
                        codec = "opus" if kind == "ws_opus" else "pcm16"
                        async with impaired_url(proc.url, net) as (url, _relay):
                            run = await run_recording(url, pcm, ClientOptions(codec=codec))
                    runs[name].append(run)
                    recs[name].append(make_record(item, pcm, run))
            print(f"repetition {rep + 1}/{args.reps} done", file=sys.stderr)
    results = {name: summarize(name, recs[name], runs[name]) for name, _, _ in modes}
    vs_inproc = {
        name: paired(recs["inproc"], recs[name]) for name, _, _ in modes if name != "inproc"
    }
    rtc = results.get("webrtc", {})
    rtc_net = results.get(f"webrtc_{args.net}", {})
    rtc_pair = vs_inproc.get("webrtc", {})
    rtc_less = (rtc_pair.get("less_compute") or {}).get("median_ms")
    checks = {
        "webrtc_minus_inproc_raw_ms": (rtc_pair.get("raw") or {}).get("median_ms"),
        "webrtc_minus_inproc_less_compute_ms": rtc_less,
        "webrtc_target_le_30ms": _le(rtc_less, 30),
        f"webrtc_{args.net}_p95_minus_loopback_ms": _diff(
            rtc_net.get("v2v_p95_ms"), rtc.get("v2v_p95_ms")
        ),
        "net_p95_target_le_150ms": _le(
            _diff(rtc_net.get("v2v_p95_ms"), rtc.get("v2v_p95_ms")), 150
        ),
    }
    meta = default_meta("python " + " ".join(sys.argv))
    return {
        "meta": meta,
        "results": results,
        "paired_vs_inproc": vs_inproc,
        "checks": checks,
        "records": recs if args.records else None,
    }


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 1)


def _le(x: float | None, limit: float) -> bool | None:
    return None if x is None else x <= limit


if __name__ == "__main__":
    ap = bench_parser(__doc__)
    ap.add_argument("--limit", type=int, default=6)
    ap.add_argument("--net", default="4g")
    ap.add_argument(
        "--modes", default="", help="comma-separated subset, e.g. webrtc,ws_opus (default: all)"
    )
    ap.add_argument("--reps", type=int, default=1, help="passes over the recordings")
    ap.add_argument(
        "--eot",
        choices=("silence", "default"),
        default="silence",
        help="end-of-turn policy for every mode: a fixed silence window (default; the "
        "end-of-turn moment then depends on the audio only) or the configured default",
    )
    ap.add_argument("--records", action="store_true", help="include every record in --json")
    a = ap.parse_args()
    emit(asyncio.run(main(a)), a.json)
