"""Multi-turn coffee conversations through the real pipeline: is the order right at the end,
and are follow-up turns as fast as first turns?

    python benchmarks/conversation_bench.py [--only synthetic|human|all] [--limit N]
        [--set turn.silence_ms=250] [--json OUT]

Each conversation is a list of utterances played into ONE session, each once the reply
to the previous one has finished playing (``runtime.file_run.run_conversation``, the
code path of ``halfsec run --conversation``): VAD, end of turn, Whisper, the dialogue
policy, Piper, at real-time pace.

* ``synthetic``: ~20 two- and three-turn conversations ("I'd like a latte" / "Large." /
  "Iced, please."; "A small americano." / "No, make it a large." ...) spoken by Piper at
  three speaking rates, synthesized once and cached under ``$HALFSEC_CACHE`` or
  ``~/.cache/halfsec/conversations-v1/``.
* ``human``: real people from ``../shared/speech``: a crowd-sourced coffee order
  (Picovoice), then a Speech Commands "yes" (or "no" and a Piper correction); orders
  without a size get a Piper "Large." in between.  The first matching rows of the
  manifest, not a selection by result.

A conversation is right when it ends with exactly the expected order (every slot, no
extra) in the expected state (read back and open, or confirmed and placed).  Reported:
that share, and v2v of first turns vs follow-up turns (the one v2v rule of ``measure``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _cli import bench_parser, emit, pct
from _speech import SPEECH, manifest_rows
from rich.console import Console
from rich.table import Table

from halfsec.audio.io import load_audio, write_wav
from halfsec.audio.resample import resample
from halfsec.config import load_config
from halfsec.lab.bench.builtin_corpus import LENGTH_SCALES, PAD_S, cache_root
from halfsec.lab.report.json import cpu_info
from halfsec.runtime.build import build_engines
from halfsec.runtime.engines import Engines
from halfsec.runtime.file_run import run_conversation
from halfsec.runtime.session import VoiceSession
from halfsec.tts.factory import create_tts
from halfsec.tts.options import TTSOptions

console = Console(stderr=True)
CACHE_VERSION = "conversations-v1"

# One conversation a line: utterances separated by " / ", then "=>", the expected final
# order (k=v;k=v) and whether it ends "open" (read back, awaiting yes) or "placed".
_SYNTHETIC = """
I'd like a latte. / Large. / Iced, please.              => coffeeDrink=latte;size=large;temperature=iced | open
A small americano. / No, make it a large.                => coffeeDrink=americano;size=large | open
Can I get a cappuccino? / Medium, please.                => coffeeDrink=cappuccino;size=medium | open
A large mocha. / Actually, make it a small. / Yes, that's right. => coffeeDrink=mocha;size=small | placed
An espresso, please. / Small. / Yes.                     => coffeeDrink=espresso;size=small | placed
I'll have a drip coffee. / A large one.                  => coffeeDrink=drip coffee;size=large | open
A medium latte with almond milk. / No, with soy milk.    => coffeeDrink=latte;size=medium;milkAmount=soy milk | open
Could I get a house coffee? / Small, please. / Actually, make it iced. => coffeeDrink=house coffee;size=small;temperature=iced | open
A latte. / Twelve ounce.                                 => coffeeDrink=latte;size=twelve ounce | open
I want a double shot americano. / Large.                 => coffeeDrink=americano;numberOfShots=double shot;size=large | open
A small iced latte. / Yes.                               => coffeeDrink=latte;size=small;temperature=iced | placed
Can I have a cappuccino with sugar? / Large. / No, make it a medium. => coffeeDrink=cappuccino;sugarAmount=sugar;size=medium | open
A dark roast coffee, please. / Medium.                   => coffeeDrink=coffee;roast=dark roast;size=medium | open
I'd like a mocha. / Sixteen ounce. / Yes, please.        => coffeeDrink=mocha;size=sixteen ounce | placed
A large cappuccino. / No, make it a latte.               => coffeeDrink=latte;size=large | open
Espresso. / Doesn't matter. / Yes.                       => coffeeDrink=espresso | placed
A small latte with whole milk. / No, skim milk.          => coffeeDrink=latte;size=small;milkAmount=skim milk | open
Can I get an americano? / Medium. / Make it hot.         => coffeeDrink=americano;size=medium;temperature=hot | open
A medium drip coffee with cream. / Make it a large.      => coffeeDrink=drip coffee;size=large;milkAmount=cream | open
I'd like an iced mocha. / Small.                         => coffeeDrink=iced mocha;size=small | open
A latte, please. / Large. / Yes.                         => coffeeDrink=latte;size=large | placed
"""


@dataclass(frozen=True)
class Conversation:
    name: str
    turns: tuple[str, ...]
    """Utterances: text for Piper, or ``file:PATH`` for a recording."""
    expect: dict[str, str]
    placed: bool


def _slots(text: str) -> dict[str, str]:
    return dict(kv.strip().split("=", 1) for kv in text.split(";") if kv.strip())


def synthetic() -> list[Conversation]:
    out = []
    for i, line in enumerate(_SYNTHETIC.strip().splitlines()):
        said, _, want = line.partition("=>")
        slots, _, state = want.partition("|")
        turns = tuple(t.strip() for t in said.split(" / "))
        out.append(Conversation(f"s{i:02d}", turns, _slots(slots), state.strip() == "placed"))
    return out


def human(limit: int = 8) -> list[Conversation]:
    """Real orders, answered with real "yes" / "no" where the corpus has them."""
    rows = manifest_rows()
    orders = [r for r in rows if r["intent"] == "orderDrink" and float(r["duration_s"]) < 8.0]
    yes = [f"file:{SPEECH / r['file']}" for r in rows if "speechcommands_yes" in r["file"]]
    no = [f"file:{SPEECH / r['file']}" for r in rows if "speechcommands_no_" in r["file"]]
    sized = [r for r in orders if "size=" in r["slots"]]
    unsized = [r for r in orders if "size=" not in r["slots"]]
    out: list[Conversation] = []
    for i, r in enumerate(sized[: limit // 2]):
        want = _slots(r["slots"])
        order = f"file:{SPEECH / r['file']}"
        if i % 2 == 0:  # order / yes: placed as said
            out.append(Conversation(f"h{i:02d}", (order, yes[i // 2 % len(yes)]), want, True))
        else:  # order / no / "Make it a small." (Piper): read back with the new size
            want = {**want, "size": "small" if want.get("size") != "small" else "large"}
            fix = f"Make it a {want['size']}."
            out.append(Conversation(f"h{i:02d}", (order, no[i // 2 % len(no)], fix), want, False))
    for j, r in enumerate(unsized[: limit - len(out)]):
        # order / "Large." (Piper, answering "What size?") / yes
        want = {**_slots(r["slots"]), "size": "large"}
        turns = (f"file:{SPEECH / r['file']}", "Large.", yes[j % len(yes)])
        out.append(Conversation(f"h{len(out):02d}", turns, want, True))
    return out


# -- audio ---------------------------------------------------------------------------------
class Voice:
    """Piper at the built-in corpus's speaking rates, each utterance cached once."""

    def __init__(self) -> None:
        self.dir = cache_root() / CACHE_VERSION
        self.dir.mkdir(parents=True, exist_ok=True)
        self._engines: dict[float, Any] = {}

    async def say(self, text: str, scale: float) -> np.ndarray:
        key = hashlib.sha256(repr((text, scale, PAD_S)).encode()).hexdigest()[:16]
        path = self.dir / f"{key}.wav"
        if path.is_file():
            return load_audio(path)
        if scale not in self._engines:
            self._engines[scale] = create_tts(TTSOptions(length_scale=scale))
        eng = self._engines[scale]
        chunks = [c async for c in eng.synthesize(text)]
        speech = resample(np.concatenate(chunks).astype(np.int16), eng.sample_rate, 16_000)
        pad = np.zeros(int(PAD_S * 16_000), dtype=np.int16)
        pcm = np.concatenate([pad, speech.astype(np.int16), pad])
        write_wav(path, pcm, 16_000)
        return pcm


async def audio_of(conv: Conversation, voice: Voice, scale: float) -> list[np.ndarray]:
    out = []
    for t in conv.turns:
        out.append(load_audio(Path(t[5:])) if t.startswith("file:") else await voice.say(t, scale))
    return out


# -- the run -------------------------------------------------------------------------------
async def run_one(
    conv: Conversation, pcms: list[np.ndarray], engines: Engines, cfg: Any
) -> dict[str, Any]:
    session = VoiceSession(engines, cfg.turn, cfg.session, output_rate=cfg.audio.output_rate)
    runs = await run_conversation(session, pcms)
    turns = []
    for i, (utterance, run) in enumerate(zip(conv.turns, runs, strict=True), start=1):
        s = run.summary(cfg.audio.audible_dbfs)
        d = run.dialogue
        turns.append(
            {
                "turn": i,
                "said": Path(utterance).name if utterance.startswith("file:") else utterance,
                "transcript": s["transcript"],
                "reply_text": s["reply_text"],
                "v2v_ms": s["v2v_ms"],
                "endpointing_ms": s["stages"].get("endpointing_ms"),
                "act": d.last_act if d is not None else None,
                "errors": s["errors"],
            }
        )
    final = runs[-1].dialogue
    order = final.order if final is not None else None
    got = dict(order.slots) if order is not None else None
    placed = final is not None and final.request is None and bool(final.done)
    return {
        "name": conv.name,
        "turns": turns,
        "expected": conv.expect,
        "expected_state": "placed" if conv.placed else "open",
        "final_order": got,
        "final_state": "placed" if placed else "open",
        "correct": got == conv.expect and placed == conv.placed,
        "dialogue": final.as_dict() if final is not None else None,
    }


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    first = [t["v2v_ms"] for r in results for t in r["turns"][:1] if t["v2v_ms"] is not None]
    follow = [t["v2v_ms"] for r in results for t in r["turns"][1:] if t["v2v_ms"] is not None]
    n_turns = sum(len(r["turns"]) for r in results)

    def stats(xs: list[float]) -> dict[str, Any]:
        mean = round(sum(xs) / len(xs), 1) if xs else None
        return {"n": len(xs), "p50": pct(xs, 50), "p95": pct(xs, 95), "mean": mean}

    return {
        "conversations": len(results),
        "correct": sum(1 for r in results if r["correct"]),
        "correct_share": round(sum(1 for r in results if r["correct"]) / len(results), 4)
        if results
        else None,
        "turns": n_turns,
        "unanswered_turns": n_turns - len(first) - len(follow),
        "v2v_first_turn_ms": stats(first),
        "v2v_follow_up_ms": stats(follow),
        "wrong": [
            {
                "name": r["name"],
                "expected": r["expected"],
                "got": r["final_order"],
                "state": r["final_state"],
                "transcripts": [t["transcript"] for t in r["turns"]],
            }
            for r in results
            if not r["correct"]
        ],
    }


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--only", choices=["synthetic", "human", "all"], default="all")
    ap.add_argument("--limit", type=int, default=0, help="at most N conversations per set")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    sets: dict[str, list[Conversation]] = {}
    if args.only in ("synthetic", "all"):
        sets["synthetic"] = synthetic()
    if args.only in ("human", "all"):
        sets["human"] = human()
    if args.limit:
        sets = {k: v[: args.limit] for k, v in sets.items()}

    cfg = load_config(None, args.overrides)
    voice = Voice()

    async def prepare() -> dict[str, list[list[np.ndarray]]]:
        out: dict[str, list[list[np.ndarray]]] = {}
        for name, convs in sets.items():
            out[name] = [
                await audio_of(c, voice, LENGTH_SCALES[i % len(LENGTH_SCALES)])
                for i, c in enumerate(convs)
            ]
        return out

    with console.status("synthesizing (cached after the first run)..."):
        audio = asyncio.run(prepare())
    voice._engines.clear()
    engines = build_engines(cfg)
    results: dict[str, list[dict[str, Any]]] = {}

    async def go() -> None:
        for name, convs in sets.items():
            results[name] = []
            for conv, pcms in zip(convs, audio[name], strict=True):
                r = await run_one(conv, pcms, engines, cfg)
                mark = "[green]ok[/green]" if r["correct"] else "[red]WRONG[/red]"
                console.print(f"{name} {conv.name} {mark} {r['final_order']} ({r['final_state']})")
                results[name].append(r)

    t0 = time.time()
    asyncio.run(go())
    summary = {name: summarize(rs) for name, rs in results.items()}
    cpu = cpu_info()
    meta = {
        "wall_s": round(time.time() - t0, 1),
        "config_overrides": args.overrides,
        "machine": f"{cpu['model']} cores={os.cpu_count()} python={platform.python_version()}",
        "cpu_info": cpu,
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python"] + sys.argv),
    }
    t = Table(title="conversations through the pipeline")
    for col in ("set", "correct", "v2v first p50/p95", "v2v follow-up p50/p95", "unanswered"):
        t.add_column(col)
    for name, s in summary.items():
        f, u = s["v2v_first_turn_ms"], s["v2v_follow_up_ms"]
        t.add_row(
            name,
            f"{s['correct']}/{s['conversations']} ({s['correct_share']:.0%})",
            f"{f['p50']} / {f['p95']} (n={f['n']})",
            f"{u['p50']} / {u['p95']} (n={u['n']})",
            str(s["unanswered_turns"]),
        )
    console.print(t)
    emit({"summary": summary, "meta": meta, "conversations": results}, args.json)


if __name__ == "__main__":
    main()
