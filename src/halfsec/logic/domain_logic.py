"""The logic engine: domain templates first, an LLM for the rest, never silence.

Order of preference, and why:

1. a matched intent answers from its template (source ``domain``): ~0 ms, and the
   answer is exactly what the shop wants said;
2. with required slots missing it asks for them instead of guessing (``domain``);
3. anything else goes to the LLM when one is configured (source ``llm``), streamed
   through the clause splitter so TTS can start on the first clause while the model
   is still writing the rest;
4. without an LLM -- or when it fails or is too slow -- a short polite fallback
   (source ``fallback``), because a voice agent that says nothing sounds broken.

Within a conversation (:meth:`DomainLogic.respond`) the same order holds, with the
dialogue policy (``logic.dialogue``) deciding from the conversation so far: follow-up
questions, corrections and the read-back come from the domain, and the LLM gets the
conversation's chat history (within ``llm_history_tokens``) and the open request.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

from halfsec.logic.clauses import ClauseSplitter
from halfsec.logic.dialogue import DialoguePolicy, Move
from halfsec.logic.domain import Domain, Intent
from halfsec.logic.engine import DialogueTurn, LogicEngine, ReplyClause, Understanding
from halfsec.logic.llm import ChatClient, ChatMessage, LLMError, trim_history
from halfsec.logic.matcher import Matcher
from halfsec.logic.options import LogicOptions
from halfsec.logic.state import DialogueState
from halfsec.logic.templates import PLACEHOLDER

log = logging.getLogger(__name__)

_DEFAULT_SYSTEM = (
    "You are the voice of {name}: {description} Your words are spoken aloud, so answer "
    "in one or two short, friendly sentences, with no lists, markdown or emoji. If a "
    "request is outside what you can do, say so briefly and offer what you can do."
)


def _tail(intent: Intent) -> frozenset[str]:
    """Slots that some example of ``intent`` says after its first required slot."""
    out: set[str] = set()
    for example in intent.examples:
        said = PLACEHOLDER.findall(example)
        first = next((i for i, s in enumerate(said) if s in intent.required), None)
        if first is not None:
            out.update(said[first + 1 :])
    return frozenset(out)


class DomainLogic(LogicEngine):
    """:class:`LogicEngine` for one domain file, with an optional LLM behind it."""

    name = "domain"

    def __init__(self, domain: Domain, options: LogicOptions | None = None) -> None:
        self.domain = domain
        self.options = options or LogicOptions(domain=domain.name)
        self.matcher = Matcher(domain, min_confidence=self.options.min_confidence)
        self.policy = DialoguePolicy(domain, self.options.min_clause_chars)
        self._tails = {name: _tail(intent) for name, intent in domain.intents.items()}
        """Per intent, the slots its examples say after a required one (``tail_said``)."""
        self._judged: tuple[str, DialogueState, Understanding, Move] | None = None
        """The last ``_judge``: the end-of-turn policy asks ``is_complete`` and then
        ``tail_said`` about the same transcript and state, and one judgement does both."""
        self.llm: ChatClient | None = None
        if self.options.llm_base_url:
            self.llm = ChatClient.from_env(
                self.options.llm_base_url,
                self.options.llm_model,
                self.options.llm_api_key_env,
                connect_timeout_s=self.options.llm_connect_timeout_s,
                first_token_timeout_s=self.options.llm_timeout_s,
                stall_timeout_s=self.options.llm_timeout_s,
                max_tokens=self.options.llm_max_tokens,
                temperature=self.options.llm_temperature,
            )
        self.system_prompt = self.options.llm_system_prompt or _DEFAULT_SYSTEM.format(
            name=f"the {domain.name} assistant",
            description=domain.description or "a helpful shop assistant.",
        )

    def understand(self, text: str) -> Understanding:
        return self.matcher.understand(text)

    def is_complete(self, text: str, state: DialogueState | None = None) -> bool | None:
        """Unfinished when the turn would only ask for a required slot ("a large,"
        with no drink yet); finished when it moves the conversation on otherwise
        (answers the question, corrects, confirms); None when it is not about the
        domain at all (the LLM's, or the fallback's)."""
        move = self._judge(text, state or DialogueState())[1]
        if move.act == "chat":
            return None
        request = move.state.request
        asking = move.state.asking
        if move.act == "ask" and request is not None and asking is not None:
            return asking not in self.domain.intents[request.intent].required
        return True

    def tail_said(self, text: str, state: DialogueState | None = None) -> bool | None:
        """For a new request: True when it filled a slot its intent's examples put after
        a required one (the coffee order's milk or sugar: its *tail*), False while every
        such slot is open.  None when the turn answers the agent's question, is not about
        the domain, or its intent has no tail (``_tails``)."""
        state = state or DialogueState()
        u, move = self._judge(text, state)
        if state.asking is not None or move.act == "chat":
            return None
        tail = self._tails.get(u.intent or "")
        return any(u.slots.get(s) for s in tail) if tail else None

    def _judge(self, text: str, state: DialogueState) -> tuple[Understanding, Move]:
        """Understanding and the dialogue policy's move for ``text`` in ``state``, kept
        for the next call about the same text and the same state object (states are
        frozen, so the same object gives the same move; a shared engine at worst
        recomputes)."""
        last = self._judged
        if last is not None and last[0] == text and last[1] is state:
            return last[2], last[3]
        u = self.understand(text)
        move = self.policy.step(text, u, state)
        self._judged = (text, state, u, move)
        return u, move

    def stt_prompt(self) -> str:
        """Vocabulary hint for the recogniser (see :meth:`Domain.stt_prompt`)."""
        return self.domain.stt_prompt()

    def template_reply(self, understanding: Understanding) -> list[str]:
        """Clauses of the domain's answer to a matched intent on its own, outside any
        conversation: the question for a missing required slot, else the intent's reply
        (no follow-up questions, no read-back).  Empty: not ours."""
        intent = self.domain.intents.get(understanding.intent or "")
        if intent is None:
            return []
        filled = {k: v for k, v in understanding.slots.items() if v}
        for slot in intent.required:
            if slot not in filled:
                question = intent.ask.get(slot) or self.domain.slots[slot].question
                question = question or f"Which {slot} would you like?"
                return list(self.policy.render((question,), filled))
        return list(self.policy.render(intent.reply, filled))

    def respond(self, text: str, state: DialogueState) -> DialogueTurn:
        """The next turn of the conversation ``state``; ``state`` itself is untouched."""
        u = self.understand(text)
        move = self.policy.step(text, u, state)
        budget = self.options.llm_history_tokens
        heard = replace(
            move.state, history=trim_history((*state.history, ChatMessage("user", text)), budget)
        )

        def remember(said: str) -> DialogueState:
            if not said.strip():
                return heard
            history = (*heard.history, ChatMessage("assistant", said.strip()))
            return replace(heard, history=trim_history(history, budget))

        return DialogueTurn(u, heard, self._answer(move, heard), remember)

    async def _answer(self, move: Move, heard: DialogueState) -> AsyncIterator[ReplyClause]:
        if move.say:
            for text in move.say:
                yield ReplyClause(text, "domain")
            return
        otherwise = [ReplyClause(c, "domain") for c in move.retry] or [
            ReplyClause(self.domain.fallback, "fallback")
        ]
        system = self.system_prompt
        if heard.request is not None:
            system += f" The customer's request so far: {self.policy.describe(heard.request)}."
        async for clause in self._from_llm(
            [ChatMessage("system", system), *heard.history], otherwise
        ):
            yield clause

    async def reply(self, text: str, understanding: Understanding) -> AsyncIterator[ReplyClause]:
        clauses = self.template_reply(understanding)
        if clauses:
            for said in clauses:
                yield ReplyClause(said, "domain")
            return
        fallback = [ReplyClause(self.domain.fallback, "fallback")]
        if not text.strip():
            yield fallback[0]
            return
        messages = [ChatMessage("system", self.system_prompt), ChatMessage("user", text)]
        async for clause in self._from_llm(messages, fallback):
            yield clause

    async def _from_llm(
        self, messages: Sequence[ChatMessage], otherwise: Sequence[ReplyClause]
    ) -> AsyncIterator[ReplyClause]:
        """The LLM's answer, clause by clause; ``otherwise`` when there is no LLM, or it
        fails or says nothing before its first clause (after one, the user already heard
        an answer: no apology over it)."""
        said_something = False
        if self.llm is not None:
            splitter = ClauseSplitter(min_chars=self.options.min_clause_chars)
            try:
                async for delta in self.llm.stream(messages):
                    for text in splitter.feed(delta):
                        said_something = True
                        yield ReplyClause(text, "llm")
                for text in splitter.flush():
                    said_something = True
                    yield ReplyClause(text, "llm")
            except LLMError as e:
                log.warning("LLM failed, answering with the fallback: %s", e)
        if not said_something:
            for clause in otherwise:
                yield clause

    async def aclose(self) -> None:
        """Close the LLM connection pool (call at shutdown)."""
        if self.llm is not None:
            await self.llm.aclose()
