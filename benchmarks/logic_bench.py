"""Logic latency: ``understand`` and time to the first reply clause, in microseconds.

The logic stage sits between the final transcript and the first TTS call, so every
microsecond here is on the user-perceived path.  Phrasings are generated from the
domain's own vocabulary (canonical values, synonyms and listed mishearings, random
carriers and orders, digits for numbers), so the benchmark needs no data files.

    python benchmarks/logic_bench.py [--domain coffee] [--n 2000] [--seed 0] [--json OUT]

Prints one JSON object: p50/p95/max of ``understand``, of the first clause of
``reply`` (template path), and of both together, plus the intent hit rate.
"""

from __future__ import annotations

import asyncio
import platform
import random
import re
import statistics
import time

from _cli import bench_parser, emit, pct

from halfsec.lab.report.json import cpu_info, same_intent
from halfsec.logic.domain import PLACEHOLDER, Domain, load_domain
from halfsec.logic.domain_logic import DomainLogic
from halfsec.logic.options import LogicOptions

_DIGITS = {"eight": "8", "twelve": "12", "sixteen": "16", "twenty": "20", "two": "2"}


def generate(domain: Domain, n: int, seed: int) -> list[tuple[str, str]]:
    """(utterance, intent it should get) pairs built from the intents' examples."""
    rng = random.Random(seed)
    intents = list(domain.intents.values())
    out = []
    for _ in range(n):
        intent = rng.choice(intents)
        example = rng.choice(intent.examples)

        def fill(m: re.Match[str]) -> str:
            v = rng.choice(domain.slots[m.group(1)].values)
            phrase = rng.choice((v.canonical, *v.synonyms, *v.mishearings))
            if rng.random() < 0.3:
                phrase = " ".join(_DIGITS.get(w, w) for w in phrase.split())
            return phrase

        out.append((PLACEHOLDER.sub(fill, example), intent.name))
    return out


async def run(domain_name: str, n: int, seed: int) -> dict[str, object]:
    engine = DomainLogic(load_domain(domain_name), LogicOptions(domain=domain_name))
    cases = generate(engine.domain, n, seed)
    for text, _ in cases[:50]:  # warm caches the way a running server has them
        engine.understand(text)
    u_us: list[float] = []
    c_us: list[float] = []
    hits = 0
    for text, intent in cases:
        t0 = time.perf_counter()
        u = engine.understand(text)
        t1 = time.perf_counter()
        gen = engine.reply(text, u)
        await anext(gen)
        t2 = time.perf_counter()
        await gen.aclose()  # type: ignore[attr-defined]
        hits += same_intent(u.intent, intent)
        u_us.append((t1 - t0) * 1e6)
        c_us.append((t2 - t1) * 1e6)
    total = [a + b for a, b in zip(u_us, c_us, strict=True)]
    return {
        "domain": domain_name,
        "n": n,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": cpu_info(),
        "understand_us": {"p50": pct(u_us, 50), "p95": pct(u_us, 95), "max": pct(u_us, 100)},
        "first_clause_us": {"p50": pct(c_us, 50), "p95": pct(c_us, 95), "max": pct(c_us, 100)},
        "total_us": {
            "p50": pct(total, 50),
            "p95": pct(total, 95),
            "mean": round(statistics.fmean(total), 1),
        },
        "intent_hit_rate": round(hits / n, 4),
    }


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--domain", default="coffee")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    emit(asyncio.run(run(args.domain, args.n, args.seed)), args.json)


if __name__ == "__main__":
    main()
