"""Voice-to-voice over every transport, in one run, on the same real recordings.

    python benchmarks/transport_bench.py --limit 6 [--net 4g] [--json OUT]

Modes (each recording is played once per mode, one session per recording):

* ``inproc``: ``halfsec.runtime.file_run`` -- the pipeline with no transport at all;
* ``ws_pcm`` / ``ws_opus``: ``halfsec serve`` (a subprocess, like ``halfsec bench``) over
  the WebSocket, PCM16 or Opus both ways (Opus replies go through the client's jitter
  buffer);
* ``webrtc``: aiortc client <-> server on loopback;
* ``webrtc_<net>`` / ``ws_<net>``: the same through the network lab (two UDP relays for
  WebRTC, the TCP relay for the WebSocket).

Reported per mode: v2v p50/p95 (same reference end of speech and first-audible rule as
``halfsec bench``), the p50 of the breakdown's ``endpointing``, ``server_send`` (TTS
first audio -> first packet sent) and ``network_buffer`` (sent -> first audible at the
client) stages, the latter split into network and the client's jitter buffer, the
server's jitter-buffer delay p50, and the concealed share of the server's input frames.  Targets checked: WebRTC loopback p50
within 30 ms of in-process; WebRTC under ``--net`` p95 within 150 ms of loopback p95.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from halfsec.audio.io import load_audio
from halfsec.config import load_config
from halfsec.lab.bench import ServerProcess, make_record
from halfsec.lab.breakdown import percentile
from halfsec.lab.client import ClientOptions, ClientRun, run_recording
from halfsec.lab.client_rtc import run_recording_webrtc
from halfsec.lab.corpus import CorpusItem
from halfsec.lab.netem.glue import impaired_url
from halfsec.lab.report_json import default_meta
from halfsec.runtime.build import build_engines
from halfsec.runtime.file_run import run_file
from halfsec.runtime.session import VoiceSession
from halfsec.turn.reference import voiced_bounds

SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "speech"


def recordings(limit: int) -> list[tuple[Path, np.ndarray, dict[str, str]]]:
    import csv

    with open(SPEECH / "manifest.tsv", newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["intent"]]
    rows.sort(key=lambda r: float(r["duration_s"]))
    out = []
    for r in rows[:limit]:
        pcm = load_audio(SPEECH / r["file"])
        b = voiced_bounds(pcm)
        if b is None:
            continue
        out.append((SPEECH / r["file"], pcm[max(0, b[0] - 4800) : b[1] + 16000], r))
    return out


def summarize(mode: str, recs: list[dict[str, Any]], runs: list[ClientRun]) -> dict[str, Any]:
    v = [r["v2v_ms"] for r in recs if r.get("ok") and r.get("v2v_ms") is not None]
    cjb = [r["network_split"]["jitter_buffer_ms"] for r in recs if r.get("network_split")]
    sjb = [
        r["server_jitter_buffer_ms"] for r in recs if r.get("server_jitter_buffer_ms") is not None
    ]
    scon = [r["server_concealed_pct"] for r in recs if r.get("server_concealed_pct") is not None]
    stages = {
        k: percentile([r["stages"][k] for r in recs if r.get("ok") and r.get("stages")], 50)
        for k in ("endpointing_ms", "server_send_ms", "network_buffer_ms")
    }
    net = [r["network_split"]["network_ms"] for r in recs if r.get("network_split")]
    played = sum(run.player.buffer.stats.played for run in runs if run.player is not None)
    concealed = sum(run.player.buffer.stats.concealed for run in runs if run.player is not None)
    return {
        "mode": mode,
        "n": len(recs),
        "ok": len(v),
        "errors": [r.get("error") for r in recs if not r.get("ok")],
        "v2v_p50_ms": percentile(v, 50),
        "v2v_p95_ms": percentile(v, 95),
        **{f"{k[:-3]}_p50_ms": v for k, v in stages.items()},
        "network_p50_ms": percentile(net, 50),
        "client_jitter_buffer_p50_ms": percentile(cjb, 50),
        "server_jitter_buffer_p50_ms": percentile(sjb, 50),
        "server_concealed_pct_mean": float(np.mean(scon)) if scon else None,
        "client_concealed_pct": 100.0 * concealed / played if played else None,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    recs_in = recordings(args.limit)
    cfg = load_config()
    results: dict[str, Any] = {}
    # In-process reference (no transport).
    engines = build_engines(cfg)
    v = []
    for _path, pcm, _row in recs_in:
        session = VoiceSession(engines, cfg.turn, cfg.session, output_rate=cfg.audio.output_rate)
        fr = await run_file(session, pcm)
        await session.close()
        s = fr.summary()
        if s["v2v_ms"] is not None:
            v.append(s["v2v_ms"])
    results["inproc"] = {
        "mode": "inproc",
        "n": len(recs_in),
        "ok": len(v),
        "v2v_p50_ms": percentile(v, 50),
        "v2v_p95_ms": percentile(v, 95),
    }
    del engines
    async with ServerProcess() as proc:
        base = f"http://127.0.0.1:{proc.port}"
        modes: list[tuple[str, str, str | None]] = [
            ("ws_pcm", "ws_pcm", None),
            ("ws_opus", "ws_opus", None),
            ("webrtc", "webrtc", None),
            (f"webrtc_{args.net}", "webrtc", args.net),
            (f"ws_{args.net}", "ws_pcm", args.net),
        ]
        if args.modes:
            wanted = set(args.modes.split(","))
            modes = [m for m in modes if m[0] in wanted or m[1] in wanted]
        for name, kind, net in modes:
            recs: list[dict[str, Any]] = []
            runs: list[ClientRun] = []
            for path, pcm, row in recs_in:
                item = CorpusItem(path=path, transcript=row["transcript"], intent=row["intent"])
                if kind == "webrtc":
                    run = await run_recording_webrtc(base, pcm, ClientOptions(), net)
                else:
                    codec = "opus" if kind == "ws_opus" else "pcm16"
                    async with impaired_url(proc.url, net) as (url, _relay):
                        run = await run_recording(url, pcm, ClientOptions(codec=codec))
                runs.append(run)
                recs.append(make_record(item, pcm, run))
            results[name] = summarize(name, recs, runs)
            print(json.dumps(results[name]), file=sys.stderr)
    ip, rtc = results["inproc"], results.get("webrtc", {})
    rtc_net = results.get(f"webrtc_{args.net}", {})
    checks = {
        "webrtc_p50_minus_inproc_ms": _diff(rtc.get("v2v_p50_ms"), ip["v2v_p50_ms"]),
        "webrtc_p50_target_le_30ms": _le(_diff(rtc.get("v2v_p50_ms"), ip["v2v_p50_ms"]), 30),
        f"webrtc_{args.net}_p95_minus_loopback_ms": _diff(
            rtc_net.get("v2v_p95_ms"), rtc.get("v2v_p95_ms")
        ),
        "net_p95_target_le_150ms": _le(
            _diff(rtc_net.get("v2v_p95_ms"), rtc.get("v2v_p95_ms")), 150
        ),
    }
    meta = default_meta("python " + " ".join(sys.argv))
    return {"meta": meta, "results": results, "checks": checks}


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 1)


def _le(x: float | None, limit: float) -> bool | None:
    return None if x is None else x <= limit


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--limit", type=int, default=6)
    ap.add_argument("--net", default="4g")
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--modes", default="", help="comma-separated subset, e.g. webrtc,ws_opus (default: all)"
    )
    a = ap.parse_args()
    out = asyncio.run(main(a))
    text = json.dumps(out, indent=2, default=str)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")
