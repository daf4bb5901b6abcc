"""The lab's report: turn records in, one JSON document out (schema ``halfsec.report/1``).

Every other view (terminal, HTML, store, compare) reads this document and nothing else,
so a run saved today can be re-rendered or compared after the renderers change.  The
schema is documented in ``docs/report-schema.md``; keys are only ever added within a
major schema version.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import subprocess
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from halfsec.lab.report.budget import Budget, budget_table, load_budget, stage_key
from halfsec.lab.report.stats import _num, percentiles, summarize
from halfsec.measure.wer import word_errors

__all__ = [
    "SCHEMA",
    "STAGE_ORDER",
    "accepted",
    "build_report",
    "cpu_info",
    "default_meta",
    "parse_slots",
    "same_intent",
    "stage_names",
    "write_json",
]

SCHEMA = "halfsec.report/1"
STAGE_ORDER: tuple[str, ...] = (
    "endpointing",
    "stt",
    "logic",
    "tts",
    "server_send",
    "network_buffer",
)


ISA_FLAGS: tuple[str, ...] = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
"""The CPU flags a figure depends on: CTranslate2's Whisper and onnxruntime pick their
int8 kernels by them (stop 8: the same final decode costs ~2-3x more without AVX-512/VNNI),
so a figure is only comparable with one from a CPU that has the same ones."""


def cpu_fields(text: str) -> dict[str, str]:
    """``key: value`` lines (``lscpu`` or ``/proc/cpuinfo``) as a dict, keys stripped and
    case-folded (``Model name`` and ``model name`` are one key); the first value wins
    (``/proc/cpuinfo`` repeats every key once per processor)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out.setdefault(key.strip().casefold(), value.strip())
    return out


@functools.cache
def _cpu_fields() -> dict[str, str]:
    try:
        fields = cpu_fields(Path("/proc/cpuinfo").read_text())
    except OSError:
        fields = {}
    if "model name" not in fields:  # not x86 Linux: lscpu names the CPU another way
        try:
            lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5)
            fields = cpu_fields(lscpu.stdout) | fields
        except (OSError, subprocess.SubprocessError):
            pass
    return fields


def cpu_info() -> dict[str, Any]:
    """The CPU a figure was measured on, as every report and benchmark writes it: the
    model (``lscpu``'s "Model name"), the machine's CPU count, whether it has AVX-512
    and VNNI, and which of :data:`ISA_FLAGS` it has.  One reader for all of them, so a
    figure and the machine beside it are described the same way everywhere."""
    fields = _cpu_fields()
    flags = set(fields.get("flags", "").split())
    return {
        "model": fields.get("model name") or platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "avx512f": "avx512f" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "isa": [f for f in ISA_FLAGS if f in flags],
    }


def default_meta(command: str = "", /, **extra: Any) -> dict[str, Any]:
    """The ``meta`` fields every report carries; callers add server URL, config, ..."""
    return {
        "command": command,
        "machine": {
            "hostname": platform.node(),
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "cpu": cpu_info(),
        },
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "server_url": None,
        "config": {},
        **extra,
    }


def parse_slots(value: Any) -> dict[str, str]:
    """Slots as a dict: a dict passes through, ``"k=v;k=v"`` (the corpus format) is split.

    Keys and values are compared stripped and case-folded: "Large" from the domain file and
    "large" in the reference are the same order."""
    if value is None:
        return {}
    items: list[tuple[Any, Any]]
    if isinstance(value, Mapping):
        items = list(value.items())
    else:
        items = []
        for pair in str(value).split(";"):
            if pair.strip():
                k, _, v = pair.partition("=")
                items.append((k, v))
    return {str(k).strip().casefold(): str(v).strip().casefold() for k, v in items}


def _norm(x: Any) -> str:
    return "" if x is None else str(x).strip().casefold()


def same_intent(intent: Any, ref_intent: Any) -> bool:
    """Whether the recognised intent is the reference one, stripped and case-folded like
    the slots (``orderDrink`` and ``orderdrink`` are one intent); no intent and an empty
    one are the same (nothing understood)."""
    return _norm(intent) == _norm(ref_intent)


def accepted(intent: Any, slots: Any, ref_intent: Any, ref_slots: Any) -> bool:
    """The command-acceptance rule, the one every report and benchmark counts by: the same
    intent (:func:`same_intent`) and exactly the same slots (:func:`parse_slots`: a
    missing, an extra or a different slot rejects).  One definition, so a benchmark's
    acceptance and the report's ``summary.accuracy.command_acceptance`` are one figure."""
    return same_intent(intent, ref_intent) and parse_slots(slots) == parse_slots(ref_slots)


def stage_names(turns: Sequence[Mapping[str, Any]]) -> list[str]:
    """Stages present in the records: the canonical pipeline order first, extras after."""
    seen: list[str] = []
    for t in turns:
        for k in t.get("stages") or {}:
            s = stage_key(k)
            if s not in seen:
                seen.append(s)
    ordered = [s for s in STAGE_ORDER if s in seen]
    return ordered + [s for s in seen if s not in ordered]


def _stage_value(turn: Mapping[str, Any], stage: str) -> float | None:
    st = turn.get("stages") or {}
    v = st.get(f"{stage}_ms", st.get(stage))
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _ok(turn: Mapping[str, Any]) -> bool:
    return bool(turn.get("ok", True)) and turn.get("v2v_ms") is not None


def _accuracy(turns: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pooled WER over turns with a reference transcript; command acceptance over turns with
    a reference intent (:func:`accepted`: same intent and exactly the same slots).  Failed turns
    count: a turn that crashed did not recognise the user."""
    errors = words = n_wer = 0
    for t in turns:
        ref = t.get("ref_transcript")
        if ref:
            e, w = word_errors(str(ref), str(t.get("transcript") or ""))
            errors += e
            words += w
            n_wer += 1
    wer = (
        {
            "n": n_wer,
            "errors": errors,
            "words": words,
            "rate": round(errors / words, 4) if words else None,
        }
        if n_wer
        else None
    )
    n_cmd = n_ok = intent_ok = 0
    rejected: list[dict[str, Any]] = []
    for i, t in enumerate(turns):
        if not t.get("ref_intent"):
            continue
        n_cmd += 1
        intent_ok += same_intent(t.get("intent"), t.get("ref_intent"))
        if accepted(t.get("intent"), t.get("slots"), t.get("ref_intent"), t.get("ref_slots")):
            n_ok += 1
        else:
            rejected.append(
                {
                    "index": i,
                    "file": t.get("file"),
                    "intent": t.get("intent"),
                    "ref_intent": t.get("ref_intent"),
                    "slots": parse_slots(t.get("slots")),
                    "ref_slots": parse_slots(t.get("ref_slots")),
                }
            )
    cmd = (
        {
            "n": n_cmd,
            "accepted": n_ok,
            "rate": round(n_ok / n_cmd, 4),
            "intent_correct": intent_ok,
            "intent_rate": round(intent_ok / n_cmd, 4),
            "rejected": rejected,
        }
        if n_cmd
        else None
    )
    return {"wer": wer, "command_acceptance": cmd}


def _dominant(turns: Sequence[Mapping[str, Any]], stages: list[str]) -> dict[str, Any]:
    """Which stage costs most: by share of total time (what to optimise) and by how many
    turns it dominated (is it one stage always, or different ones turn to turn)."""
    totals = {s: 0.0 for s in stages}
    counts: Counter[str] = Counter()
    for t in turns:
        if not _ok(t):
            continue
        vals = {s: _stage_value(t, s) for s in stages}
        for s, v in vals.items():
            if v is not None:
                totals[s] += v
        dom = t.get("dominant_stage")
        if dom:
            counts[stage_key(str(dom))] += 1
        elif any(v is not None for v in vals.values()):
            counts[max(vals, key=lambda s: vals[s] or -math.inf)] += 1
    name = max(totals, key=lambda s: totals[s]) if totals and any(totals.values()) else None
    return {"name": name, "turns": dict(counts.most_common())}


def _reliability(turns: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Injected faults that fired and fallback rungs that answered, counted over turns
    (a turn counts once per kind), and how many turns ran in a faulted session."""
    faults: Counter[str] = Counter()
    fallbacks: Counter[str] = Counter()
    for t in turns:
        faults.update(set(t.get("faults") or []))
        fallbacks.update(set(t.get("fallbacks") or []))
    return {
        "faults_fired": dict(faults.most_common()),
        "fallbacks": dict(fallbacks.most_common()),
        "turns_in_faulted_sessions": sum(1 for t in turns if t.get("faults_armed")),
        "turns_with_fallback": sum(1 for t in turns if t.get("fallbacks")),
    }


def build_report(
    turns: list[dict[str, Any]],
    meta: dict[str, Any] | None = None,
    budget: Budget | None = None,
) -> dict[str, Any]:
    """The whole report for a list of turn records (see ``docs/report-schema.md``).

    Latency statistics use only turns that succeeded (``ok`` and a ``v2v_ms``): a failed
    turn has no reply to time, and is listed under ``summary.failed`` instead of being
    silently averaged in.  ``budget`` defaults to ``budgets/default.toml``."""
    budget = budget if budget is not None else load_budget()
    ok_turns = [t for t in turns if _ok(t)]
    v2v = [float(t["v2v_ms"]) for t in ok_turns]
    v2v_summary = summarize(v2v)
    mean_v2v = v2v_summary.mean
    stages = stage_names(turns)
    stage_block: dict[str, Any] = {}
    for s in stages:
        vals = [v for t in ok_turns if (v := _stage_value(t, s)) is not None]
        ps = percentiles(vals, (50.0, 95.0))
        mean = sum(vals) / len(vals) if vals else math.nan
        # Share of the mean v2v: stages telescope, so shares add up to 1 across stages.
        share = sum(vals) / sum(v2v) if vals and v2v and sum(v2v) > 0 else math.nan
        stage_block[s] = {
            "n": len(vals),
            "p50": _num(ps[50.0]),
            "p95": _num(ps[95.0]),
            "mean": _num(mean),
            "share": None if not math.isfinite(share) else round(share, 4),
        }
    table = budget_table(turns, budget)
    for s, blk in stage_block.items():
        blk["budget_line"] = None
        for name, ln in table["lines"].items():
            if s in ln["stages"]:
                # A stage may share a line (network = server_send + network_buffer): the
                # verdict is the line's, the limit is for the line's sum.
                blk["budget_line"] = name
                blk["budget_limit_ms"] = ln["limit_ms"]
                blk["budget_ok"] = ln["ok"]
                break
    failed = [
        {
            "index": i,
            "file": t.get("file"),
            "error": t.get("error") or ("no reply" if t.get("v2v_ms") is None else "failed"),
        }
        for i, t in enumerate(turns)
        if not _ok(t)
    ]
    summary = {
        "n_turns": len(turns),
        "n_ok": len(ok_turns),
        "n_failed": len(failed),
        "v2v_ms": v2v_summary.as_dict(),
        "stages": stage_block,
        "dominant_stage": _dominant(turns, stages),
        "accuracy": _accuracy(turns),
        "failed": failed,
        "interruptions": sum(int(t.get("interruptions") or 0) for t in turns),
        "premature_replies": sum(int(t.get("premature_replies") or 0) for t in turns),
        "mean_v2v_ms": _num(mean_v2v),
        "reliability": _reliability(turns),
    }
    return {
        "schema": SCHEMA,
        "meta": dict(meta) if meta is not None else default_meta(),
        "summary": summary,
        "budget": table,
        "turns": [dict(t) for t in turns],
    }


def write_json(report: Mapping[str, Any], path: Path | str) -> Path:
    """Write the report as pretty, sorted-key-free JSON (key order is the schema order)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return p
