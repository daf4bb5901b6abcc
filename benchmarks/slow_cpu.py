"""Issue 11's slow-CPU line, *emulated* on this box: ``halfsec run`` over the corpus in a
cgroup whose CPU quota slows every stage, so the final decode takes what it takes on a
CPU without AVX-512 (~250-300 ms), with early start on and off.

    python benchmarks/slow_cpu.py [--quota 0.8] [--period-us 2000] [--isa AVX2]
        [--only coffee] [--limit 20] [--early on,off] [--json OUT]

An emulation, not such a CPU: the box keeps its AVX-512/VNNI kernels (``--isa AVX2``
also keeps CTranslate2's Whisper off them, not onnxruntime's Silero, Smart Turn and
Piper), and a quota of ``--quota`` CPUs (cgroup v1 ``cpu.cfs_quota_us`` over a short
``cpu.cfs_period_us``, so a throttled thread waits at most ~one period) makes the whole
process (session and its in-process client, as in ``benchmarks/run_corpus.py``) slower
in wall time rather than each instruction slower.  Each ``--early`` mode runs in a fresh
process (the final-pace record is per process): ``on`` is the product's default (early
start only while the recent finals' median is slow, ``runtime/final_pace.py``), ``off``
never starts early, ``forced`` starts early whatever the pace.  Reported per mode: v2v
p50/p95, the STT final's compute p50/p95, endpointing, early starts none/kept/redone
(redone = a wrong start, dropped unheard), acceptance, premature replies, and the
cgroup's throttling; the machine (``lscpu``), the commit and the load average beside.

Needs root and the cgroup v1 cpu controller (``/sys/fs/cgroup/cpu``); refuses otherwise.
The cgroup is removed on every exit, and its processes are ours: the child is killed
and waited for before."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _cli import bench_parser, emit, pct
from _speech import MANIFEST

from halfsec.lab.report.json import accepted, cpu_info

CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
MIN_US = 1000
"""The kernel's smallest ``cfs_quota_us`` and ``cfs_period_us``."""
ISA_ENV = ("CT2_FORCE_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
"""What ``--isa`` sets (stop 8's AVX2 emulation: CTranslate2 only)."""
GATES = {"on": None, "off": math.inf, "forced": 0.0}
"""``FINAL_PACE.min_final_ms`` per ``--early`` mode (None: the product's default)."""


class CgroupError(RuntimeError):
    """No CPU cap can be made here; the message says what is missing."""


def cap_values(quota: float, period_us: int) -> tuple[int, int]:
    """``(period_us, quota_us)`` for ``quota`` CPUs.  The period is lengthened where
    ``quota`` of it would be under the kernel's 1 ms minimum."""
    if not quota > 0:
        raise ValueError(f"--quota must be > 0 CPUs, got {quota}")
    period = max(period_us, MIN_US, math.ceil(MIN_US / quota))
    if period > 1_000_000:
        raise ValueError(f"--quota {quota} needs a period over 1 s; use a larger quota")
    return period, max(MIN_US, round(quota * period))


@contextmanager
def cpu_cap(quota: float, period_us: int, root: Path = CGROUP_CPU) -> Iterator[Path]:
    """A fresh cgroup under ``root`` capped at ``quota`` CPUs, removed on exit (anything
    still in it is moved back to ``root`` first)."""
    period, quota_us = cap_values(quota, period_us)
    if not (root / "cpu.cfs_quota_us").is_file():
        raise CgroupError(
            f"no cgroup v1 cpu controller at {root} (no cpu.cfs_quota_us): this emulation "
            "needs one; mount it (mount -t cgroup -o cpu,cpuacct cgroup /sys/fs/cgroup/cpu) "
            "or measure on a real slower CPU with benchmarks/run_corpus.py"
        )
    group = root / f"halfsec-slow-cpu-{os.getpid()}"
    try:
        group.mkdir()
    except OSError as e:
        raise CgroupError(f"cannot create the cgroup {group}: {e} (run as root)") from e
    try:
        (group / "cpu.cfs_period_us").write_text(str(period))
        (group / "cpu.cfs_quota_us").write_text(str(quota_us))
        yield group
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            try:
                (root / "cgroup.procs").write_text(pid)
            except OSError:
                pass  # exited meanwhile
        group.rmdir()


def throttling(group: Path) -> dict[str, int]:
    """The cgroup's ``cpu.stat`` counters (periods, throttled periods, throttled ns)."""
    out: dict[str, int] = {}
    for line in (group / "cpu.stat").read_text().splitlines():
        k, _, v = line.partition(" ")
        out[k] = int(v)
    return out


def run_capped(group: Path, cmd: list[str], env: dict[str, str], timeout_s: float) -> int:
    """Run ``cmd`` inside ``group`` (it joins before exec); killed on timeout or ^C."""

    def join() -> None:
        (group / "cgroup.procs").write_text(str(os.getpid()))

    child = subprocess.Popen(cmd, env=env, preexec_fn=join, start_new_session=True)
    try:
        return child.wait(timeout=timeout_s)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def commit() -> str:
    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True
    )
    dirty = subprocess.run(["git", "-C", str(repo), "diff", "--quiet", "HEAD", "--", "src"])
    return r.stdout.decode().strip() + ("+dirty src" if dirty.returncode else "")


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def corpus(manifest: Path, only: str, limit: int) -> list[dict[str, str]]:
    """The manifest's rows as ``run_corpus.py`` picks them (with their folder)."""
    from run_corpus import select_rows  # lazily: it imports the engines' modules

    rows = select_rows(manifest, only, limit)
    for r in rows:
        r["path"] = str(manifest.parent / r["file"])
    return rows


async def run_inside(
    mode: str, rows: list[dict[str, str]], cover_slack_ms: float | None = None
) -> dict[str, Any]:
    """The corpus through ``halfsec run``'s path (one session per file, real-time pace),
    in this (capped) process, with early start per ``mode`` (and, for an experiment, a
    partial's cover slack other than the product's); what became of each answered
    turn's early start is read from its ``stt.end`` mark."""
    from halfsec.audio.io import load_audio
    from halfsec.config import load_config
    from halfsec.frames import Frame, TimingMark
    from halfsec.runtime import turn_task
    from halfsec.runtime.build import build_engines
    from halfsec.runtime.file_run import run_file
    from halfsec.runtime.final_pace import FINAL_PACE
    from halfsec.runtime.session import VoiceSession
    from halfsec.trace import names

    gate = GATES[mode]
    if gate is not None:
        FINAL_PACE.min_final_ms = gate
    if cover_slack_ms is not None:
        turn_task.EARLY_COVER_SLACK_MS = cover_slack_ms
    cfg = load_config(None, [])
    engines = build_engines(cfg)

    class Tapped(VoiceSession):
        """The session, with each turn's ``stt.end`` attributes kept."""

        ends: dict[int, dict[str, Any]]
        rungs: dict[int, list[str]]

        async def events(self) -> AsyncIterator[Frame]:
            async for f in super().events():
                if isinstance(f, TimingMark) and f.name == names.MARK_STT_END:
                    self.ends[f.turn_id] = dict(f.attrs)
                if isinstance(f, TimingMark) and f.name == names.MARK_FALLBACK:
                    self.rungs.setdefault(f.turn_id, []).append(str(f.attrs.get("rung")))
                yield f

    files: list[dict[str, Any]] = []
    for r in rows:
        session = Tapped(engines, cfg.turn, cfg.session, output_rate=cfg.audio.output_rate)
        session.ends, session.rungs = {}, {}
        run = await run_file(
            session, load_audio(Path(r["path"]), max_seconds=cfg.audio.max_input_s)
        )
        res = run.summary(cfg.audio.audible_dbfs)
        t = run.answer_turn()
        end = session.ends.get(t.turn_id, {}) if t is not None else {}
        marks = t.marks if t is not None else {}
        waited = marks.get(names.MARK_STT_END, 0) - marks.get(names.MARK_STT_START, 0)
        files.append(
            {
                "file": r["file"],
                "v2v_ms": res["v2v_ms"],
                "stages": res["stages"],
                "early": end.get("early"),
                "partial_behind_ms": end.get("partial_behind_ms"),
                "partials": t.partials if t is not None else 0,
                # stt.start -> stt.end: the decode, or the deadline and a fallback rung
                "stt_wait_ms": round(waited / 1e6, 1) if waited > 0 else None,
                "fallbacks": session.rungs.get(t.turn_id, []) if t is not None else [],
                "transcript": res["transcript"],
                # None on a row with no labelled command (--only all): nothing to accept
                "accepted": accepted(res["intent"], res["slots"], r["intent"], r.get("slots"))
                if r.get("intent")
                else None,
                "premature": bool(res.get("premature_replies")),
                "errors": res["errors"],
            }
        )
        print(f"{mode} {r['file']}: v2v {res['v2v_ms']} early {end.get('early')}", file=sys.stderr)
    await engines.aclose()

    def stage(name: str) -> list[float]:
        return [f["stages"][name] for f in files if name in f["stages"]]

    v2v = [f["v2v_ms"] for f in files if f["v2v_ms"] is not None]
    early = [str(f["early"]) for f in files]
    decoded = [x for x in stage("stt_compute_ms") if x > 0]
    waits = [f["stt_wait_ms"] for f in files if f["stt_wait_ms"] is not None]
    return {
        "mode": mode,
        "min_final_ms": FINAL_PACE.min_final_ms,
        "cover_slack_ms": turn_task.EARLY_COVER_SLACK_MS,
        "files": len(files),
        "answered": len(v2v),
        "v2v_ms": {"p50": pct(v2v, 50), "p95": pct(v2v, 95), "max": pct(v2v, 100)},
        # decoded finals only (a final from a fallback rung or a cache reads 0 ms)
        "stt_compute_ms": {"p50": pct(decoded, 50), "p95": pct(decoded, 95), "n": len(decoded)},
        "stt_wait_ms": {"p50": pct(waits, 50), "p95": pct(waits, 95)},
        "stt_fallbacks": sum(1 for f in files if any(r.startswith("stt") for r in f["fallbacks"])),
        "tts_fallbacks": sum(1 for f in files if any(r.startswith("tts") for r in f["fallbacks"])),
        "endpointing_p50_ms": pct(stage("endpointing_ms"), 50),
        "reply_ready_after_eot_p50_ms": pct(stage("reply_ready_after_eot_ms"), 50),
        "early": {k: early.count(k) for k in ("none", "kept", "redone")},
        "partial_behind_p50_ms": pct(
            [f["partial_behind_ms"] for f in files if f["partial_behind_ms"] is not None], 50
        ),
        "acceptance": f"{sum(f['accepted'] is True for f in files)}"
        f"/{sum(f['accepted'] is not None for f in files)}",
        "premature": sum(f["premature"] for f in files),
        "per_file": files,
    }


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--quota", type=float, default=0.8, help="CPUs the process may use")
    ap.add_argument("--period-us", type=int, default=2000)
    ap.add_argument("--isa", default="", help="e.g. AVX2: CTranslate2's kernels capped too")
    ap.add_argument("--only", choices=["coffee", "transcribed", "all"], default="coffee")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--early", default="on,off", help="modes, comma-separated: on, off, forced")
    ap.add_argument("--manifest", default="")
    ap.add_argument("--timeout-s", type=float, default=600.0, help="per mode")
    ap.add_argument(
        "--cover-slack-ms",
        type=float,
        help="experiment: how much of the pause's audio a partial may miss and still start "
        "the reply early (product: runtime/turn_task.EARLY_COVER_SLACK_MS)",
    )
    ap.add_argument("--inside", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        rows = corpus(Path(args.manifest) if args.manifest else MANIFEST, args.only, args.limit)
        inside = asyncio.run(run_inside(args.inside, rows, args.cover_slack_ms))
        args.json.write_text(json.dumps(inside, indent=2))
        return
    modes = [m for m in args.early.split(",") if m]
    if not modes or any(m not in GATES for m in modes):
        ap.error(f"--early takes modes from {sorted(GATES)}, got {args.early!r}")
    env = dict(os.environ)
    for k in ISA_ENV if args.isa else ():
        env[k] = args.isa
    period, quota_us = cap_values(args.quota, args.period_us)
    out: dict[str, Any] = {
        "emulation": (
            f"cgroup v1 cpu quota {quota_us}/{period} us = {quota_us / period:.2f} CPUs"
            + (f"; CTranslate2 ISA capped to {args.isa}" if args.isa else "")
            + "; not a CPU without AVX-512"
        ),
        "machine": cpu_info(),  # the model and the ISA flags the emulation hides or keeps
        "commit": commit(),
        "command": " ".join(["python", *sys.argv]),
        "modes": {},
    }
    try:
        with cpu_cap(args.quota, args.period_us) as group:
            for mode in modes:
                part = Path(f"/tmp/halfsec-slow-cpu-{os.getpid()}-{mode}.json")
                cmd = [sys.executable, __file__, "--inside", mode, "--only", args.only]
                cmd += ["--limit", str(args.limit), "--json", str(part)]
                cmd += ["--manifest", args.manifest] if args.manifest else []
                slack = args.cover_slack_ms
                cmd += ["--cover-slack-ms", str(slack)] if slack is not None else []
                before, load0, t0 = throttling(group), loadavg(), time.time()
                rc = run_capped(group, cmd, env, args.timeout_s)
                after = throttling(group)
                res: dict[str, Any] = {"rc": rc}
                if part.exists():
                    res.update(json.loads(part.read_text()))
                    part.unlink()
                res["started_utc"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t0))
                res["wall_s"] = round(time.time() - t0, 1)
                res["loadavg_before_after"] = [load0, loadavg()]
                res["throttled"] = {k: after[k] - before.get(k, 0) for k in after}
                out["modes"][mode] = res
    except CgroupError as e:
        sys.exit(f"slow_cpu: {e}")
    emit(out, args.json)


if __name__ == "__main__":
    main()
