"""What one conversation knows: the request being built, what was done, what was said.

Every field is an immutable value and every change makes a new :class:`DialogueState`.
That is what keeps speculation honest: the runtime computes a turn's next state while the
reply is still held behind the end-of-turn gate, and a turn that is cancelled because the
user went on speaking simply drops its value.  Nothing was changed in place, so there is
nothing to undo.  The state belongs to one session; the engines that compute it are shared
by all sessions and keep none of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from halfsec.logic.llm import ChatMessage


def _frozen(slots: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(slots))


@dataclass(frozen=True, slots=True)
class Request:
    """One request of the user's: an intent and the slot values given for it so far."""

    intent: str
    slots: Mapping[str, str] = field(default_factory=dict)
    asked: frozenset[str] = frozenset()
    """Optional (``follow_up``) slots the agent has asked about once already: a user who
    ignores the question is not asked again."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "slots", _frozen(self.slots))

    def with_slots(self, slots: Mapping[str, str]) -> Request:
        """Later values win: "no, make it a large" replaces the size."""
        return replace(self, slots={**self.slots, **slots})

    def with_asked(self, slot: str) -> Request:
        return replace(self, asked=self.asked | {slot})

    def as_dict(self) -> dict[str, Any]:
        return {"intent": self.intent, "slots": dict(self.slots)}


@dataclass(frozen=True, slots=True)
class DialogueState:
    """The state of one conversation after its last committed turn."""

    request: Request | None = None
    """The request being built or read back; None between requests."""
    asking: str | None = None
    """The slot the last reply asked for (None: no question pending)."""
    confirming: bool = False
    """The last reply read the request back and asked whether it is right."""
    done: tuple[Request, ...] = ()
    """Requests completed in this conversation (confirmed orders), oldest first."""
    history: tuple[ChatMessage, ...] = ()
    """The conversation as chat messages, oldest first, kept within the LLM's token
    budget (``LogicOptions.llm_history_tokens``)."""
    turns: int = 0
    """User turns this state has seen."""
    last_act: str = ""
    """What the agent did on the last turn: ``ask``, ``confirm``, ``done``, ``change``,
    ``cancel``, ``reprompt``, ``chat`` (LLM or fallback), ``close`` or ``reply``."""

    @property
    def order(self) -> Request | None:
        """The request the conversation is about: the open one, else the last done one."""
        if self.request is not None:
            return self.request
        return self.done[-1] if self.done else None

    def as_dict(self) -> dict[str, Any]:
        """The JSON view (``halfsec run --conversation`` prints it after every turn)."""
        return {
            "request": self.request.as_dict() if self.request is not None else None,
            "asking": self.asking,
            "confirming": self.confirming,
            "done": [r.as_dict() for r in self.done],
            "turns": self.turns,
            "last_act": self.last_act,
            "history_messages": len(self.history),
        }
