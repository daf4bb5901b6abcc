"""Command acceptance of the logic stage on real recogniser output, offline, in seconds.

``run_corpus.py`` needs ~25 minutes of audio, Whisper and Piper to say whether the
matcher understood the 150 shared coffee orders; the matcher itself only ever sees
the transcripts.  This benchmark replays the transcripts Whisper tiny.en wrote in
earlier runs (``benchmarks/data/nlu_transcripts.json``, collected from run_corpus and
eot_bench JSONs with ``--collect``) through the domain logic, with the matcher's
one-word-off phrase recovery on and off (``Matcher(anchored_min_ratio=None)``), and
reports what the recovery buys and what it breaks:

* acceptance (intent and every slot right) on the speakers of the ``tune`` half, the
  ``heldout`` half (the end-of-turn lab's speaker split) and all; the threshold sweep
  picks on ``tune`` only;
* false recoveries: orders right without recovery and wrong with it, and slot values
  the recovery changed to something the label does not say;
* changes on text that is not a coffee order: the retail domain's generated requests,
  the shared corpus' other speech and the Piper hesitation set (through coffee and
  retail), and the Piper coffee orders;
* ``is_complete`` and ``tail_said`` verdicts that change on the pause transcripts of
  the end-of-turn evidence (the end-of-turn policy reads them: a new ``True`` at a
  pause where the user went on is a premature reply risk);
* time per ``understand`` call.

    python benchmarks/nlu_bench.py [--json OUT]
    python benchmarks/nlu_bench.py --collect RUN_CORPUS_OR_EOT.json ...  # add data
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from _cli import bench_parser, emit, pct
from logic_bench import generate

from halfsec.lab.report.json import accepted, cpu_info, parse_slots
from halfsec.logic.domain import load_domain
from halfsec.logic.domain_logic import DomainLogic
from halfsec.logic.engine import Understanding
from halfsec.logic.matcher import ANCHORED_MIN_RATIO, Matcher
from halfsec.logic.state import DialogueState

DATA = Path(__file__).resolve().parent / "data" / "nlu_transcripts.json"
SWEEP = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, None)


def _name(path: str) -> str:
    return Path(path).name.split(".")[0]


def collect(paths: list[str], data: dict[str, Any]) -> dict[str, Any]:
    """Add the transcripts of run_corpus (``files``) and eot_bench evidence (a list of
    recordings with ``pauses``) JSONs to ``data``; a repeated (name, text) is kept once."""
    orders: list[dict[str, str]] = data.setdefault("orders", [])
    pauses: list[dict[str, Any]] = data.setdefault("pauses", [])
    splits: dict[str, str] = data.setdefault("splits", {})
    seen_o = {(o["name"], o["transcript"]) for o in orders}
    seen_p = {(p["name"], p["transcript"], p["resumed"]) for p in pauses}
    for path in paths:
        doc = json.loads(Path(path).read_text())
        if isinstance(doc, dict):
            for f in doc.get("files", []):
                key = (_name(f["input"]), f.get("transcript") or "")
                if f.get("ref_intent") and key not in seen_o:
                    seen_o.add(key)
                    orders.append(
                        {
                            "name": key[0],
                            "transcript": key[1],
                            "intent": f["ref_intent"],
                            "slots": f["ref_slots"],
                            "source": Path(path).name,
                        }
                    )
        else:
            for rec in doc:
                splits[rec["name"]] = rec["split"]
                for p in rec["pauses"]:
                    pk = (rec["name"], p["transcript"], p["resume_ms"] is not None)
                    if pk not in seen_p:
                        seen_p.add(pk)
                        pauses.append(
                            {
                                "name": pk[0],
                                "set": rec["set"],
                                "transcript": pk[1],
                                "resumed": pk[2],
                            }
                        )
    return data


def _right(u: Understanding, order: dict[str, str]) -> bool:
    """The report's acceptance rule (``lab.report.json.accepted``), so this benchmark's
    figure and run_corpus's are one figure."""
    return accepted(u.intent, u.slots, order["intent"], order["slots"])


def acceptance(m: Matcher, base: Matcher, orders: list[dict[str, str]]) -> dict[str, Any]:
    """Acceptance of ``m`` on ``orders``, and what it broke against ``base``."""
    ok = broken = wrong_values = 0
    misses: list[str] = []
    for o in orders:
        u, b = m.understand(o["transcript"]), base.understand(o["transcript"])
        right = _right(u, o)
        ok += right
        broken += _right(b, o) and not right
        got, was, labels = parse_slots(u.slots), parse_slots(b.slots), parse_slots(o["slots"])
        wrong_values += sum(1 for k, v in got.items() if was.get(k) != v and labels.get(k) != v)
        if not right:
            misses.append(o["transcript"])
    n = len(orders)
    return {
        "right": ok,
        "of": n,
        "acceptance": round(ok / n, 4) if n else None,
        "false_recoveries": broken,
        "wrong_slot_values": wrong_values,
        "misses": misses,
    }


def changed(m: Matcher, base: Matcher, texts: list[str]) -> list[str]:
    out = []
    for t in texts:
        u, b = m.understand(t), base.understand(t)
        if (u.intent, u.slots) != (b.intent, b.slots):
            out.append(f"{t!r}: {b.intent} {dict(b.slots)} -> {u.intent} {dict(u.slots)}")
    return out


def run(data: dict[str, Any], ratio: float | None) -> dict[str, Any]:
    coffee, retail = load_domain("coffee"), load_domain("retail")
    base = Matcher(coffee, anchored_min_ratio=None)
    splits: dict[str, str] = data["splits"]
    orders: list[dict[str, str]] = data["orders"]
    halves = {
        "tune": [o for o in orders if splits.get(o["name"]) == "tune"],
        "heldout": [o for o in orders if splits.get(o["name"]) == "heldout"],
        "all": orders,
    }
    sweep: list[dict[str, Any]] = []
    for r in SWEEP:
        m = Matcher(coffee, anchored_min_ratio=r)
        tune = acceptance(m, base, halves["tune"])
        tune.pop("misses")
        sweep.append({"ratio": r, "tune": tune})
    # The pick: best tune acceptance with no false recovery; on a tie the strictest.
    safe = [s for s in sweep if s["tune"]["false_recoveries"] == 0]
    top = max(s["tune"]["right"] for s in safe)
    chosen = max((s["ratio"] or 1.0) for s in safe if s["tune"]["right"] == top)

    m = Matcher(coffee, anchored_min_ratio=ratio)
    result: dict[str, Any] = {
        "ratio": ratio,
        "chosen_on_tune": chosen,
        "sweep": sweep,
        "halves": {k: acceptance(m, base, v) for k, v in halves.items()},
        "off": {k: acceptance(base, base, v)["right"] for k, v in halves.items()},
    }
    # The last quiet run on its own (the figure run_corpus would print).
    quiet = [o for o in orders if o["source"] == "coffee150.json"]
    result["coffee150"] = {
        "on": acceptance(m, base, quiet)["right"],
        "off": acceptance(base, base, quiet)["right"],
        "of": len(quiet),
    }

    pauses: list[dict[str, Any]] = data["pauses"]
    other = [p["transcript"] for p in pauses if p["set"] != "coffee"]
    piper_orders = [p["transcript"] for p in pauses if p["set"] == "hesitation"]
    r_base = Matcher(retail, anchored_min_ratio=None)
    r_on = Matcher(retail, anchored_min_ratio=ratio)
    retail_texts = [t for t, _ in generate(retail, 2000, 0)]
    coffee_texts = [t for t, _ in generate(coffee, 2000, 0)]
    result["changes"] = {
        "coffee_generated": changed(m, base, coffee_texts),
        "retail_generated": changed(r_on, r_base, retail_texts),
        "other_speech_through_coffee": changed(m, base, other),
        "other_speech_through_retail": changed(r_on, r_base, other),
        "piper_hesitation_orders": changed(m, base, piper_orders),
    }

    # is_complete at every pause of the end-of-turn evidence, with and without.
    on_logic, off_logic = DomainLogic(coffee), DomainLogic(coffee)
    on_logic.matcher, off_logic.matcher = m, base
    flips: list[dict[str, Any]] = []
    tails: list[dict[str, Any]] = []
    for p in pauses:
        a = on_logic.is_complete(p["transcript"], DialogueState())
        b = off_logic.is_complete(p["transcript"], DialogueState())
        if a != b:
            flips.append({**p, "before": b, "after": a})
        ta = on_logic.tail_said(p["transcript"], DialogueState())
        tb = off_logic.tail_said(p["transcript"], DialogueState())
        if ta != tb:
            tails.append({**p, "before": tb, "after": ta})
    result["is_complete"] = {"pauses": len(pauses), "changed": flips}
    result["tail_said"] = {"pauses": len(pauses), "changed": tails}

    texts = [o["transcript"] for o in orders] + [p["transcript"] for p in pauses]
    timing: dict[str, Any] = {}
    for label, matcher in (("on", m), ("off", base)):
        for t in texts:  # warm the repair cache, as a running server has it
            matcher.understand(t)
        us: list[float] = []
        for _ in range(5):
            for t in texts:
                t0 = time.perf_counter()
                matcher.understand(t)
                us.append((time.perf_counter() - t0) * 1e6)
        timing[label] = {q: pct(us, p) for q, p in (("p50", 50), ("p95", 95), ("max", 100))}
    result["understand_us"] = timing
    return result


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--collect", nargs="+", metavar="JSON", help="add transcripts to --data")
    ap.add_argument("--ratio", type=float, default=ANCHORED_MIN_RATIO)
    args = ap.parse_args()
    path = Path(args.data)
    if args.collect:
        old = json.loads(path.read_text()) if path.exists() else {}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(collect(args.collect, old), indent=1) + "\n")
        print(f"{path}: {sum(len(v) for v in json.loads(path.read_text()).values())} records")
        return
    if not path.exists():
        sys.exit(f"{path}: no transcripts; add some with --collect RUN_CORPUS.json")
    result = run(json.loads(path.read_text()), args.ratio)
    result["machine"] = f"{platform.machine()} python={platform.python_version()}"
    result["cpu"] = cpu_info()
    result["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    result["command"] = " ".join(["python", *sys.argv])
    h = result["halves"]
    err = sys.stderr  # the summary on stderr, the JSON on stdout (and in --json OUT)
    print(
        f"acceptance with recovery (ratio {args.ratio}): "
        + ", ".join(f"{k} {v['right']}/{v['of']}" for k, v in h.items())
        + f"; without: {result['off']}; run coffee150: {result['coffee150']}",
        file=err,
    )
    print(
        f"false recoveries {h['all']['false_recoveries']}, wrong slot values "
        f"{h['all']['wrong_slot_values']}; chosen on tune: {result['chosen_on_tune']}",
        file=err,
    )
    print("changes elsewhere:", {k: len(v) for k, v in result["changes"].items()}, file=err)
    print(
        "verdicts changed at pauses: is_complete",
        len(result["is_complete"]["changed"]),
        "tail_said",
        len(result["tail_said"]["changed"]),
        file=err,
    )
    print("understand us:", result["understand_us"], file=err)
    emit(result, args.json)


if __name__ == "__main__":
    main()
