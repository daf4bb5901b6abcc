"""What Envoy costs a voice turn: paired v2v, direct vs through ``halfsec gateway``.

    python benchmarks/gateway_bench.py [--n 8] [--reps 2] [--set KEY=VALUE ...] [--json out.json]

One ``halfsec serve`` subprocess (the product's default engines unless ``--set`` says
otherwise) and the real Envoy in front of it (``EnvoyGateway``, the same configuration
``halfsec gateway`` runs: health checks, outlier detection, retries), all on 127.0.0.1.
The bench client is the lab's own (``lab.bench.run.run_items``: real-time microphone,
v2v at the client by ``halfsec.measure``).  Each recording is played twice in a row,
once direct and once through the gateway, the order alternating between pairs so that
neither path always goes first on a warmer machine; the figure is the median of the
paired differences (gateway - direct), which cancels the per-recording compute that
dominates v2v.  ``transport_diff`` does the same after taking the server's compute
stages (endpointing, STT, logic, TTS) out of each v2v, i.e. the part where a proxy can
add time.  The handshake (WebSocket upgrade + ``session.start`` -> ``session.started``)
is timed separately on fresh connections.

Target (issue 10): the paired p50 difference is within +5 ms.  The machine, date and
command are in the JSON; the box may be shared (see docs/gateway.md).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from _cli import bench_parser, emit, pct
from _speech import shortest_orders

from halfsec.audio.io import write_wav
from halfsec.clock import now_ns
from halfsec.gateway.config import GatewayOptions
from halfsec.gateway.envoy_process import EnvoyGateway
from halfsec.gateway.stats import fetch_upstream_stats
from halfsec.gateway.upstream import Upstream
from halfsec.lab.bench.corpus import CorpusItem
from halfsec.lab.bench.options import BenchOptions
from halfsec.lab.bench.run import run_items
from halfsec.lab.bench.server_process import ServerProcess
from halfsec.lab.report.json import cpu_info
from halfsec.measure.percentile import percentile
from halfsec.wire.protocol import SESSION_STARTED, parse_server_event, session_start_message

COMPUTE = ("endpointing_ms", "stt_ms", "logic_ms", "tts_ms")
TARGET_MS = 5.0


def recordings(n: int, tmp: Path) -> list[CorpusItem]:
    """The n shortest coffee orders, cut to 0.3 s before and 1 s after the speech."""
    items = []
    for r, pcm in shortest_orders(n, after_s=1.0):
        out = tmp / (Path(r["file"]).stem + ".wav")
        write_wav(out, pcm, 16000)
        items.append(CorpusItem(out, transcript=r["transcript"], intent=r["intent"]))
    return items


async def handshake_ms(ws_url: str) -> float:
    t0 = now_ns()
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        await ws.send_str(session_start_message(16000))
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type == aiohttp.WSMsgType.TEXT:
                if parse_server_event(msg.data)["type"] == SESSION_STARTED:
                    return (now_ns() - t0) / 1e6


def summary(xs: list[float]) -> dict[str, float | int | None]:
    return {
        "n": len(xs),
        "p50": pct(xs, 50, 2),
        "p95": pct(xs, 95, 2),
        "min": round(min(xs), 2) if xs else None,
        "max": round(max(xs), 2) if xs else None,
    }


def transport_ms(rec: dict[str, Any]) -> float:
    return float(rec["v2v_ms"]) - sum(float(rec["stages"].get(k, 0.0)) for k in COMPUTE)


async def health_path(server: ServerProcess) -> str:
    """``/ready`` when the server has it (waiting until it admits: a server that has just
    loaded its engines may measure itself saturated for one load window), else
    ``/healthz``; said in the JSON."""
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            async with http.get(f"http://127.0.0.1:{server.port}/ready") as r:
                if r.status == 200:
                    return "/ready"
                if r.status != 503:
                    return "/healthz"
            await asyncio.sleep(0.1)
    raise SystemExit(f"the server never said ready; its log: {server.log_path}")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    items = recordings(args.n, tmp)
    opts = BenchOptions(trace=False)
    async with ServerProcess(overrides=args.set) as server:
        path = await health_path(server)
        gw_opts = GatewayOptions(
            upstreams=(Upstream("near1", "127.0.0.1", server.port, "near"),),
            port=0,
            health_path=path,
        )
        async with EnvoyGateway(gw_opts) as gw:
            urls = {"direct": server.url, "gateway": gw.ws_url}
            hs: dict[str, list[float]] = {k: [] for k in urls}
            for _ in range(args.probes):
                for name, url in urls.items():
                    hs[name].append(await handshake_ms(url))
            pairs: list[dict[str, Any]] = []
            failures: list[str] = []
            k = 0
            for rep in range(args.reps):
                for item in items:
                    order = ["direct", "gateway"] if k % 2 == 0 else ["gateway", "direct"]
                    k += 1
                    recs: dict[str, dict[str, Any]] = {}
                    for name in order:
                        (rec,), _ = await run_items(urls[name], [item], opts)
                        recs[name] = rec
                        await asyncio.sleep(args.gap_s)
                    bad = [n for n, r in recs.items() if not r["ok"] or r["v2v_ms"] is None]
                    if bad:
                        failures += [f"{n} {item.stem}: {recs[n]['error']}" for n in bad]
                        continue
                    pairs.append(
                        {
                            "file": item.stem,
                            "rep": rep,
                            "first": order[0],
                            **{f"{n}_v2v_ms": round(float(recs[n]["v2v_ms"]), 2) for n in urls},
                            **{f"{n}_transport_ms": round(transport_ms(recs[n]), 2) for n in urls},
                        }
                    )
                    d = pairs[-1]["gateway_v2v_ms"] - pairs[-1]["direct_v2v_ms"]
                    print(f"{item.stem[:28]:28s} rep {rep}: {d:+7.1f} ms", file=sys.stderr)
            stats = {n: s.as_dict() for n, s in (await fetch_upstream_stats(gw)).items()}
    diff = [p["gateway_v2v_ms"] - p["direct_v2v_ms"] for p in pairs]
    tdiff = [p["gateway_transport_ms"] - p["direct_transport_ms"] for p in pairs]
    direct = [p["direct_v2v_ms"] for p in pairs]
    via = [p["gateway_v2v_ms"] for p in pairs]
    p_direct, p_via, p_diff = percentile(direct, 50), percentile(via, 50), percentile(diff, 50)
    cpu = cpu_info()
    return {
        "bench": "gateway",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": {
            "cpu": cpu["model"],
            "python": platform.python_version(),
            **{k: cpu[k] for k in ("avx512f", "avx512_vnni", "isa")},
        },
        "server_overrides": args.set,
        "health_path": path,
        "pairs": len(pairs),
        "direct_v2v_ms": summary(direct),
        "gateway_v2v_ms": summary(via),
        "p50_gap_ms": None if p_via is None or p_direct is None else round(p_via - p_direct, 2),
        "paired_diff_ms": summary(diff),
        "paired_transport_diff_ms": summary(tdiff),
        "handshake_ms": {n: summary(v) for n, v in hs.items()},
        "target_ms": TARGET_MS,
        "target_met": p_diff is not None and p_diff <= TARGET_MS and not failures,
        "failures": failures,
        "upstream_stats": stats,
        "records": pairs,
    }


def cli() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--n", type=int, default=8, help="Recordings (shortest coffee orders).")
    ap.add_argument("--reps", type=int, default=2, help="Times each recording is paired.")
    ap.add_argument("--probes", type=int, default=10, help="Handshakes timed per path.")
    ap.add_argument("--gap-s", type=float, default=0.5, help="Pause between sessions.")
    ap.add_argument("--set", action="append", default=[], help="Server override KEY=VALUE.")
    args = ap.parse_args()
    result = asyncio.run(main(args))
    emit(result, args.json)
    d, t = result["paired_diff_ms"], result["paired_transport_diff_ms"]
    print(  # at a glance, on stderr: stdout is the JSON
        f"pairs {result['pairs']}: direct p50 {result['direct_v2v_ms']['p50']} ms, gateway p50 "
        f"{result['gateway_v2v_ms']['p50']} ms; paired diff p50 {d['p50']:+} ms "
        f"(transport part {t['p50']:+} ms); handshake p50 direct "
        f"{result['handshake_ms']['direct']['p50']} / gateway "
        f"{result['handshake_ms']['gateway']['p50']} ms; target +{TARGET_MS:g} ms "
        f"{'met' if result['target_met'] else 'NOT met'}",
        file=sys.stderr,
    )
    if result["failures"]:
        print("failures:\n  " + "\n  ".join(result["failures"]), file=sys.stderr)
    sys.exit(0 if result["target_met"] else 1)


if __name__ == "__main__":
    cli()
