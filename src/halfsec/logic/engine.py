"""The logic interface: transcript in, understanding and reply clauses out.

Replies stream clause by clause so TTS can start on the first clause while later ones
are still being written (by a template, or token by token by an LLM).

A logic engine is shared by every session, so it keeps no conversation of its own: the
session hands it the conversation so far (a :class:`DialogueState` value) and gets the
next one back in a :class:`DialogueTurn`, to commit only if the turn's reply is released.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

from halfsec.logic.state import DialogueState


@dataclass(frozen=True, slots=True)
class Understanding:
    intent: str | None
    slots: dict[str, str] = field(default_factory=dict)
    confidence: float = 0.0


@dataclass(frozen=True, slots=True)
class ReplyClause:
    text: str
    source: str
    """``domain``, ``llm`` or ``fallback``."""


@dataclass(frozen=True, slots=True)
class DialogueTurn:
    """One user turn answered within its conversation.

    Nothing here has touched the session yet: ``state`` is what the conversation becomes
    if this reply is released, and ``remember(said)`` what it becomes once the reply has
    been said (all of it, or up to a barge-in), with the exchange in the chat history.
    A turn that is cancelled before its reply is released is simply dropped."""

    understanding: Understanding
    """This utterance on its own (what the ``intent`` event reports)."""
    state: DialogueState
    clauses: AsyncIterator[ReplyClause]
    remember: Callable[[str], DialogueState]


class LogicEngine(ABC):
    name: str = "logic"

    @abstractmethod
    def understand(self, text: str) -> Understanding:
        """Intent and slots of one utterance.  Cheap and synchronous (~1 ms)."""

    def is_complete(self, text: str, state: DialogueState | None = None) -> bool | None:
        """Does ``text`` read as a finished request?  ``None`` = cannot tell.

        The end-of-turn policy asks this about the speculative transcript: an order that
        names no drink yet ("give me a dark roast,") is a pause inside a turn, not its
        end.  ``state`` is the conversation so far: "Large." finishes a turn that answers
        "What size?".  Engines that cannot judge keep the default."""
        return None

    def tail_said(self, text: str, state: DialogueState | None = None) -> bool | None:
        """Has a request ``is_complete`` accepts also said what people add at its end?
        ``None`` = cannot tell.

        The end-of-turn policy asks this too: a complete order whose add-ons are still
        open ("a dark roast drip coffee.") is often followed, after a pause, by one
        ("... with soy milk"); one that has said them is done (docs/turn-taking.md).
        Engines that cannot judge keep the default."""
        return None

    @abstractmethod
    def reply(self, text: str, understanding: Understanding) -> AsyncIterator[ReplyClause]:
        """Stream the reply to one utterance on its own, one speakable clause at a time."""

    def respond(self, text: str, state: DialogueState) -> DialogueTurn:
        """Answer ``text`` as the next turn of the conversation ``state``.

        Must not change ``state`` (a value) or anything of the engine's that a later turn
        would see.  The default answers each utterance on its own and only counts turns;
        engines that keep a dialogue (``DomainLogic``) override it."""
        u = self.understand(text)
        after = replace(state, turns=state.turns + 1, last_act="reply")
        return DialogueTurn(u, after, self.reply(text, u), lambda said: after)
