"""Domain files: intents, slot vocabularies and reply templates, loaded and validated.

A domain is *data*, not code, so that a shop owner can add a drink or a product
without touching Python.  That only works if a broken file fails loudly at start-up
with a message that names the file, the intent or slot, the field and the fix -- never
with a ``KeyError`` in the middle of a conversation.  Hence every check lives here, in
one place, and raises :class:`~halfsec.errors.ConfigError`.

File layout (YAML, or TOML when the name ends in ``.toml``)::

    name: coffee
    description: short text, also the LLM's context
    fallback: "Sorry, I didn't catch that."     # spoken when nothing matched
    stt_prompt_prefix: "Coffee order:"         # optional, starts the STT hint
    aliases:                                   # rewrites applied before matching
      oz: ounce                                #   (units, plurals, split words)
    slots:
      size:
        question: "What size would you like?"   # default clarifying question
        values:
          twelve ounce: [twelve ounces]          # canonical: spoken synonyms
          small:                                 # or a mapping:
            synonyms: [short]                    #   spoken variants (STT hint too)
            mishearings: [smol]                  #   recogniser errors (matched only)
            say: small                           #   how a reply speaks the value
    intents:
      orderDrink:
        examples: ["can I get a {size} {coffeeDrink}", ...]
        slots: [size, coffeeDrink]     # optional: defaults to slots used in examples
        required: [coffeeDrink]
        follow_up: [size]              # optional: asked once the required are there
        ask: {coffeeDrink: "What would you like to drink?"}
        confirm:                       # optional: read back, "yes" places the request
          - "One[ {size}] {coffeeDrink}. Is that right?"
        reply:                         # clauses; [a|b] = first alternative whose
          - "One[ {size}] {coffeeDrink}, coming right up."   # slots are all filled

How a conversation uses these (``halfsec.logic.dialogue``): a request missing a required
slot asks for it; then each ``follow_up`` slot is asked for once; then ``confirm`` is read
back (or, without it, ``reply`` is said and the request is done).  Later answers fill or
correct the open request's slots ("Large.", "no, make it iced").
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from halfsec.errors import ConfigError
from halfsec.logic.normalize import normalize
from halfsec.logic.templates import PLACEHOLDER, render_template, template_problem

# ``PLACEHOLDER`` and ``render_template`` live in ``templates``; importing them from here
# (their old home) keeps working.
__all__ = [
    "PLACEHOLDER",
    "Domain",
    "Intent",
    "Slot",
    "SlotValue",
    "load_domain",
    "parse_domain",
    "render_template",
]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PACKAGED_DOMAINS = ("coffee", "retail")
DEFAULT_FALLBACK = "Sorry, I didn't catch that. Could you say it again?"
_STT_PROMPT_MAX_CHARS = 600
"""Whisper keeps at most 224 prompt tokens; ~600 characters stays well inside."""


@dataclass(frozen=True, slots=True)
class SlotValue:
    """One canonical value and the ways people (and recognisers) say it."""

    canonical: str
    synonyms: tuple[str, ...] = ()
    mishearings: tuple[str, ...] = ()
    say: str = ""

    @property
    def spoken(self) -> str:
        """Text a reply uses for this value (``say`` or the canonical value)."""
        return self.say or self.canonical


@dataclass(frozen=True, slots=True)
class Slot:
    name: str
    values: tuple[SlotValue, ...]
    question: str = ""

    def value(self, canonical: str) -> SlotValue | None:
        for v in self.values:
            if v.canonical == canonical:
                return v
        return None


@dataclass(frozen=True, slots=True)
class Intent:
    name: str
    examples: tuple[str, ...]
    slots: tuple[str, ...]
    required: tuple[str, ...] = ()
    ask: dict[str, str] = field(default_factory=dict)
    reply: tuple[str, ...] = ()
    follow_up: tuple[str, ...] = ()
    """Slots asked for once the required ones are there, each at most once (a request
    without them is still complete: the turn ends on the short window)."""
    confirm: tuple[str, ...] = ()
    """Read-back clauses: when given, a complete request is read back and ``reply`` is
    said only once the user agrees."""


@dataclass(frozen=True, slots=True)
class Domain:
    name: str
    slots: dict[str, Slot]
    intents: dict[str, Intent]
    description: str = ""
    fallback: str = DEFAULT_FALLBACK
    aliases: dict[str, str] = field(default_factory=dict)
    stt_prompt_prefix: str = ""
    source: str = "<memory>"

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """Every canonical value and spoken synonym, in file order, without repeats.

        Mishearings are left out on purpose: biasing a recogniser towards "lotte" would
        make it write "lotte" more often.
        """
        seen: dict[str, None] = {}
        for slot in self.slots.values():
            for v in slot.values:
                for phrase in (v.canonical, *v.synonyms):
                    seen.setdefault(phrase, None)
        return tuple(seen)

    def stt_prompt(self) -> str:
        """A compact hint for the recogniser (e.g. Whisper's ``initial_prompt``).

        Phrases whose words all appeared already are skipped ("a lot of skim milk" adds
        nothing once "a lot of milk" and "skim milk" are in), so that many values fit
        in Whisper's short prompt window; shorter phrases go first for the same reason.
        """
        words: set[str] = set()
        parts: list[str] = []
        length = len(self.stt_prompt_prefix)
        for phrase in sorted(self.vocabulary, key=lambda p: len(p.split())):
            toks = set(phrase.lower().split())
            if toks <= words:
                continue
            if length + len(phrase) + 2 > _STT_PROMPT_MAX_CHARS:
                break
            words |= toks
            parts.append(phrase)
            length += len(phrase) + 2
        body = ", ".join(parts)
        return f"{self.stt_prompt_prefix} {body}.".strip() if body else self.stt_prompt_prefix


# --------------------------------------------------------------------------- loading


def load_domain(path_or_name: str | Path) -> Domain:
    """Load a domain from a file path, or a packaged one by bare name (``coffee``)."""
    text: str
    source: str
    p = Path(path_or_name)
    if isinstance(path_or_name, str) and _NAME.match(path_or_name) and not p.exists():
        res = resources.files("halfsec.logic").joinpath("domains", f"{path_or_name}.yaml")
        if not res.is_file():
            raise ConfigError(
                f"unknown domain {path_or_name!r}: packaged domains are "
                f"{', '.join(PACKAGED_DOMAINS)}; or give the path of a .yaml/.toml file"
            )
        text = res.read_text(encoding="utf-8")
        source = f"{path_or_name}.yaml"
    else:
        if not p.is_file():
            raise ConfigError(f"{p}: domain file not found; check the path")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: cannot read domain file ({e})") from e
        source = str(p)
    return parse_domain(text, source, toml=source.endswith(".toml"))


def parse_domain(text: str, source: str = "<string>", *, toml: bool = False) -> Domain:
    """Parse and validate domain text; ``source`` names the file in error messages."""
    data: Any
    if toml:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{source}: TOML syntax error: {e}; fix the syntax") from e
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or str(e)
            raise ConfigError(
                f"{source}{where}: YAML syntax error ({problem}); fix the syntax there "
                "(check indentation and quote text that contains ':' or '#')"
            ) from e
    return _Builder(source).build(data)


class _Builder:
    """Turns raw parsed data into a :class:`Domain`, with located error messages."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(f"{self.source}: {where}: {problem}; {fix}")

    def _str(self, value: Any, where: str) -> str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise self.fail(where, f"expected text, got {type(value).__name__}", "write text")
        s = str(value).strip()
        if not s:
            raise self.fail(where, "is empty", "write some text or remove the entry")
        return s

    def _str_list(self, value: Any, where: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            return (self._str(value, where),)
        if not isinstance(value, list):
            raise self.fail(where, "expected a list", "write a list of text items")
        return tuple(self._str(v, f"{where}[{i}]") for i, v in enumerate(value))

    def build(self, data: Any) -> Domain:
        if not isinstance(data, dict):
            raise self.fail("top level", "expected a mapping", "start with 'name:', 'slots:'")
        known = {
            "name",
            "description",
            "fallback",
            "aliases",
            "slots",
            "intents",
            "stt_prompt_prefix",
        }
        for key in data:
            if key not in known:
                raise self.fail(
                    f"field {key!r}", "unknown field", f"use one of {', '.join(sorted(known))}"
                )
        name = self._str(data.get("name", Path(self.source).stem), "field 'name'")
        slots = self._slots(data.get("slots") or {})
        intents = self._intents(data.get("intents"), slots)
        aliases_raw = data.get("aliases") or {}
        if not isinstance(aliases_raw, dict):
            raise self.fail("field 'aliases'", "expected a mapping", "write 'heard: meant' pairs")
        aliases = {
            self._str(k, "aliases"): self._str(v, f"aliases.{k}") for k, v in aliases_raw.items()
        }
        fallback = data.get("fallback")
        return Domain(
            name=name,
            slots=slots,
            intents=intents,
            description=str(data.get("description") or "").strip(),
            fallback=(
                self._str(fallback, "field 'fallback'")
                if fallback is not None
                else DEFAULT_FALLBACK
            ),
            aliases=aliases,
            stt_prompt_prefix=str(data.get("stt_prompt_prefix") or "").strip(),
            source=self.source,
        )

    def _slots(self, raw: Any) -> dict[str, Slot]:
        if not isinstance(raw, dict):
            raise self.fail("field 'slots'", "expected a mapping", "map slot names to values")
        slots: dict[str, Slot] = {}
        owner: dict[str, tuple[str, str]] = {}  # normalised phrase -> (slot, canonical)
        for sname, sraw in raw.items():
            where = f"slot {sname!r}"
            if not isinstance(sname, str) or not _NAME.match(sname):
                raise self.fail(where, "bad slot name", "use letters, digits and '_'")
            if isinstance(sraw, list):
                sraw = {"values": sraw}
            if not isinstance(sraw, dict):
                raise self.fail(where, "expected a mapping", "give it a 'values:' field")
            for key in sraw:
                if key not in ("values", "question"):
                    raise self.fail(
                        f"{where}, field {key!r}", "unknown field", "use 'values' or 'question'"
                    )
            vraw = sraw.get("values")
            if isinstance(vraw, list):
                vraw = {v: None for v in vraw} if all(isinstance(v, str) for v in vraw) else vraw
            if not isinstance(vraw, dict) or not vraw:
                raise self.fail(
                    f"{where}, field 'values'",
                    "is empty or not a mapping",
                    "list at least one canonical value (with its synonyms)",
                )
            values: list[SlotValue] = []
            for canon_raw, spec in vraw.items():
                canon = self._str(canon_raw, f"{where}, values")
                vwhere = f"{where}, value {canon!r}"
                if spec is None or isinstance(spec, list | str):
                    value = SlotValue(canon, self._str_list(spec, f"{vwhere}, synonyms"))
                elif isinstance(spec, dict):
                    for key in spec:
                        if key not in ("synonyms", "mishearings", "say"):
                            raise self.fail(
                                f"{vwhere}, field {key!r}",
                                "unknown field",
                                "use 'synonyms', 'mishearings' or 'say'",
                            )
                    value = SlotValue(
                        canon,
                        self._str_list(spec.get("synonyms"), f"{vwhere}, synonyms"),
                        self._str_list(spec.get("mishearings"), f"{vwhere}, mishearings"),
                        self._str(spec["say"], f"{vwhere}, say") if "say" in spec else "",
                    )
                else:
                    raise self.fail(vwhere, "expected a list or mapping", "list its synonyms")
                for phrase in (value.canonical, *value.synonyms, *value.mishearings):
                    key = " ".join(normalize(phrase))
                    if not key:
                        raise self.fail(vwhere, f"phrase {phrase!r} has no words", "remove it")
                    prev = owner.get(key)
                    if prev is not None and prev != (sname, canon):
                        raise self.fail(
                            vwhere,
                            f"duplicate phrase {phrase!r}, already used by slot {prev[0]!r} "
                            f"value {prev[1]!r}",
                            "keep each phrase under one value only",
                        )
                    owner[key] = (sname, canon)
                values.append(value)
            question = sraw.get("question")
            slots[sname] = Slot(
                sname,
                tuple(values),
                self._str(question, f"{where}, question") if question is not None else "",
            )
        return slots

    def _intents(self, raw: Any, slots: dict[str, Slot]) -> dict[str, Intent]:
        if not isinstance(raw, dict) or not raw:
            raise self.fail("field 'intents'", "missing or empty", "define at least one intent")
        intents: dict[str, Intent] = {}
        for iname, iraw in raw.items():
            where = f"intent {iname!r}"
            if not isinstance(iname, str) or not _NAME.match(iname):
                raise self.fail(where, "bad intent name", "use letters, digits and '_'")
            if not isinstance(iraw, dict):
                raise self.fail(where, "is empty", "give it 'examples:' and 'reply:'")
            allowed = ("examples", "slots", "required", "follow_up", "ask", "reply", "confirm")
            for key in iraw:
                if key not in allowed:
                    raise self.fail(
                        f"{where}, field {key!r}", "unknown field", f"use one of {allowed}"
                    )
            examples = self._str_list(iraw.get("examples"), f"{where}, field 'examples'")
            if not examples:
                raise self.fail(
                    f"{where}, field 'examples'",
                    "has no example phrasings",
                    "add a few things a user would say for this intent",
                )
            seen_examples: set[str] = set()
            used: dict[str, None] = {}
            for ex in examples:
                if ex.lower() in seen_examples:
                    raise self.fail(
                        f"{where}, field 'examples'", f"duplicate example {ex!r}", "remove one"
                    )
                seen_examples.add(ex.lower())
                for s in PLACEHOLDER.findall(ex):
                    self._known_slot(s, slots, f"{where}, field 'examples'", ex)
                    used.setdefault(s, None)
            islots = self._str_list(iraw.get("slots"), f"{where}, field 'slots'") or tuple(used)
            for s in islots:
                self._known_slot(s, slots, f"{where}, field 'slots'", s)
            required = self._str_list(iraw.get("required"), f"{where}, field 'required'")
            for s in required:
                self._known_slot(s, slots, f"{where}, field 'required'", s)
                if s not in islots:
                    raise self.fail(
                        f"{where}, field 'required'",
                        f"slot {s!r} is required but not among the intent's slots",
                        "add it to 'slots' or to an example",
                    )
            follow_up = self._str_list(iraw.get("follow_up"), f"{where}, field 'follow_up'")
            for s in follow_up:
                self._known_slot(s, slots, f"{where}, field 'follow_up'", s)
                if s not in islots or s in required:
                    raise self.fail(
                        f"{where}, field 'follow_up'",
                        f"slot {s!r} is required or not among the intent's slots",
                        "list optional slots of this intent only",
                    )
            ask_raw = iraw.get("ask") or {}
            if not isinstance(ask_raw, dict):
                raise self.fail(f"{where}, field 'ask'", "expected a mapping", "map slot: question")
            ask: dict[str, str] = {}
            for s, q in ask_raw.items():
                self._known_slot(str(s), slots, f"{where}, field 'ask'", str(s))
                ask[str(s)] = self._str(q, f"{where}, field 'ask', slot {s!r}")
            reply = self._str_list(iraw.get("reply"), f"{where}, field 'reply'")
            if not reply:
                raise self.fail(
                    f"{where}, field 'reply'", "has no reply", "add at least one reply clause"
                )
            confirm = self._str_list(iraw.get("confirm"), f"{where}, field 'confirm'")
            for text in (*reply, *ask.values(), *confirm):
                problem = template_problem(text)
                if problem:
                    raise self.fail(f"{where}, field 'reply'", problem, "fix the brackets")
                for s in PLACEHOLDER.findall(text):
                    self._known_slot(s, slots, f"{where}, field 'reply'", text)
            intents[iname] = Intent(
                iname, examples, islots, required, ask, reply, follow_up, confirm
            )
        return intents

    def _known_slot(self, name: str, slots: dict[str, Slot], where: str, text: str) -> None:
        if name not in slots:
            raise self.fail(
                where,
                f"unknown slot {name!r} in {text!r}",
                f"declare it under 'slots' or use one of: {', '.join(slots) or '(none)'}",
            )
