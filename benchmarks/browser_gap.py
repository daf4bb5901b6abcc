"""Where the browser page's endpointing differs from the Python client's, turn by turn.

    python benchmarks/browser_gap.py --limit 8 [--transport websocket,webrtc]
        [--clients python,browser,replay] [--browser-nice N] [--page-processing]
        [--page-capture auto|worklet] [--split-cpus] [--json OUT]

One ``halfsec serve`` (default config); each built-in recording goes through the Python
client and then through the page in real Chromium, over each transport, back to back.
For every answered turn the *endpointing* stage (reference end of speech -> the server's
``turn.end``, on the client's clock) is split with what ``turn.end`` itself says
(``speech_end_ms``: where the detector put the end; ``audio_ms``: how much audio it had
when it decided; both positions in the uploaded stream, whose sample 0 is the client's
sample 0):

* ``placement``: reference end -> the detector's end of speech (what the audio is);
* ``window``: detector end -> decision position (the end-of-turn policy's wait);
* ``lag``: the moment the decision's last sample was captured -> the decision (frame
  buffering, the hop to the socket, the network, the server's resampler/VAD/turn work).

The page also stamps each upload chunk (capture time of its last sample, send time;
``uploads`` in its export), so ``lag`` is split into ``capture->send`` and the rest.
Reported: per-turn rows and per client/transport medians (``halfsec.measure.percentile``),
with the v2v p50 the issue's target is about, and ``page_vs_python`` per transport: the
page's v2v p50 minus the Python client's over the recordings both answered (the done-when
line: within +40 ms) and the paired per-recording differences.

``--split-cpus``: the server runs on CPU 0 only, this process (the Python client) and the
Chromium it starts on the others, as if client and server were two machines.  Without it
both clients share the box's cores with the server, and Chromium's third of a core or more
competes with the server's final decode and end-of-turn work during the page's turns only
(stop 13/14: the page's extra end-of-turn window, while its capture, upload and network
add ~2 ms).  With it the server has one core for either client, so the difference is the
client's own.  Both layouts are reported, never one instead of the other.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import numpy as np
import psutil
from _cli import bench_parser, emit, pct

from halfsec import INTERNAL_RATE
from halfsec.audio.io import load_audio
from halfsec.cli.bench import builtin_corpus
from halfsec.lab.bench.browser import browser_record
from halfsec.lab.bench.records import make_record
from halfsec.lab.bench.server_process import ServerProcess
from halfsec.lab.clients.browser import BrowserOptions, run_page
from halfsec.lab.clients.browser_page import page_url, reply_schedule
from halfsec.lab.clients.client_run import ClientRun
from halfsec.lab.clients.webrtc import run_recording_webrtc
from halfsec.lab.clients.websocket import run_recording as ws_recording
from halfsec.lab.report.json import cpu_info
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.measure.percentile import percentile


def split(run: ClientRun, rec: dict[str, Any], uploads: list[list[float]] | None) -> dict[str, Any]:
    """The endpointing split of the answered turn (ms; client clock, 0 = sample 0)."""
    row: dict[str, Any] = {"v2v_ms": rec.get("v2v_ms"), "ok": rec.get("ok")}
    row["endpointing_ms"] = (rec.get("stages") or {}).get("endpointing_ms")
    row["network_buffer_ms"] = (rec.get("stages") or {}).get("network_buffer_ms")
    row["transcript"] = rec.get("transcript")
    row["eot_reason"] = rec.get("eot_reason")
    ends = [r for r in run.events if r.event is not None and r.event["type"] == "turn.end"]
    ref = rec.get("ref_end_ms")
    if not ends or ref is None or run.clock is None:
        return row
    end = ends[-1]
    ev = end.event or {}
    decided = (run.clock.to_client_ns(end.t_server_ns) - run.t0_ns) / 1e6
    det_end = float(ev.get("speech_end_ms") or 0.0)
    pos = float(ev.get("audio_ms") or 0.0)
    row.update(
        ref_end_ms=round(ref, 1),
        placement_ms=round(det_end - ref, 1),
        window_ms=round(pos - det_end, 1),
        lag_ms=round(decided - pos, 1),
        recv_ms=round((end.t_recv_ns - run.t0_ns) / 1e6 - decided, 1),
    )
    if uploads:
        # The chunk that completed the decision's position: capture end -> send.
        t0 = run.t0_ns / 1e6
        cover = [u for u in uploads if u[0] - t0 >= pos - 0.5]
        if cover:
            row["capture_to_send_ms"] = round(cover[0][1] - cover[0][0], 1)
        gaps = [u[1] - u[0] for u in uploads]
        row["capture_to_send_max_ms"] = round(max(gaps), 1)
        for q in (10, 50, 90):
            row[f"capture_to_send_p{q}_ms"] = pct(gaps, q)
    return row


class CpuSampler:
    """CPU seconds used during a run by this process's children other than the server
    (Chromium's processes; they exit with the run, so they are sampled as it goes)."""

    def __init__(self, server_pid: int) -> None:
        self.server = psutil.Process(server_pid)
        self.seen: dict[int, float] = {}
        self.kind: dict[int, str] = {}
        self.task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            for c in psutil.Process().children(recursive=True):
                if c.pid == self.server.pid:
                    continue
                try:
                    t = c.cpu_times()
                    self.seen[c.pid] = t.user + t.system
                    if c.pid not in self.kind:
                        cmd = " ".join(c.cmdline())
                        kind = cmd.split("--type=")[1].split()[0] if "--type=" in cmd else c.name()
                        if "--utility-sub-type=" in cmd:
                            kind = cmd.split("--utility-sub-type=")[1].split()[0]
                        self.kind[c.pid] = kind
                except psutil.Error:
                    pass
            await asyncio.sleep(0.2)

    async def __aenter__(self) -> CpuSampler:
        t = self.server.cpu_times()
        self.s0, self.w0 = t.user + t.system, asyncio.get_running_loop().time()
        self.m0 = psutil.Process().cpu_times()
        self.task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        t = self.server.cpu_times()
        m = psutil.Process().cpu_times()
        wall = asyncio.get_running_loop().time() - self.w0
        self.result = {
            "wall_s": round(wall, 2),
            "server_cpu_pct": round(100 * (t.user + t.system - self.s0) / wall, 1),
            "client_cpu_pct": round(
                100 * (m.user + m.system - self.m0.user - self.m0.system) / wall, 1
            ),
            "browser_cpu_pct": round(100 * sum(self.seen.values()) / wall, 1),
        }
        by_kind: dict[str, float] = {}
        for pid, cpu_s in self.seen.items():
            k = self.kind.get(pid, "?")
            by_kind[k] = by_kind.get(k, 0.0) + cpu_s
        if by_kind:
            self.result["browser_cpu_pct_by_process"] = {
                k: round(100 * v / wall, 1) for k, v in sorted(by_kind.items())
            }


async def one(url: str, item: Any, transport: str, client: str, pid: int) -> dict[str, Any]:
    async with CpuSampler(pid) as cpu:
        row = await _one(url, item, transport, client)
    return row | cpu.result


async def _one(url: str, item: Any, transport: str, client: str) -> dict[str, Any]:
    pcm = load_audio(item.path)
    if client == "replay":
        # The Python client sending what the page captured (same samples, same length):
        # separates "the audio differs" from "the page/browser differs".
        pcm = _CAPTURED.get(str(item.path), pcm)
        client = "python"
    if client == "python":
        if transport == "websocket":
            run = await ws_recording(url, pcm)
        else:
            run = await run_recording_webrtc(
                url.replace("ws://", "http://").rsplit("/ws", 1)[0], pcm
            )
        rec = make_record(item, pcm, run)
        row = split(run, rec, None)
        pk = [p for p in run.packets if p.turn_id and p.t_server_ns]
        if pk and run.clock is not None:
            last = [p for p in pk if p.turn_id == max(q.turn_id for q in pk)][0]
            sent = run.clock.to_client_ns(last.t_server_ns)
            row["reply_recv_ms"] = round((last.t_recv_ns - sent) / 1e6, 2)
        return row
    opt = BrowserOptions(niceness=_NICE[0], processing=_PROCESSING[0], capture=_CAPTURE[0])
    pr = await run_page(page_url(url), pcm, transport, opt)
    rec = browser_record(item, pcm, pr, transport, opt.lead_s)
    if rec.get("input_offset_ms") is not None:
        at = round((float(rec["input_offset_ms"]) / 1000 + opt.lead_s) * INTERNAL_RATE)
        if 0 <= at and at + pcm.size <= pr.captured.size:
            _CAPTURED[str(item.path)] = pr.captured[at : at + pcm.size].copy()
    row = split(pr.run, rec, pr.export.get("uploads"))
    row["upload_rate"] = pr.export.get("upload_rate")
    for k in ("capture_path", "capture_rate", "capture_ts_shift_ms", "upload_wait_min_ms"):
        row[k] = rec.get(k)
    row["neteq_delay_ms"] = rec.get("neteq_delay_ms")
    row["neteq_target_ms"] = rec.get("neteq_target_ms")
    row["base_latency_ms"] = pr.export.get("base_latency_ms")
    row["output_latency_ms"] = pr.export.get("output_latency_ms")
    row["input_offset_ms"] = rec.get("input_offset_ms")
    row["input_match"] = rec.get("input_match")
    for k in ("rtc_sent_to_track_ms", "rtc_track_to_audible_ms"):
        row[k] = rec.get(k)
    # The reply player (WebSocket): send -> page, page -> scheduled start, and whether it
    # started where scheduled and ran without underruns.
    row.update(reply_schedule(pr))
    row["context_rate"] = pr.rate
    bounds = voiced_bounds(pcm)
    if rec.get("ref_end_ms") is not None and rec.get("input_offset_ms") is not None and bounds:
        # The reference end on what the page captured vs on the file, where it landed.
        shift = float(rec["input_offset_ms"]) + opt.lead_s * 1000
        orig = bounds[1] * 1000 / INTERNAL_RATE
        row["ref_vs_original_ms"] = round(float(rec["ref_end_ms"]) - orig - shift, 1)
    return row


_NICE = [0]
_PROCESSING = [False]
_CAPTURE = ["auto"]
_CAPTURED: dict[str, np.ndarray] = {}
KEYS = (
    "v2v_ms",
    "endpointing_ms",
    "placement_ms",
    "window_ms",
    "lag_ms",
    "recv_ms",
    "capture_to_send_ms",
    "ref_vs_original_ms",
    "server_cpu_pct",
    "browser_cpu_pct",
    "client_cpu_pct",
    "network_buffer_ms",
    "neteq_delay_ms",
    "rtc_sent_to_track_ms",
    "rtc_track_to_audible_ms",
    "reply_recv_ms",
    "reply_lead_ms",
    "reply_recv_to_start_ms",
    "reply_start_slip_ms",
    "reply_underruns",
)


def _round(x: float | None) -> float | None:
    return round(x, 1) if x is not None else None


def med(rows: list[dict[str, Any]], key: str) -> float | None:
    return pct([float(r[key]) for r in rows if r.get(key) is not None], 50)


async def main() -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--transport", default="websocket,webrtc")
    ap.add_argument("--clients", default="python,browser,replay")
    ap.add_argument(
        "--browser-nice",
        type=int,
        default=0,
        help="run Chromium under nice N (a lab knob: how much of the gap is CPU contention "
        "with the server on this box)",
    )
    ap.add_argument(
        "--page-processing",
        action="store_true",
        help="the page's getUserMedia echoCancellation/noiseSuppression/autoGainControl on "
        "(the page's own default for users; the bench runs them off)",
    )
    ap.add_argument(
        "--page-capture",
        choices=("auto", "worklet"),
        default="auto",
        help="how the page captures the microphone: auto (the track, MediaStreamTrackProcessor, "
        "where the browser has it) or worklet (the fallback Firefox and Safari run)",
    )
    ap.add_argument(
        "--split-cpus",
        action="store_true",
        help="server on CPU 0, the clients (this process, Chromium) on the other CPUs: "
        "two machines on one box (needs >= 2 CPUs)",
    )
    args = ap.parse_args()
    server_cpus: frozenset[int] | None = None
    if args.split_cpus:
        mine = sorted(os.sched_getaffinity(0))
        if len(mine) < 2:
            ap.error(f"--split-cpus needs at least 2 CPUs; this process may use {mine}")
        server_cpus = frozenset(mine[:1])
        os.sched_setaffinity(0, set(mine[1:]))  # Chromium, started later, inherits it
    _NICE[0] = args.browser_nice
    _CAPTURE[0] = args.page_capture
    _PROCESSING[0] = args.page_processing
    items = builtin_corpus().items[: args.limit]
    rows: list[dict[str, Any]] = []
    async with ServerProcess(cpus=server_cpus) as server:
        for item in items:
            for transport in args.transport.split(","):
                for client in args.clients.split(","):
                    assert server.proc is not None
                    r = await one(server.url, item, transport, client, server.proc.pid)
                    r.update(file=item.path.name, transport=transport, client=client)
                    rows.append(r)
                    print(json.dumps(r), file=sys.stderr, flush=True)  # progress
    summary = {}
    for transport in args.transport.split(","):
        for client in args.clients.split(","):
            sel = [r for r in rows if r["transport"] == transport and r["client"] == client]
            summary[f"{client}/{transport}"] = {"n": len(sel)} | {k: med(sel, k) for k in KEYS}
    gap = {t: page_gap(rows, t) for t in args.transport.split(",")}
    print(json.dumps(summary, indent=1), file=sys.stderr)  # at a glance
    print(json.dumps({"page_vs_python": gap}, indent=1), file=sys.stderr)
    meta = {
        "limit": args.limit,
        "browser_nice": args.browser_nice,
        "page_processing": args.page_processing,
        "page_capture": args.page_capture,
        "clients": args.clients,
        "split_cpus": None
        if server_cpus is None
        else {"server": sorted(server_cpus), "clients": sorted(os.sched_getaffinity(0))},
        "cpu": cpu_info(),
    }
    emit({"meta": meta, "rows": rows, "p50": summary, "page_vs_python": gap}, args.json)
    return 0


def page_gap(rows: list[dict[str, Any]], transport: str) -> dict[str, Any]:
    """The issue's line: the page's v2v p50 minus the Python client's on the same
    recordings (answered by both), and the paired per-recording differences."""
    by: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["transport"] == transport and r.get("v2v_ms") is not None and r.get("ok"):
            by.setdefault(r["file"], {})[r["client"]] = float(r["v2v_ms"])
    both = {f: v for f, v in by.items() if "python" in v and "browser" in v}
    page = percentile([v["browser"] for v in both.values()], 50)
    py = percentile([v["python"] for v in both.values()], 50)
    diffs = {f: round(v["browser"] - v["python"], 1) for f, v in sorted(both.items())}
    return {
        "n": len(both),
        "python_v2v_p50_ms": _round(py),
        "page_v2v_p50_ms": _round(page),
        "gap_p50_ms": _round(page - py) if page is not None and py is not None else None,
        "paired_diff_p50_ms": pct(list(diffs.values()), 50),
        "paired_diff_ms": diffs,
        "target_ms": 40.0,
    }


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
