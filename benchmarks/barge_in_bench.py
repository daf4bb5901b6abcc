"""Barge-in as users hear it: interruptions stop the reply fast, backchannels do not.

    python benchmarks/barge_in_bench.py [--at-ms 1600,1900,2200,2500] [--json OUT]

One ``halfsec serve`` subprocess (default options: ``session.barge_in=pause``, or what
``--set`` says).  For each clip, the lab's interrupt client (``lab.clients.interrupt``)
asks a coffee order from the shared human speech over WebSocket (PCM16 both ways), and
``--at-ms`` after the reply's first audible sample *at the client* (cycled over the
clips, so onsets fall on words and between them) it plays the clip into the reply:

* interruptions ("wait", "no, stop", "hold on", "actually, make it a small one", ...;
  Piper's joe at three speeds and four espeak-ng voices) and people's "stop" and "no";
* backchannels ("uh-huh", "yeah", "okay", "mm-hmm", "right", "yeah, yeah", "I see",
  "got it"; the same voices) and people's "yes" and "right".

Measured at the client (``lab.clients.interrupt``): ``stop_ms`` = the clip's first
voiced sample as the client played it -> the reply's last audible sample before its
final stop (paused and never resumed, or cancelled; a pause that resumed and paused
again counts to the second; an interruption that never stopped the reply counts to the
reply's last audible sample, ``stopped`` false); ``cut_ms``: -> the final stop itself,
whatever the reply said then.  For backchannels: whether the reply was cancelled, and
the pause heard when it resumed.

Targets: interruptions' stop p95 <= 100 ms; >= 90 % of backchannels do not stop the
reply.  A backchannel "does not stop the reply" when the reply is not cancelled and,
if it paused, resumes with at most ``BACKCHANNEL_PAUSE_MAX_MS`` of silence heard (the
user hears it go on: a pause about as long as the "uh-huh" plus a breath; longer, the
reply sounds as if it had stopped and restarted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import numpy as np
from _cli import bench_parser, emit
from _speech import SPEECH, shortest_orders
from barge_in_clips import Clip, human, synthesized

from halfsec.lab.bench.server_process import ServerProcess
from halfsec.lab.clients.interrupt import BargeInRun, run_barge_in
from halfsec.lab.report.json import cpu_info
from halfsec.measure.percentile import percentile

STOP_P95_TARGET_MS = 100.0
BACKCHANNEL_KEPT_TARGET = 0.90
BACKCHANNEL_PAUSE_MAX_MS = 1500.0
"""The most silence a backchannel may cause in the reply and still count as not stopping
it (LiveKit resumes a false interruption after 2 s; the session's own limit for a
transcript is ``backchannel_wait_ms``, 1.5 s)."""


def questions(n: int) -> list[tuple[str, np.ndarray]]:
    """The ``n`` shortest coffee orders, cut to 0.3 s before and 0.1 s after the speech."""
    return [(r["file"], pcm) for r, pcm in shortest_orders(n, after_s=0.1)]


def _row(clip: Clip, question: str, run: BargeInRun) -> dict[str, Any]:
    return {
        "clip": clip.name,
        "kind": clip.kind,
        "text": clip.text,
        "voice": clip.voice,
        "question": question,
        "at_ms": run.at_ms,
        "stop_ms": run.stop_ms,
        "cut_ms": run.cut_ms,
        "stopped": run.stopped,
        "paused": run.paused,
        "pauses": run.pauses,
        "resumed": run.resumed,
        "cancelled": run.cancelled,
        "pause_heard_ms": run.pause_heard_ms,
        "resume_reason": run.resume_reason,
        "resume_text": run.resume_text,
        "heard_text": run.heard_text,
        "error": run.error,
    }


def _pct(values: list[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "n": len(values)}


def kept(row: dict[str, Any]) -> bool:
    """Did the reply go on through this backchannel (see the module docstring)?"""
    if row["cancelled"] or row["stopped"]:
        return False
    if not row["paused"]:
        return True
    heard = row["pause_heard_ms"]
    return bool(row["resumed"]) and heard is not None and heard <= BACKCHANNEL_PAUSE_MAX_MS


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if r["error"] is None and r["stop_ms"] is not None]
    intr = [r for r in ok if r["kind"] == "interruption"]
    bc = [r for r in ok if r["kind"] == "backchannel"]
    on = [r for r in bc if kept(r)]
    stop = _pct([r["stop_ms"] for r in intr])
    cut = _pct([r["cut_ms"] for r in intr if r["cut_ms"] is not None])
    kept_rate = len(on) / len(bc) if bc else None
    heard = [r["pause_heard_ms"] for r in bc if r["resumed"] and r["pause_heard_ms"] is not None]
    return {
        "interruption": {
            "stop_ms": stop,
            "cut_ms": cut,
            "stopped_rate": sum(r["stopped"] for r in intr) / len(intr) if intr else None,
            "cancelled_rate": sum(r["cancelled"] for r in intr) / len(intr) if intr else None,
            "paused_again": sum(r["pauses"] > 1 for r in intr),
        },
        "backchannel": {
            "kept_rate": kept_rate,
            "kept": len(on),
            "n": len(bc),
            "cancelled": sum(r["cancelled"] for r in bc),
            "pause_max_ms": BACKCHANNEL_PAUSE_MAX_MS,
            "pause_heard_ms": _pct(heard),
            "pause_heard_le_1000ms": sum(h <= 1000.0 for h in heard),
        },
        "errors": len(rows) - len(ok),
        "checks": {
            "stop_p95_le_100ms": stop["p95"] is not None and stop["p95"] <= STOP_P95_TARGET_MS,
            "backchannels_kept_ge_90pct": kept_rate is not None
            and kept_rate >= BACKCHANNEL_KEPT_TARGET,
        },
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    qs = questions(args.questions)
    clips = synthesized() + human(SPEECH)
    if args.only:
        clips = [c for c in clips if args.only in c.name]
    if args.limit:
        clips = clips[: args.limit]
    rows: list[dict[str, Any]] = []
    t_start = time.time()
    async with ServerProcess(overrides=args.set) as server:
        for i, clip in enumerate(clips):
            qname, q = qs[i % len(qs)]
            at_ms = args.at_ms[i % len(args.at_ms)]
            run = await run_barge_in(server.url, q, clip.pcm, at_ms)
            rows.append(_row(clip, qname, run))
            r = rows[-1]
            print(
                f"{clip.kind:12s} {clip.name:48s} stop {r['stop_ms'] or 0:6.1f} ms  "
                f"stopped={r['stopped']!s:5s} pauses={r['pauses']} "
                f"cancelled={r['cancelled']!s:5s} resumed={r['resumed']!s:5s} "
                f"pause {r['pause_heard_ms'] or 0:6.0f} ms  "
                f"{r['resume_text'] or r['heard_text'] or ''!r} "
                f"{r['error'] or ''}",
                file=sys.stderr,
            )
    return {
        "meta": {
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
            "loadavg": os.getloadavg(),
            "cpu": cpu_info(),
            "at_ms": args.at_ms,
            "set": args.set,
            "clips": len(clips),
        },
        "summary": summarize(rows),
        "runs": rows,
    }


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument(
        "--at-ms",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[1600.0, 1900.0, 2200.0, 2500.0],
        help="clip onsets after the reply's first audible sample, cycled over the clips",
    )
    ap.add_argument("--questions", type=int, default=2, help="coffee orders to cycle through")
    ap.add_argument("--limit", type=int, default=0, help="at most this many clips (0: all)")
    ap.add_argument(
        "--set", action="append", default=[], help="server option, e.g. session.barge_in=cancel"
    )
    ap.add_argument("--only", help="only clips whose name contains this")
    args = ap.parse_args()
    report = asyncio.run(bench(args))
    print(json.dumps(report["summary"], indent=2), file=sys.stderr)  # at a glance
    emit(report, args.json)


if __name__ == "__main__":
    main()
