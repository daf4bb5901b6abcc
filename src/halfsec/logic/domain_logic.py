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
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from halfsec.logic.clauses import ClauseSplitter, split_clauses
from halfsec.logic.domain import Domain, render_template
from halfsec.logic.engine import LogicEngine, ReplyClause, Understanding
from halfsec.logic.llm import ChatClient, ChatMessage, LLMError
from halfsec.logic.matcher import Matcher
from halfsec.logic.options import LogicOptions

log = logging.getLogger(__name__)

_DEFAULT_SYSTEM = (
    "You are the voice of {name}: {description} Your words are spoken aloud, so answer "
    "in one or two short, friendly sentences, with no lists, markdown or emoji. If a "
    "request is outside what you can do, say so briefly and offer what you can do."
)


class DomainLogic(LogicEngine):
    """:class:`LogicEngine` for one domain file, with an optional LLM behind it."""

    name = "domain"

    def __init__(self, domain: Domain, options: LogicOptions | None = None) -> None:
        self.domain = domain
        self.options = options or LogicOptions(domain=domain.name)
        self.matcher = Matcher(domain, min_confidence=self.options.min_confidence)
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

    def is_complete(self, text: str) -> bool | None:
        """Complete when an intent matched and every required slot is filled."""
        u = self.understand(text)
        if u.intent is None or u.intent not in self.domain.intents:
            return None
        return all(s in u.slots for s in self.domain.intents[u.intent].required)

    def stt_prompt(self) -> str:
        """Vocabulary hint for the recogniser (see :meth:`Domain.stt_prompt`)."""
        return self.domain.stt_prompt()

    def template_reply(self, understanding: Understanding) -> list[str]:
        """Clauses of the domain's answer to a matched intent (empty: not ours)."""
        intent = self.domain.intents.get(understanding.intent or "")
        if intent is None:
            return []
        filled = {k: v for k, v in understanding.slots.items() if v}
        for slot in intent.required:
            if slot not in filled:
                question = intent.ask.get(slot) or self.domain.slots[slot].question
                question = question or f"Which {slot} would you like?"
                return split_clauses(render_template(question, self._spoken(filled)))
        spoken = self._spoken(filled)
        clauses: list[str] = []
        for template in intent.reply:
            text = render_template(template, spoken)
            if text:
                clauses += split_clauses(text, self.options.min_clause_chars)
        return clauses

    def _spoken(self, slots: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, canonical in slots.items():
            slot = self.domain.slots.get(name)
            value = slot.value(canonical) if slot else None
            out[name] = value.spoken if value else canonical
        return out

    async def reply(self, text: str, understanding: Understanding) -> AsyncIterator[ReplyClause]:
        clauses = self.template_reply(understanding)
        if clauses:
            for clause in clauses:
                yield ReplyClause(clause, "domain")
            return
        if self.llm is not None and text.strip():
            said_something = False
            try:
                async for clause in self._llm_clauses(text):
                    said_something = True
                    yield ReplyClause(clause, "llm")
            except LLMError as e:
                log.warning("LLM failed, answering with the fallback: %s", e)
                if said_something:
                    return  # the user already heard an answer; don't apologise over it
            else:
                if said_something:
                    return
        yield ReplyClause(self.domain.fallback, "fallback")

    async def _llm_clauses(self, text: str) -> AsyncIterator[str]:
        assert self.llm is not None
        splitter = ClauseSplitter(min_chars=self.options.min_clause_chars)
        messages = [ChatMessage("system", self.system_prompt), ChatMessage("user", text)]
        async for delta in self.llm.stream(messages):
            for clause in splitter.feed(delta):
                yield clause
        for clause in splitter.flush():
            yield clause

    async def aclose(self) -> None:
        """Close the LLM connection pool (call at shutdown)."""
        if self.llm is not None:
            await self.llm.aclose()
