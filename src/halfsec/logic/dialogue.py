"""The dialogue policy: how one user turn moves a conversation's state.

A pure function of (utterance, its understanding, the state so far) -> (next state, what
to say): no I/O, no clock, nothing kept between calls, so the runtime can run it on a
speculative transcript and throw the result away, and the end-of-turn policy can ask it
whether an utterance finishes the turn ("Large." does when the agent asked for a size).

What a turn does, given an open request (the order being taken):

* slot values that fit the request fill or correct it -- "Large." after "What size?",
  "no, make it iced" after the read-back; later values win;
* "and a cappuccino" (an adding word and a new value of the request's main slot) starts
  a second request and completes the first;
* "yes" to a read-back completes the request and says the intent's ``reply``; "no"
  alone asks what to change; "cancel" / "never mind" drops it;
* declining an optional question ("no", "doesn't matter") moves on without it;
* anything else is not about the request: the LLM answers if there is one (the
  request stays open), else the pending question is asked again.

Without an open request, a matched intent opens one; a correction right after a request
was completed ("no, make it iced") reopens that request.  Then the next prompt follows
from the domain: a missing required slot is asked for, then each ``follow_up`` slot once,
then ``confirm`` is read back, or -- without a read-back -- ``reply`` is said and the
request is done.

The cue words are English, like the shipped domains.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from halfsec.logic.clauses import split_clauses
from halfsec.logic.domain import Domain, Intent
from halfsec.logic.engine import Understanding
from halfsec.logic.normalize import normalize
from halfsec.logic.state import DialogueState, Request
from halfsec.logic.templates import render_template

SORRY = "Sorry, I didn't catch that."
WHAT_TO_CHANGE = ("Okay.", "What would you like to change?")
CANCELLED = ("Okay, I've cancelled that.", "Anything else?")
CLOSING = ("Thank you, have a nice day!",)


def _phrases(text: str) -> frozenset[tuple[str, ...]]:
    return frozenset(tuple(normalize(p)) for p in text.split(","))


_AFFIRM = _phrases(
    "yes, yeah, yep, yup, ya, correct, exactly, perfect, sure, okay, ok, alright, all right, "
    "great, right, sounds good, go ahead, please do, absolutely, definitely, of course"
)
_NEGATE = _phrases("no, nope, nah, not, wrong, incorrect")
_CORRECT = _phrases(
    "actually, instead, make it, change, rather, switch, i meant, i said, scratch that"
)
_CANCEL = _phrases("cancel, never mind, nevermind, forget it, forget about it, forget that")
_ADD = _phrases("also, another, and a, and an, plus, as well, too, one more")
_CLOSE = _phrases("that's all, that's it, nothing else, thank you, thanks, bye, goodbye")
_INDIFFERENT = _phrases(
    "any, whatever, doesn't matter, don't care, don't mind, up to you, your choice"
)


@dataclass(frozen=True, slots=True)
class Cues:
    """Dialogue-act words in an utterance (independent of the domain's slots)."""

    affirm: bool = False
    negate: bool = False
    correct: bool = False
    cancel: bool = False
    add: bool = False
    close: bool = False
    indifferent: bool = False


def cues(text: str) -> Cues:
    words = normalize(text)
    grams = {tuple(words[i : i + n]) for n in (1, 2, 3, 4) for i in range(len(words) - n + 1)}
    return Cues(
        affirm=bool(grams & _AFFIRM),
        negate=bool(grams & _NEGATE),
        correct=bool(grams & _CORRECT),
        cancel=bool(grams & _CANCEL),
        add=bool(grams & _ADD),
        close=bool(grams & _CLOSE),
        indifferent=bool(grams & _INDIFFERENT),
    )


@dataclass(frozen=True, slots=True)
class Move:
    """The policy's decision for one turn."""

    state: DialogueState
    """The next state (its chat history is the caller's to extend)."""
    say: tuple[str, ...]
    """Clauses to speak; empty: the domain has no answer (the LLM's turn, if any)."""
    retry: tuple[str, ...] = ()
    """Without an LLM (or when it fails), what to say instead of the domain's fallback:
    the pending question again."""

    @property
    def act(self) -> str:
        return self.state.last_act


class DialoguePolicy:
    """The policy for one domain.  Stateless: share it between sessions."""

    def __init__(self, domain: Domain, min_clause_chars: int = 12) -> None:
        self.domain = domain
        self.min_clause_chars = min_clause_chars

    # -- the step ---------------------------------------------------------------------
    def step(self, text: str, u: Understanding, state: DialogueState) -> Move:
        c = cues(text)
        base = replace(state, turns=state.turns + 1)
        req = state.request
        if req is None:
            return self._no_request(c, u, base)
        fit = self._fitting(u, req.intent)
        if c.cancel and not fit:
            return self._said(base, CANCELLED, "cancel", request=None)
        if not fit and u.intent in self.domain.intents and u.intent != req.intent:
            return self.advance(base, Request(u.intent, self._fitting(u, u.intent)))
        if fit:
            head = self._head(req.intent)
            if c.add and head in fit and fit[head] != req.slots.get(head):
                # "... and a cappuccino": a second request; the first is done as it stands.
                done = base.done + (req,) if self.complete(req) else base.done
                return self.advance(replace(base, done=done), Request(req.intent, fit))
            return self.advance(base, req.with_slots(fit))
        if state.confirming and c.affirm and not c.negate:
            return self._finish(base, req)
        if state.confirming and c.negate:
            return self._said(base, WHAT_TO_CHANGE, "ask", request=req)
        intent = self.domain.intents[req.intent]
        optional = state.asking is not None and state.asking not in intent.required
        if optional and (c.negate or c.indifferent):
            return self.advance(base, req)  # declined: it was asked once, not again
        return self._chat(base, self._pending(state, req))

    def _no_request(self, c: Cues, u: Understanding, base: DialogueState) -> Move:
        if base.done and (c.negate or c.correct) and not c.add:
            last = base.done[-1]
            fit = self._fitting(u, last.intent)
            if fit:  # "no, make it iced" right after the order was placed: reopen it
                return self.advance(replace(base, done=base.done[:-1]), last.with_slots(fit))
        if u.intent is not None and u.intent in self.domain.intents:
            return self.advance(base, Request(u.intent, self._fitting(u, u.intent)))
        if c.cancel and base.done:
            return self._said(replace(base, done=base.done[:-1]), CANCELLED, "cancel")
        if c.close and base.done:
            return self._said(base, CLOSING, "close")
        return self._chat(base, ())

    # -- what comes next for a request ----------------------------------------------
    def advance(self, base: DialogueState, req: Request) -> Move:
        """The next prompt for ``req``: a missing slot, the read-back, or the reply."""
        intent = self.domain.intents[req.intent]
        for slot in intent.required:
            if slot not in req.slots:
                return self._ask(base, req, intent, slot)
        for slot in intent.follow_up:
            if slot not in req.slots and slot not in req.asked:
                return self._ask(base, req.with_asked(slot), intent, slot)
        if intent.confirm:
            say = self.render(intent.confirm, req.slots)
            return Move(
                replace(base, request=req, asking=None, confirming=True, last_act="confirm"), say
            )
        return self._finish(base, req)

    def _pending(self, state: DialogueState, req: Request) -> tuple[str, ...]:
        """What the last reply asked, to ask again."""
        intent = self.domain.intents[req.intent]
        if state.confirming:
            return self.render(intent.confirm, req.slots)
        if state.asking is not None:
            # The slot's own question: an intent's ("Sure. What size ...") may open with
            # an acknowledgement that reads oddly after "Sorry, I didn't catch that."
            question = self.domain.slots[state.asking].question
            if question:
                return self.render((question,), req.slots)
            return self._ask(state, req, intent, state.asking).say
        return self.advance(state, req).say

    def complete(self, req: Request) -> bool:
        """Every required slot of the request has a value."""
        return all(s in req.slots for s in self.domain.intents[req.intent].required)

    def _ask(self, base: DialogueState, req: Request, intent: Intent, slot: str) -> Move:
        question = intent.ask.get(slot) or self.domain.slots[slot].question
        question = question or f"Which {slot} would you like?"
        say = tuple(split_clauses(render_template(question, self.spoken(req.slots))))
        return Move(replace(base, request=req, asking=slot, confirming=False, last_act="ask"), say)

    def _finish(self, base: DialogueState, req: Request) -> Move:
        say = self.render(self.domain.intents[req.intent].reply, req.slots)
        return self._said(replace(base, done=base.done + (req,)), say, "done")

    @staticmethod
    def _said(
        base: DialogueState, say: tuple[str, ...], act: str, request: Request | None = None
    ) -> Move:
        nxt = replace(base, request=request, asking=None, confirming=False, last_act=act)
        return Move(nxt, say)

    @staticmethod
    def _chat(base: DialogueState, pending: tuple[str, ...]) -> Move:
        """Not about the request: the open question stays open for the next turn."""
        retry = (SORRY, *pending) if pending else ()
        return Move(replace(base, last_act="chat"), (), retry)

    # -- helpers --------------------------------------------------------------------------
    def _fitting(self, u: Understanding, intent: str) -> dict[str, str]:
        own = self.domain.intents[intent].slots
        return {k: v for k, v in u.slots.items() if k in own}

    def _head(self, intent: str) -> str | None:
        required = self.domain.intents[intent].required
        return required[0] if required else None

    def spoken(self, slots: Mapping[str, str]) -> dict[str, str]:
        """Slot values as a reply says them (a value's ``say``, else its canonical name)."""
        out: dict[str, str] = {}
        for name, canonical in slots.items():
            slot = self.domain.slots.get(name)
            value = slot.value(canonical) if slot else None
            out[name] = value.spoken if value else canonical
        return out

    def render(self, templates: tuple[str, ...], slots: Mapping[str, str]) -> tuple[str, ...]:
        """Clauses of templates filled with the slots (empty templates say nothing)."""
        spoken = self.spoken({k: v for k, v in slots.items() if v})
        clauses: list[str] = []
        for template in templates:
            text = render_template(template, spoken)
            if text:
                clauses += split_clauses(text, self.min_clause_chars)
        return tuple(clauses)

    def describe(self, req: Request) -> str:
        """The request in words, for the LLM's context ("orderDrink: size=large, ...")."""
        values = ", ".join(f"{k}={v}" for k, v in self.spoken(req.slots).items())
        return f"{req.intent}: {values}" if values else req.intent
