"""Edge gateway vs a direct connection over an emulated long path (80 ms RTT).

    python benchmarks/edge_bench.py [--n 4] [--long-ms 40] [--short-ms 3] [--probes 5] [--json OUT]

Topology, all on 127.0.0.1 (``halfsec serve`` and ``halfsec edge`` are subprocesses;
the relays and the bench client run here):

* local:  client -> origin                                  (baseline, no network)
* direct: client -> relay(long one-way) -> origin
* edge:   client -> relay(short) -> edge -> relay(long) -> origin

For each path it measures (1) the handshake a client waits for before it can speak --
WebSocket upgrade + ``session.start`` -> ``session.started`` -- and the 8-ping clock sync
the bench client does, over fresh connections; (2) voice-to-voice at the client (the
lab's own ``run_recording`` + ``make_record``) on the same coffee orders, interleaved per
recording; (3) bytes and chunks that crossed the long path per recording.

Round trips are estimated by dividing the time a path adds over ``local`` by the long
RTT.  The TCP relay accepts the client's SYN locally, so it does not delay the TCP
handshake itself: one more long RTT per fresh direct connection is added explicitly
(``tcp_handshake_rtts_modelled``; TLS would add one or two more).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from typing import Any

import aiohttp
import numpy as np
from _cli import bench_parser, emit, pct
from _speech import SPEECH, shortest_orders

from halfsec.clock import now_ns
from halfsec.lab.bench.corpus import CorpusItem
from halfsec.lab.bench.records import make_record
from halfsec.lab.bench.server_process import ServerProcess, fetch_health
from halfsec.lab.clients.websocket import run_recording
from halfsec.lab.netem.tcp_relay import TcpRelay
from halfsec.lab.report.json import cpu_info
from halfsec.wire.protocol import ping_message, session_start_message


def recordings(n: int) -> list[tuple[CorpusItem, np.ndarray]]:
    """The n shortest coffee orders, cut to 0.3 s before and 1 s after the speech."""
    return [
        (CorpusItem(path=SPEECH / r["file"], transcript=r["transcript"], intent=r["intent"]), pcm)
        for r, pcm in shortest_orders(n, after_s=1.0)
    ]


async def handshake(url: str, pings: int = 8) -> dict[str, float]:
    """Connect, start a session, sync the clock like the bench client; all in ms."""
    t0 = now_ns()
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        t_up = now_ns()
        await ws.send_str(session_start_message(16000))
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type == aiohttp.WSMsgType.TEXT and '"session.started"' in msg.data:
                break
        t_started = now_ns()
        for i in range(pings):
            await ws.send_str(ping_message(i, now_ns()))
            while True:
                msg = await ws.receive(timeout=10)
                if msg.type == aiohttp.WSMsgType.TEXT and '"pong"' in msg.data:
                    break
        t_synced = now_ns()
    return {
        "upgrade_ms": (t_up - t0) / 1e6,
        "session_start_ms": (t_started - t_up) / 1e6,
        "ready_ms": (t_started - t0) / 1e6,
        "clock_sync_ms": (t_synced - t_started) / 1e6,
    }


class EdgeProcess(ServerProcess):
    """``halfsec edge`` in a subprocess (reuses the bench's start/health/stop logic)."""

    def __init__(self, origin: str) -> None:
        super().__init__()
        self.args = [sys.executable, "-m", "halfsec.cli.main", "edge", "--origin", origin]
        self.args += ["--host", "127.0.0.1", "--port", str(self.port)]


def p50(xs: list[float]) -> float | None:
    return pct(xs, 50)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    long_spec = f"delay={args.long_ms}ms"
    short_spec = f"delay={args.short_ms}ms"
    rtt = 2 * args.long_ms
    items = recordings(args.n)
    async with ServerProcess() as origin:
        o_port = origin.port
        async with (
            TcpRelay(target=("127.0.0.1", o_port), up=long_spec, down=long_spec) as r_direct,
            TcpRelay(target=("127.0.0.1", o_port), up=long_spec, down=long_spec) as r_upstream,
        ):
            edge = EdgeProcess(f"ws://127.0.0.1:{r_upstream.port}/ws")
            async with edge:
                health_url = f"http://127.0.0.1:{edge.port}/healthz"
                for _ in range(100):
                    h = await fetch_health(health_url)
                    if h and h.get("pool_warm", 0) >= 1:
                        break
                    await asyncio.sleep(0.1)
                async with TcpRelay(
                    target=("127.0.0.1", edge.port), up=short_spec, down=short_spec
                ) as r_short:
                    urls = {
                        "local": origin.url,
                        "direct": f"ws://127.0.0.1:{r_direct.port}/ws",
                        "edge": f"ws://127.0.0.1:{r_short.port}/ws",
                    }
                    hs: dict[str, list[dict[str, float]]] = {k: [] for k in urls}
                    for _ in range(args.probes):
                        for name, url in urls.items():
                            hs[name].append(await handshake(url))
                            await asyncio.sleep(1.0)  # lets the edge's pool refill
                    v2v: dict[str, list[float]] = {k: [] for k in urls}
                    long_up: dict[str, list[int]] = {"direct": [], "edge": []}
                    long_chunks: dict[str, list[int]] = {"direct": [], "edge": []}
                    failures: list[str] = []
                    for item, pcm in items:
                        for name, url in urls.items():
                            relay = {"direct": r_direct, "edge": r_upstream}.get(name)
                            c0 = relay.counters()["up"] if relay else None
                            run = await run_recording(url, pcm)
                            rec = make_record(item, pcm, run)
                            if relay is not None and c0 is not None:
                                c1 = relay.counters()["up"]
                                long_up[name].append(c1["bytes"] - c0["bytes"])
                                long_chunks[name].append(c1["chunks"] - c0["chunks"])
                            if rec["ok"] and rec["v2v_ms"] is not None:
                                v2v[name].append(float(rec["v2v_ms"]))
                            else:
                                failures.append(f"{name} {item.stem}: {rec['error']}")
                            await asyncio.sleep(1.0)
                    edge_health = await fetch_health(health_url) or {}

    def hs_p50(name: str, key: str) -> float | None:
        return p50([h[key] for h in hs[name]])

    local_v2v = p50(v2v["local"]) or 0.0
    result: dict[str, Any] = {"rtt_ms": rtt, "paths": {}}
    totals: dict[str, float] = {}
    for name in ("direct", "edge"):
        setup_extra = (hs_p50(name, "ready_ms") or 0) - (hs_p50("local", "ready_ms") or 0)
        turn_extra = (p50(v2v[name]) or 0) - local_v2v
        setup_rtts = setup_extra / rtt
        tcp = 1.0 if name == "direct" else 0.0
        turn_rtts = turn_extra / rtt
        totals[name] = tcp + setup_rtts + turn_rtts
        result["paths"][name] = {
            "handshake_p50_ms": {k: hs_p50(name, k) for k in hs[name][0]},
            "v2v_p50_ms": p50(v2v[name]),
            "v2v_ms": v2v[name],
            "setup_extra_rtts_measured": round(setup_rtts, 2),
            "tcp_handshake_rtts_modelled": tcp,
            "per_turn_extra_rtts": round(turn_rtts, 2),
            "extra_rtts_one_turn_session": round(totals[name], 2),
            "clock_sync_extra_rtts": round(
                ((hs_p50(name, "clock_sync_ms") or 0) - (hs_p50("local", "clock_sync_ms") or 0))
                / rtt,
                2,
            ),
            "long_path_up_bytes_per_recording_p50": p50([float(x) for x in long_up[name]]),
            "long_path_up_chunks_per_recording_p50": p50([float(x) for x in long_chunks[name]]),
        }
    result["paths"]["local"] = {
        "handshake_p50_ms": {k: hs_p50("local", k) for k in hs["local"][0]},
        "v2v_p50_ms": p50(v2v["local"]),
        "v2v_ms": v2v["local"],
    }
    saved = 1 - totals["edge"] / totals["direct"] if totals["direct"] > 0 else None
    result["edge_saves_fraction_of_extra_rtts"] = None if saved is None else round(saved, 3)
    result["target_met"] = saved is not None and saved >= 0.5
    result["edge_totals"] = edge_health.get("totals")
    result["edge_pool"] = {
        k: edge_health.get(k) for k in ("pool_acquired_warm", "pool_acquired_cold", "pool_size")
    }
    result["failures"] = failures
    return result


if __name__ == "__main__":
    ap = bench_parser(__doc__)
    ap.add_argument("--n", type=int, default=4, help="coffee orders to play per path")
    ap.add_argument("--long-ms", type=float, default=40.0, help="one-way delay client/edge-origin")
    ap.add_argument("--short-ms", type=float, default=3.0, help="one-way delay client-edge")
    ap.add_argument("--probes", type=int, default=5, help="fresh handshakes per path")
    a = ap.parse_args()
    t0 = time.monotonic()
    out = asyncio.run(main(a))
    report = {
        "command": "python benchmarks/edge_bench.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()} cores={os.cpu_count()} python={platform.python_version()}",
        "cpu": cpu_info(),
        "date": time.strftime("%Y-%m-%d"),
        "wall_s": round(time.monotonic() - t0, 1),
        "long_one_way_ms": a.long_ms,
        "short_one_way_ms": a.short_ms,
        **out,
    }
    emit(report, a.json)
