"""Logic: domain files, matcher, clause splitter, LLM streaming and fallbacks."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from pathlib import Path

import pytest
from conftest import manifest_rows
from llm_double import LLMDouble

from halfsec.errors import ConfigError
from halfsec.logic import LogicEngine, LogicOptions, ReplyClause, create_logic, load_domain
from halfsec.logic.clauses import ClauseSplitter, split_clauses
from halfsec.logic.domain import parse_domain, render_template
from halfsec.logic.domain_logic import DomainLogic
from halfsec.logic.llm import ChatClient, ChatMessage, LLMError, SSEDecoder
from halfsec.logic.matcher import Matcher
from halfsec.logic.normalize import normalize
from halfsec.logic.state import DialogueState
from halfsec.textnorm import number_words

COFFEE_SLOTS = ("size", "roast", "numberOfShots", "coffeeDrink", "milkAmount", "sugarAmount")


@pytest.fixture(scope="module")
def coffee() -> DomainLogic:
    return DomainLogic(load_domain("coffee"))


@pytest.fixture(scope="module")
def retail() -> DomainLogic:
    return DomainLogic(load_domain("retail"), LogicOptions(domain="retail"))


async def collect(engine: LogicEngine, text: str) -> list[ReplyClause]:
    return [c async for c in engine.reply(text, engine.understand(text))]


# ------------------------------------------------------------------ coffee labels

# How recognisers actually write the label values (Whisper spells numbers as digits,
# hyphenates compounds and misspells drink names).
WHISPER = {
    "eight ounce": ["8 ounce", "8-ounce", "8oz", "8 oz.", "eight ounces"],
    "twelve ounce": ["12 ounce", "12-ounce", "12oz", "12 ounces", "twelve-ounce"],
    "sixteen ounce": ["16 ounce", "16-ounce", "16oz", "16 oz"],
    "twenty ounce": ["20 ounce", "20-ounce", "20oz", "20 ounces"],
    "double shot": ["double-shot", "Double shot", "double shots"],
    "single shot": ["single-shot", "single shots"],
    "triple shot": ["triple-shot", "tripple shot", "triple shots"],
    "cappuccino": ["capuccino", "Cappuccino", "cappucino"],
    "espresso": ["expresso", "Espresso"],
    "latte": ["lotte", "Latte", "latté"],
    "americano": ["Americano", "americanos"],
    "iced mocha": ["ice mocha", "Iced Mocha"],
    "mocha": ["Mocha", "mocca"],
    "iced coffee": ["ice coffee", "iced-coffee"],
    "dark roast": ["dark-roast", "Dark Roast"],
    "light roast": ["light-roast", "lite roast"],
    "medium roast": ["medium-roast"],
}
CARRIERS = ["can I get", "I'd like", "give me", "brew", "may I have", "I want", "get me"]


def _whisperise(value: str, rng: random.Random) -> str:
    if value in WHISPER:
        return rng.choice(WHISPER[value])
    out = value
    for a, b in (("skim", "skimmed"), ("a lot of", "alot of"), ("soy", "soya")):
        if a in out and rng.random() < 0.5:
            out = out.replace(a, b)
    return out


def phrasings(slots: dict[str, str], seed: int) -> list[str]:
    """A few spoken versions of one labelled order: canonical, reordered, Whisper-like."""
    rng = random.Random(seed)
    out = []
    for style in ("canonical", "shuffled", "whisper", "whisper"):
        mods = [k for k in ("size", "roast", "numberOfShots") if k in slots]
        if style != "canonical":
            rng.shuffle(mods)
        fmt = (lambda v: v) if style != "whisper" else (lambda v: _whisperise(v, rng))
        words = [rng.choice(CARRIERS), "a"] + [fmt(slots[k]) for k in mods]
        words.append(fmt(slots["coffeeDrink"]))
        extras = [fmt(slots[k]) for k in ("milkAmount", "sugarAmount") if k in slots]
        if style != "canonical":
            rng.shuffle(extras)
        if extras:
            words.append("with " + " and ".join(extras))
        text = " ".join(words)
        if style == "whisper":
            text = text[0].upper() + text[1:] + rng.choice(["?", ".", ", please.", ""])
        out.append(text)
    return out


def coffee_rows() -> list[dict[str, str]]:
    rows = [r for r in manifest_rows() if r["intent"] == "orderDrink"]
    assert len(rows) == 150, f"expected the 150 labelled coffee orders, found {len(rows)}"
    return rows


def test_coffee_domain_uses_exactly_the_label_vocabulary() -> None:
    domain = load_domain("coffee")
    # The labels' slots, plus halfsec's own hot/iced ("make it iced"), which no label uses.
    assert set(domain.slots) == set(COFFEE_SLOTS) | {"temperature"}
    assert set(domain.intents) == {"orderDrink"}
    for row in coffee_rows():
        for pair in row["slots"].split(";"):
            slot, value = pair.split("=", 1)
            assert domain.slots[slot].value(value) is not None, pair


def test_all_150_coffee_orders_round_trip(coffee: DomainLogic) -> None:
    failures = []
    total = 0
    for i, row in enumerate(coffee_rows()):
        labels = dict(pair.split("=", 1) for pair in row["slots"].split(";"))
        for text in phrasings(labels, seed=i):
            total += 1
            u = coffee.understand(text)
            if u.intent != "orderDrink" or u.slots != labels:
                failures.append((text, labels, u))
    assert total == 600
    assert not failures, f"{len(failures)} of {total} failed, e.g. {failures[:3]}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a little bit of skim milk latte", {"milkAmount": "a little bit of skim milk"}),
        ("iced coffee with milk", {"coffeeDrink": "iced coffee", "milkAmount": "milk"}),
        ("a medium medium roast mocha", {"size": "medium", "roast": "medium roast"}),
        ("a medium mocha", {"size": "medium", "coffeeDrink": "mocha"}),
        ("light roast drip coffee", {"roast": "light roast", "coffeeDrink": "drip coffee"}),
        (
            "latte with a lot of cream and a lot of sugar",
            {"milkAmount": "a lot of cream", "sugarAmount": "a lot of sugar"},
        ),
        ("house coffee with brown sugar", {"coffeeDrink": "house coffee"}),
        ("an iced mocha", {"coffeeDrink": "iced mocha"}),
        ("a mocha with a little sweetener", {"sugarAmount": "a little bit of sweetener"}),
    ],
)
def test_overlapping_phrases_prefer_the_longest(
    coffee: DomainLogic, text: str, expected: dict[str, str]
) -> None:
    u = coffee.understand(text)
    assert u.intent == "orderDrink"
    for slot, value in expected.items():
        assert u.slots.get(slot) == value, (text, u)


@pytest.mark.parametrize(
    ("text", "slot", "value"),
    [
        ("a cappucino please", "coffeeDrink", "cappuccino"),
        ("a capu chino please", "coffeeDrink", "cappuccino"),
        ("a lattes", "coffeeDrink", "latte"),
        ("a large americcano", "coffeeDrink", "americano"),
        ("a doubleshot espresso", "numberOfShots", "double shot"),
        ("a small expreso", "coffeeDrink", "espresso"),
        ("twelve ounze mocha", "size", "twelve ounce"),
        ("a latte with almnd milk", "milkAmount", "almond milk"),
        ("a mocha with sweetner", "sugarAmount", "sweetener"),
    ],
)
def test_recognition_errors_are_repaired(
    coffee: DomainLogic, text: str, slot: str, value: str
) -> None:
    u = coffee.understand(text)
    assert u.intent == "orderDrink", u
    assert u.slots.get(slot) == value, u
    assert 0.5 <= u.confidence <= 1.0


@pytest.mark.parametrize(
    "text",
    ["what's the weather like tomorrow", "tell me a joke", "I want a pony", "", "um"],
)
def test_out_of_domain_has_no_intent(coffee: DomainLogic, text: str) -> None:
    assert coffee.understand(text).intent is None


def test_ordinary_words_are_not_repaired_into_slots(coffee: DomainLogic) -> None:
    assert "latte" not in coffee.matcher.tokens("see you later")
    assert coffee.understand("I need a break").slots == {}


def test_an_article_glued_to_a_drink_is_split(coffee: DomainLogic) -> None:
    # Whisper wrote "Alothe, please." for Piper's "A latte, please."
    assert coffee.understand("Alothe, please.").slots == {"coffeeDrink": "latte"}
    assert coffee.understand("anamericano please").slots == {"coffeeDrink": "americano"}
    assert coffee.understand("alarm please").slots == {}


@pytest.mark.parametrize(
    ("text", "slots"),
    [
        # Whisper tiny.en on the shared orders: one word of a phrase misheard, the
        # rest of the phrase (the anchor) heard right.
        (
            "an iced coffee with brown sugar and a bit of home milk?",
            {
                "coffeeDrink": "iced coffee",
                "sugarAmount": "brown sugar",
                "milkAmount": "a bit of whole milk",
            },
        ),
        (
            "Can I get a double, short, medium roast house coffee?",
            {
                "numberOfShots": "double shot",
                "roast": "medium roast",
                "coffeeDrink": "house coffee",
            },
        ),
        (
            "a triple shot mocha, over the lot of sugar.",
            {
                "numberOfShots": "triple shot",
                "coffeeDrink": "mocha",
                "sugarAmount": "a lot of sugar",
            },
        ),
    ],
)
def test_one_misheard_word_of_an_anchored_phrase_is_recovered(
    coffee: DomainLogic, text: str, slots: dict[str, str]
) -> None:
    u = coffee.understand(text)
    assert (u.intent, u.slots) == ("orderDrink", slots), u
    exact_only = Matcher(load_domain("coffee"), anchored_min_ratio=None).understand(text)
    assert exact_only.slots != slots  # what the recovery adds, not the exact phrases


@pytest.mark.parametrize(
    ("domain", "text", "slots"),
    [
        # No anchor, or too far from the phrase's word: left as heard.
        ("coffee", "a latte with horn milk", {"coffeeDrink": "latte", "milkAmount": "milk"}),
        ("coffee", "a latte from home", {"coffeeDrink": "latte"}),
        ("coffee", "a latte with milk", {"coffeeDrink": "latte", "milkAmount": "milk"}),
        # A word that is a slot value itself needs stronger evidence to be overridden.
        (
            "coffee",
            "a large iced latte please",
            {"size": "large", "temperature": "iced", "coffeeDrink": "latte"},
        ),
        ("retail", "order eight bulbs", {"quantity": "eight", "product": "light bulbs"}),
    ],
)
def test_anchored_recovery_leaves_other_words_alone(
    coffee: DomainLogic, retail: DomainLogic, domain: str, text: str, slots: dict[str, str]
) -> None:
    engine = coffee if domain == "coffee" else retail
    assert dict(engine.understand(text).slots) == slots


def test_normalize_spells_numbers_and_splits_units() -> None:
    assert normalize("12oz") == ["twelve", "oz"]
    assert normalize("A 12-ounce, Latté!") == ["a", "twelve", "ounce", "latte"]
    assert normalize("3.5 cups") == ["three", "point", "five", "cups"]
    assert normalize("1,250") == ["one", "thousand", "two", "hundred", "fifty"]
    assert normalize("the 2nd I'd") == ["the", "second", "id"]
    assert number_words(105) == "one hundred five"
    # The matcher reads every number as a cardinal; only WER reads 1100-1999 as years.
    assert normalize("1455") == "one thousand four hundred fifty five".split()
    assert number_words(1905, years=True) == "nineteen oh five"


# ------------------------------------------------------------------ replies


async def test_coffee_reply_is_natural_and_split_into_clauses(coffee: DomainLogic) -> None:
    clauses = await collect(coffee, "can I get a 12oz cappuccino with almond milk")
    assert all(c.source == "domain" for c in clauses)
    text = " ".join(c.text for c in clauses)
    # A short acknowledgement first (fast first audio), then the confirmation.
    assert clauses[0].text == "Got it."
    assert text.startswith("Got it. One twelve ounce cappuccino with almond milk, coming right up.")
    assert clauses[1].text == "One twelve ounce cappuccino with almond milk,"


async def test_reply_with_milk_and_sugar_reads_well(coffee: DomainLogic) -> None:
    clauses = await collect(coffee, "large dark roast latte with sugar and skim milk")
    assert clauses[1].text.startswith("One large dark roast latte with skim milk and sugar")


async def test_missing_required_slot_asks(coffee: DomainLogic) -> None:
    u = coffee.understand("I'd like a large with soy milk")
    assert u.intent == "orderDrink" and "coffeeDrink" not in u.slots
    clauses = [c async for c in coffee.reply("", u)]
    assert clauses[0].source == "domain"
    assert clauses[-1].text.endswith("?")


async def test_no_intent_without_llm_falls_back_politely(coffee: DomainLogic) -> None:
    clauses = await collect(coffee, "what's the weather like tomorrow")
    assert [c.source for c in clauses] == ["fallback"]
    assert "sorry" in clauses[0].text.lower()


def test_render_template_alternatives() -> None:
    t = "One[ {size}] {drink}[ with {milk} and {sugar}| with {milk}| with {sugar}]."
    assert render_template(t, {"drink": "latte"}) == "One latte."
    assert render_template(t, {"drink": "latte", "sugar": "sugar"}) == "One latte with sugar."
    assert (
        render_template(t, {"drink": "latte", "milk": "cream", "sugar": "sugar", "size": "small"})
        == "One small latte with cream and sugar."
    )
    assert render_template("[{n}|one] item", {}) == "One item"


@pytest.mark.parametrize(
    ("text", "intent", "slots"),
    [
        ("add 2 apples to my cart", "addToCart", {"quantity": "two", "product": "apples"}),
        ("Could you add a dozen eggs?", "addToCart", {"quantity": "twelve", "product": "eggs"}),
        ("put some double-A batteries in my card", "addToCart", {"product": "AA batteries"}),
        ("I need a couple of avocados", "addToCart", {"quantity": "two", "product": "avocados"}),
        ("remove the bananas from my cart", "removeFromCart", {"product": "bananas"}),
        ("take the milk out of my cart", "removeFromCart", {"product": "milk"}),
        ("what's in my cart", "viewCart", {}),
        ("where is my package", "orderStatus", {}),
        ("has my order shipped yet", "orderStatus", {}),
        ("are you open on Sunday?", "storeHours", {"day": "Sunday"}),
        ("what time do you close", "storeHours", {}),
        ("how do I get a refund", "returnItem", {}),
        ("I want to return the toothpaste", "returnItem", {"product": "toothpaste"}),
        ("add tomatoe to my cart", "addToCart", {"product": "tomatoes"}),
    ],
)
def test_retail_intents(retail: DomainLogic, text: str, intent: str, slots: dict[str, str]) -> None:
    u = retail.understand(text)
    assert (u.intent, u.slots) == (intent, slots), u


async def test_retail_replies(retail: DomainLogic) -> None:
    add = await collect(retail, "add 2 apples to my cart")
    assert add[0].text == "Done." and add[1].text == "I've added two apples to your cart."
    hours = " ".join(c.text for c in await collect(retail, "are you open on sunday"))
    assert "Sunday included" in hours
    batteries = " ".join(c.text for c in await collect(retail, "add AA batteries"))
    assert "double A batteries" in batteries
    assert (await collect(retail, "what is the meaning of life"))[0].source == "fallback"


def test_stt_prompt_has_canonical_values_not_mishearings() -> None:
    prompt = load_domain("coffee").stt_prompt()
    assert prompt.startswith("Coffee order:")
    for word in ("americano", "cappuccino", "espresso", "latte", "twelve ounce", "skim"):
        assert word in prompt
    for wrong in ("lotte", "expresso", "capuccino"):
        assert wrong not in prompt
    assert len(prompt) <= 600
    assert "lotte" not in load_domain("coffee").vocabulary


# ------------------------------------------------------------------ clause splitter


def feed_tokens(splitter: ClauseSplitter, tokens: list[str]) -> list[tuple[int, str]]:
    """(index of the token after which a clause came out, clause)."""
    out = []
    for i, tok in enumerate(tokens):
        out += [(i, c) for c in splitter.feed(tok)]
    out += [(len(tokens), c) for c in splitter.flush()]
    return out


def test_clauses_come_out_as_soon_as_they_end() -> None:
    tokens = [
        "Sure",
        ",",
        " we",
        " have",
        " oat",
        " milk",
        ",",
        " and",
        " it",
        " costs",
        " 3",
        ".",
        "5",
        " dollars",
        ".",
        " Anything",
        " else",
        "?",
    ]
    got = feed_tokens(ClauseSplitter(min_chars=12), tokens)
    assert [c for _, c in got] == [
        "Sure, we have oat milk,",
        "and it costs 3.5 dollars.",
        "Anything else?",
    ]
    # The first clause is out one token after its comma, long before the stream ends.
    assert got[0][0] == 7
    assert got[1][0] == 15


def test_no_split_in_abbreviations_initials_or_numbers() -> None:
    text = "Mr. Smith met Dr. J. Watson at 5 p.m. today. The total is 1,000.50 dollars, e.g. a lot."
    assert split_clauses(text, min_chars=40) == [
        "Mr. Smith met Dr. J. Watson at 5 p.m. today.",
        "The total is 1,000.50 dollars, e.g. a lot.",
    ]


def test_short_first_clause_is_not_split_at_comma() -> None:
    assert split_clauses("Yes, of course. Okay!") == ["Yes, of course.", "Okay!"]
    assert split_clauses("Hi, ok") == ["Hi, ok"]


def test_lists_and_markdown_are_spoken_cleanly() -> None:
    assert split_clauses("We have:\n- **lattes**\n- mochas") == ["We have:", "lattes", "mochas"]


def test_very_long_clause_is_cut_at_a_space() -> None:
    splitter = ClauseSplitter(max_chars=40)
    out = splitter.feed("word " * 30) + splitter.flush()
    assert len(out) > 2 and all(len(c) <= 41 for c in out)


# ------------------------------------------------------------------ LLM path

ANSWER = [
    "I",
    "'m",
    " not",
    " sure",
    " about",
    " the",
    " weather",
    ",",
    " but",
    " I",
    " can",
    " make",
    " you",
    " a",
    " great",
    " coffee",
    ".",
    " Would",
    " you",
    " like",
    " one",
    "?",
]


def llm_options(base_url: str, **kw: object) -> LogicOptions:
    return LogicOptions(domain="coffee", llm_base_url=base_url, llm_model="test-model", **kw)  # type: ignore[arg-type]


async def test_llm_first_clause_arrives_before_stream_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALFSEC_TEST_KEY", "sk-test")
    delay = 0.04
    async with LLMDouble(tokens=ANSWER, delay_s=delay) as llm:
        engine = DomainLogic(
            load_domain("coffee"), llm_options(llm.base_url, llm_api_key_env="HALFSEC_TEST_KEY")
        )
        text = "what's the weather like tomorrow"
        u = engine.understand(text)
        assert u.intent is None
        arrivals: list[tuple[float, ReplyClause]] = []
        async for clause in engine.reply(text, u):
            arrivals.append((time.perf_counter(), clause))
        await engine.aclose()
    assert [c.source for _, c in arrivals] == ["llm"] * len(arrivals)
    assert [c.text for _, c in arrivals] == [
        "I'm not sure about the weather,",
        "but I can make you a great coffee.",
        "Would you like one?",
    ]
    first_at = arrivals[0][0] - llm.started_at[0]
    stream_s = llm.finished_at[0] - llm.started_at[0]
    # The first clause is complete after 9 tokens of 22 (out at the 10th): it must not
    # wait for the rest (the bound leaves slack for a loaded 2-core CI machine).
    assert first_at < 16 * delay, f"first clause after {first_at * 1e3:.0f} ms"
    assert arrivals[0][0] < llm.finished_at[0] - 5 * delay
    assert stream_s >= len(ANSWER) * delay
    request = llm.requests[0]
    assert request.body["model"] == "test-model" and request.body["stream"] is True
    assert request.body["messages"][0]["role"] == "system"
    assert request.body["messages"][-1] == {"role": "user", "content": text}
    assert request.headers["Authorization"] == "Bearer sk-test"


async def test_domain_intent_does_not_call_the_llm() -> None:
    async with LLMDouble(tokens=ANSWER) as llm:
        engine = DomainLogic(load_domain("coffee"), llm_options(llm.base_url))
        clauses = await collect(engine, "a small latte")
        await engine.aclose()
    assert clauses[0].source == "domain" and llm.requests == []


@pytest.mark.parametrize("mode", ["http500", "hang", "malformed", "error_event"])
async def test_llm_failures_fall_back_politely(mode: str) -> None:
    async with LLMDouble(tokens=ANSWER, mode=mode) as llm:
        engine = DomainLogic(load_domain("coffee"), llm_options(llm.base_url, llm_timeout_s=0.3))
        t0 = time.perf_counter()
        clauses = await collect(engine, "tell me a joke")
        elapsed = time.perf_counter() - t0
        await engine.aclose()
    assert [c.source for c in clauses] == ["fallback"]
    assert "sorry" in clauses[0].text.lower()
    assert elapsed < 1.5


async def test_llm_unreachable_falls_back() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = DomainLogic(load_domain("coffee"), llm_options(f"http://127.0.0.1:{port}/v1"))
    clauses = await collect(engine, "tell me a joke")
    await engine.aclose()
    assert [c.source for c in clauses] == ["fallback"]


async def test_llm_stall_after_first_clause_keeps_what_was_said() -> None:
    tokens = ["Sorry", ",", " that", " is", " not", " on", " the", " menu", ".", " But"]
    async with LLMDouble(tokens=tokens, mode="stall") as llm:
        client = ChatClient(llm.base_url, "m", first_token_timeout_s=1.0, stall_timeout_s=0.3)
        got = []
        with pytest.raises(LLMError, match="stalled"):
            async for delta in client.stream([ChatMessage("user", "hi")]):
                got.append(delta)
        await client.aclose()
    assert got == ["Sorry", ","]


async def test_llm_client_errors_are_llm_errors() -> None:
    async with LLMDouble(mode="http500") as llm:
        client = ChatClient(llm.base_url, "m")
        with pytest.raises(LLMError, match="HTTP 500"):
            async for _ in client.stream([ChatMessage("user", "hi")]):
                pass
        await client.aclose()


def test_sse_decoder_joins_multiline_data_and_skips_comments() -> None:
    d = SSEDecoder()
    assert d.feed_line(": comment\n") is None
    assert d.feed_line("event: message\n") is None
    assert d.feed_line("data: a\n") is None
    assert d.feed_line("data:b\r\n") is None
    assert d.feed_line("\n") == "a\nb"
    assert d.feed_line("\n") is None


# ------------------------------------------------------------------ domain files

GOOD = """
name: mini
slots:
  drink:
    values:
      tea: [cup of tea]
      coffee:
intents:
  order:
    examples: ["a {drink} please"]
    required: [drink]
    reply: ["One {drink}."]
"""


def write(tmp_path: Path, text: str, name: str = "d.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_custom_domain_file_loads(tmp_path: Path) -> None:
    d = load_domain(write(tmp_path, GOOD))
    m = Matcher(d)
    assert m.understand("a cup of tea please").slots == {"drink": "tea"}


def test_toml_domain_file_loads(tmp_path: Path) -> None:
    toml = """
name = "mini"
[slots.drink.values]
tea = ["cup of tea"]
coffee = []
[intents.order]
examples = ["a {drink} please"]
reply = ["One {drink}."]
"""
    d = load_domain(write(tmp_path, toml, "d.toml"))
    assert Matcher(d).understand("coffee please").intent == "order"


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (GOOD.replace("One {drink}.", "One {drnk}."), ["intent 'order'", "'reply'", "drnk"]),
        (
            GOOD.replace('examples: ["a {drink} please"]', "examples: []"),
            ["intent 'order'", "'examples'", "add a few"],
        ),
        (
            GOOD.replace("coffee:", "coffee: [cup of tea]"),
            ["slot 'drink'", "value 'coffee'", "duplicate", "cup of tea"],
        ),
        (
            GOOD.replace("      tea: [cup of tea]", "      tea: [cup of tea\n"),
            ["line", "YAML syntax error"],
        ),
        (GOOD.replace("required: [drink]", "required: [size]"), ["'required'", "size"]),
        (GOOD.replace("name: mini", "name: mini\ncolour: red"), ["colour", "unknown field"]),
        (GOOD.replace('reply: ["One {drink}."]', 'reply: ["One [{drink}."]'), ["unclosed"]),
        (GOOD.replace("intents:", "intentz:"), ["intentz"]),
    ],
)
def test_bad_domain_files_explain_themselves(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_domain(path)
    message = str(err.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, message


def test_yaml_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nslots:\n  a: [b\nintents: {}\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+"):
        load_domain(path)


def test_unknown_domain_name_and_missing_file() -> None:
    with pytest.raises(ConfigError, match="coffee, retail"):
        load_domain("bakery")
    with pytest.raises(ConfigError, match="not found"):
        load_domain("/nonexistent/domain.yaml")


def test_parse_domain_from_text() -> None:
    assert parse_domain(GOOD, "inline").name == "mini"


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="min_confidence"):
        LogicOptions(min_confidence=2.0)
    with pytest.raises(ConfigError, match="llm_base_url"):
        LogicOptions(llm_base_url="localhost:8000")
    with pytest.raises(ConfigError, match="llm_timeout_s"):
        LogicOptions(llm_timeout_s=0)


def test_factory_builds_a_logic_engine() -> None:
    engine = create_logic(LogicOptions(domain="retail"))
    assert isinstance(engine, LogicEngine)
    assert engine.understand("add milk").intent == "addToCart"
    assert isinstance(create_logic(), DomainLogic)


async def test_reply_stream_can_be_abandoned_midway() -> None:
    """Barge-in closes the reply generator early; the LLM request must not linger."""
    async with LLMDouble(tokens=ANSWER, delay_s=0.02) as llm:
        engine = DomainLogic(load_domain("coffee"), llm_options(llm.base_url))
        gen = engine.reply("tell me a joke", engine.understand("tell me a joke"))
        first = await anext(gen)
        await gen.aclose()  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
        await engine.aclose()
    assert first.source == "llm"


def test_single_stray_word_is_not_an_order(coffee: DomainLogic) -> None:
    """Speech-command words heard on their own (measured: "go." and "no." were read as
    orderDrink and then waited 700 ms for a drink) carry no intent."""
    for text in ("go.", "no.", "No.", "yes", "stop"):
        assert coffee.understand(text).intent is None, text
    assert coffee.understand("I'd like a latte").intent == "orderDrink"


def test_one_judgement_serves_completeness_and_tail() -> None:
    """The end-of-turn policy asks ``is_complete`` then ``tail_said`` about the same
    transcript and state: the matcher runs once for both, and again for new text or a
    new state (the verdicts are those of a fresh engine)."""
    logic = DomainLogic(load_domain("coffee"))
    calls: list[str] = []
    understand = logic.matcher.understand

    def counted(text: str):  # type: ignore[no-untyped-def]
        calls.append(text)
        return understand(text)

    logic.matcher.understand = counted  # type: ignore[method-assign]
    state = DialogueState()
    text = "A latte with a bit of soy milk."
    assert logic.is_complete(text, state) is True
    assert logic.tail_said(text, state) is True
    assert calls == [text]
    assert logic.tail_said("Give me a dark roast, double shot, drip coffee.", state) is False
    assert logic.tail_said(text, DialogueState()) is True
    assert len(calls) == 3
