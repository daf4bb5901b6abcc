"""The built-in corpus: ``halfsec bench`` on a fresh checkout, without recordings.

100+ queries for the two shipped domains are synthesized once with Piper (three
speaking rates, 0.5 s of silence each side, 16 kHz) and cached under ``$HALFSEC_CACHE``
or ``~/.cache/halfsec/corpus-v1/``.  Synthetic speech is cleaner than real users: use
it for regressions and relative comparisons, real recordings for claims.

Its own module because it is the only part of the bench that uses a pipeline engine
(TTS): the bench proper plays recordings and never needs one.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from halfsec.audio.io import write_wav
from halfsec.audio.resample import resample
from halfsec.lab.bench.corpus import CorpusError
from halfsec.tts.factory import create_tts
from halfsec.tts.options import TTSOptions

CORPUS_VERSION = "corpus-v1"


# -- built-in corpus ----------------------------------------------------------------------
# One query a line: ``text | intent | slots``.  Intent/slots are what the shipped domain
# files should produce; intent ``-`` where the utterance is deliberately outside the
# domain.  A table rather than tuples because the data is the point: one line a query
# reads and diffs as one, and the parsed tuples (hence ``_fingerprint`` and the cached
# audio) are exactly what the tuples were.
_COFFEE_QUERIES = """
Can I get a large latte please?                             | orderDrink | size=large;coffeeDrink=latte
A small cappuccino.                                         | orderDrink | size=small;coffeeDrink=cappuccino
I'd like a medium americano.                                | orderDrink | size=medium;coffeeDrink=americano
One espresso to go please.                                  | orderDrink | coffeeDrink=espresso
Make me a dark roast iced coffee.                           | orderDrink | roast=dark roast;coffeeDrink=iced coffee
Can I have a light roast drip coffee?                       | orderDrink | roast=light roast;coffeeDrink=drip coffee
I want a double shot latte.                                 | orderDrink | numberOfShots=double shot;coffeeDrink=latte
Get me a triple shot americano with sugar.                  | orderDrink | numberOfShots=triple shot;coffeeDrink=americano;sugarAmount=sugar
A twelve ounce mocha with whole milk.                       | orderDrink | size=twelve ounce;coffeeDrink=mocha;milkAmount=whole milk
Sixteen ounce iced mocha please.                            | orderDrink | size=sixteen ounce;coffeeDrink=iced mocha
Could I please order a twenty ounce house coffee?           | orderDrink | size=twenty ounce;coffeeDrink=house coffee
An eight ounce cappuccino with soy milk.                    | orderDrink | size=eight ounce;coffeeDrink=cappuccino;milkAmount=soy milk
A large latte with almond milk.                             | orderDrink | size=large;coffeeDrink=latte;milkAmount=almond milk
I'll take a coffee with cream, no sugar.                    | orderDrink | coffeeDrink=coffee;milkAmount=cream
May I have an americano with skim milk?                     | orderDrink | coffeeDrink=americano;milkAmount=skim milk
A small drip coffee with brown sugar.                       | orderDrink | size=small;coffeeDrink=drip coffee;sugarAmount=brown sugar
A medium mocha with sweetener.                              | orderDrink | size=medium;coffeeDrink=mocha;sugarAmount=sweetener
Latte please.                                               | orderDrink | coffeeDrink=latte
Cappuccino please.                                          | orderDrink | coffeeDrink=cappuccino
Espresso.                                                   | orderDrink | coffeeDrink=espresso
An iced coffee.                                             | orderDrink | coffeeDrink=iced coffee
Can I get a large dark roast coffee with milk?              | orderDrink | size=large;roast=dark roast;coffeeDrink=coffee;milkAmount=milk
I'd like a small light roast latte with whole milk.         | orderDrink | size=small;roast=light roast;coffeeDrink=latte;milkAmount=whole milk
Give me a large double shot mocha with skim milk and sugar. | orderDrink | size=large;numberOfShots=double shot;coffeeDrink=mocha;milkAmount=skim milk;sugarAmount=sugar
A medium roast americano please.                            | orderDrink | roast=medium roast;coffeeDrink=americano
One single shot espresso.                                   | orderDrink | numberOfShots=single shot;coffeeDrink=espresso
A twelve ounce latte with a little bit of milk.             | orderDrink | size=twelve ounce;coffeeDrink=latte;milkAmount=a little bit of milk
A coffee with a bit of sugar.                               | orderDrink | coffeeDrink=coffee;sugarAmount=a bit of sugar
Could I get a grande latte?                                 | orderDrink | size=sixteen ounce;coffeeDrink=latte
A venti iced coffee please.                                 | orderDrink | size=twenty ounce;coffeeDrink=iced coffee
A tall cappuccino.                                          | orderDrink | size=twelve ounce;coffeeDrink=cappuccino
Small americano, dark roast.                                | orderDrink | size=small;roast=dark roast;coffeeDrink=americano
Large mocha with cream and sugar.                           | orderDrink | size=large;coffeeDrink=mocha;milkAmount=cream;sugarAmount=sugar
I want a triple shot cappuccino.                            | orderDrink | numberOfShots=triple shot;coffeeDrink=cappuccino
Double shot espresso please.                                | orderDrink | numberOfShots=double shot;coffeeDrink=espresso
Can I have a medium drip coffee with soy milk?              | orderDrink | size=medium;coffeeDrink=drip coffee;milkAmount=soy milk
An iced mocha with almond milk.                             | orderDrink | coffeeDrink=iced mocha;milkAmount=almond milk
A house coffee, medium roast.                               | orderDrink | roast=medium roast;coffeeDrink=house coffee
I'd like a large cappuccino with sweetener.                 | orderDrink | size=large;coffeeDrink=cappuccino;sugarAmount=sweetener
Get me a small iced coffee with milk.                       | orderDrink | size=small;coffeeDrink=iced coffee;milkAmount=milk
Make me a latte.                                            | orderDrink | coffeeDrink=latte
One americano.                                              | orderDrink | coffeeDrink=americano
A mocha please.                                             | orderDrink | coffeeDrink=mocha
Brew a large light roast coffee.                            | orderDrink | size=large;roast=light roast;coffeeDrink=coffee
Can I get an eight ounce espresso?                          | orderDrink | size=eight ounce;coffeeDrink=espresso
Twenty ounce americano with whole milk.                     | orderDrink | size=twenty ounce;coffeeDrink=americano;milkAmount=whole milk
A sixteen ounce drip coffee with brown sugar.               | orderDrink | size=sixteen ounce;coffeeDrink=drip coffee;sugarAmount=brown sugar
Medium latte, double shot.                                  | orderDrink | size=medium;numberOfShots=double shot;coffeeDrink=latte
I would like to order a coffee.                             | orderDrink | coffeeDrink=coffee
I'd like a drink.                                           | orderDrink |
Small mocha, no sugar.                                      | orderDrink | size=small;coffeeDrink=mocha
Large iced mocha with cream.                                | orderDrink | size=large;coffeeDrink=iced mocha;milkAmount=cream
Could I have a cappuccino with skim milk please?            | orderDrink | coffeeDrink=cappuccino;milkAmount=skim milk
A dark roast drip coffee.                                   | orderDrink | roast=dark roast;coffeeDrink=drip coffee
Give me a medium light roast americano.                     | orderDrink | size=medium;roast=light roast;coffeeDrink=americano
What's the weather like today?                              | -          |
Do you have wifi here?                                      | -          |
"""
_RETAIL_QUERIES = """
Add two apples to my cart.           | addToCart      | quantity=two;product=apples
Put three bananas in my cart.        | addToCart      | quantity=three;product=bananas
Add milk to the cart.                | addToCart      | product=milk
I need a dozen eggs.                 | addToCart      | product=eggs
Can I get four oranges?              | addToCart      | quantity=four;product=oranges
I want to buy bread.                 | addToCart      | product=bread
I'd like five tomatoes please.       | addToCart      | quantity=five;product=tomatoes
Two avocados please.                 | addToCart      | quantity=two;product=avocados
Butter please.                       | addToCart      | product=butter
Add some cheese.                     | addToCart      | product=cheese
Also add yogurt.                     | addToCart      | product=yogurt
Order six potatoes.                  | addToCart      | quantity=six;product=potatoes
Add ten eggs to my cart.             | addToCart      | quantity=ten;product=eggs
Put some bread in my cart.           | addToCart      | product=bread
Can I get three apples?              | addToCart      | quantity=three;product=apples
I need milk.                         | addToCart      | product=milk
Remove the bananas from my cart.     | removeFromCart | product=bananas
Remove two apples from the cart.     | removeFromCart | quantity=two;product=apples
Delete the cheese.                   | removeFromCart | product=cheese
Take the yogurt out of my cart.      | removeFromCart | product=yogurt
I don't want the tomatoes anymore.   | removeFromCart | product=tomatoes
Cancel the bread.                    | removeFromCart | product=bread
Remove milk.                         | removeFromCart | product=milk
Drop the potatoes.                   | removeFromCart | product=potatoes
What's in my cart?                   | viewCart       |
Read my cart.                        | viewCart       |
What do I have in my cart?           | viewCart       |
Show me my cart.                     | viewCart       |
How many items are in my cart?       | viewCart       |
Where is my order?                   | orderStatus    |
Has my order shipped?                | orderStatus    |
Track my order.                      | orderStatus    |
When will my order arrive?           | orderStatus    |
What's the status of my order?       | orderStatus    |
Is my order on the way?              | orderStatus    |
I haven't received my order.         | orderStatus    |
Check my order status.               | orderStatus    |
What are your store hours?           | storeHours     |
What time do you open?               | storeHours     |
What time do you close?              | storeHours     |
When do you open on Sunday?          | storeHours     | day=Sunday
Are you open tomorrow?               | storeHours     | day=tomorrow
Are you open on Saturday?            | storeHours     | day=Saturday
How late are you open today?         | storeHours     | day=today
When does the store close on Friday? | storeHours     | day=Friday
Are you open on holidays?            | storeHours     | day=holidays
Are you open this weekend?           | storeHours     | day=the weekend
I want to return the cheese.         | returnItem     | product=cheese
How do I return something?           | returnItem     |
Can I return bread?                  | returnItem     | product=bread
What is your return policy?          | returnItem     |
I'd like a return for my order.      | returnItem     |
This yogurt is broken.               | returnItem     | product=yogurt
How do returns work?                 | returnItem     |
Can I return the avocados?           | returnItem     | product=avocados
Tell me a joke.                      | -              |
Who won the game last night?         | -              |
"""


def _parse_queries(domain: str, table: str) -> tuple[tuple[str, str, str | None, str], ...]:
    """``(domain, text, intent, slots)`` per line of ``table``; a malformed line fails import."""
    out: list[tuple[str, str, str | None, str]] = []
    for line in table.strip().splitlines():
        text, intent, slots = (f.strip() for f in line.split("|"))
        out.append((domain, text, None if intent == "-" else intent, slots))
    return tuple(out)


BUILTIN_QUERIES: tuple[tuple[str, str, str | None, str], ...] = _parse_queries(
    "coffee", _COFFEE_QUERIES
) + _parse_queries("retail", _RETAIL_QUERIES)

LENGTH_SCALES = (0.9, 1.0, 1.12)
PAD_S = 0.5


def cache_root() -> Path:
    env = os.environ.get("HALFSEC_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "halfsec"


def builtin_dir(root: Path | None = None) -> Path:
    return (root or cache_root()) / CORPUS_VERSION


def _fingerprint() -> str:
    h = hashlib.sha256()
    for q in BUILTIN_QUERIES:
        h.update(repr(q).encode())
    h.update(repr((LENGTH_SCALES, PAD_S)).encode())
    return h.hexdigest()[:16]


def builtin_is_cached(root: Path | None = None) -> bool:
    d = builtin_dir(root)
    stamp = d / "fingerprint"
    return (
        (d / "manifest.tsv").is_file()
        and stamp.is_file()
        and stamp.read_text().strip() == _fingerprint()
        and all((d / f"{i:03d}.wav").is_file() for i in range(len(BUILTIN_QUERIES)))
    )


def ensure_builtin_corpus(
    root: Path | None = None, progress: Callable[[int, int], None] | None = None
) -> Path:
    """Synthesize the built-in corpus once; returns its manifest path."""
    d = builtin_dir(root)
    if builtin_is_cached(root):
        return d / "manifest.tsv"
    d.mkdir(parents=True, exist_ok=True)
    asyncio.run(_synthesize_all(d, progress))
    (d / "fingerprint").write_text(_fingerprint() + "\n")
    return d / "manifest.tsv"


async def _synthesize_all(d: Path, progress: Callable[[int, int], None] | None) -> None:
    engines = {s: create_tts(TTSOptions(length_scale=s)) for s in LENGTH_SCALES}
    rows: list[list[str]] = []
    total = len(BUILTIN_QUERIES)
    for i, (domain, text, intent, slots) in enumerate(BUILTIN_QUERIES):
        scale = LENGTH_SCALES[i % len(LENGTH_SCALES)]
        eng = engines[scale]
        chunks = [c async for c in eng.synthesize(text)]
        if not chunks:
            raise CorpusError(f"Piper produced no audio for {text!r}")
        speech = resample(np.concatenate(chunks).astype(np.int16), eng.sample_rate, 16_000)
        pad = np.zeros(int(PAD_S * 16_000), dtype=np.int16)
        name = f"{i:03d}.wav"
        write_wav(d / name, np.concatenate([pad, speech.astype(np.int16), pad]), 16_000)
        rows.append([name, text, intent or "", slots, domain, f"{scale}"])
        if progress is not None:
            progress(i + 1, total)
    _write_manifest(d, rows)


def _write_manifest(d: Path, rows: list[list[str]]) -> None:
    tmp = d / "manifest.tsv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["file", "transcript", "intent", "slots", "domain", "speaker"])
        w.writerows([r[:5] + [f"piper-joe-ls{r[5]}"] for r in rows])
    tmp.replace(d / "manifest.tsv")
