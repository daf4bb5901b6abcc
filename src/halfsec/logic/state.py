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

    def snapshot(self) -> dict[str, Any]:
        """Everything, ``asked`` included (``as_dict`` is the user-facing view)."""
        return {"intent": self.intent, "slots": dict(self.slots), "asked": sorted(self.asked)}

    @staticmethod
    def from_snapshot(obj: Any) -> Request:
        """The inverse of :meth:`snapshot`; ``ValueError`` on anything else."""
        if not isinstance(obj, dict) or not isinstance(obj.get("intent"), str):
            raise ValueError("a request needs a string 'intent'")
        slots, asked = obj.get("slots", {}), obj.get("asked", [])
        if not isinstance(slots, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in slots.items()
        ):
            raise ValueError("a request's 'slots' must map strings to strings")
        if not isinstance(asked, list) or not all(isinstance(a, str) for a in asked):
            raise ValueError("a request's 'asked' must be a list of strings")
        return Request(obj["intent"], slots, frozenset(asked))


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

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain JSON values, for a conversation that moves to another
        server (``server.resume`` signs it; the client carries it).  Unlike
        :meth:`as_dict` nothing is left out: a state restored from it answers the next
        turn exactly as this one would."""
        return {
            "request": self.request.snapshot() if self.request is not None else None,
            "asking": self.asking,
            "confirming": self.confirming,
            "done": [r.snapshot() for r in self.done],
            "history": [[m.role, m.content] for m in self.history],
            "turns": self.turns,
            "last_act": self.last_act,
        }

    @staticmethod
    def from_snapshot(obj: Any) -> DialogueState:
        """The state :meth:`snapshot` wrote; ``ValueError`` naming the first bad field.

        Checked field by field although the snapshot is signed: a key shared by a newer
        server that writes another shape must fail clearly, not restore half a state."""
        if not isinstance(obj, dict):
            raise ValueError("a dialogue snapshot must be an object")
        req = obj.get("request")
        asking, act, turns = obj.get("asking"), obj.get("last_act", ""), obj.get("turns", 0)
        done, history = obj.get("done", []), obj.get("history", [])
        if asking is not None and not isinstance(asking, str):
            raise ValueError("'asking' must be a string or null")
        if not isinstance(act, str):
            raise ValueError("'last_act' must be a string")
        if not isinstance(turns, int) or isinstance(turns, bool) or turns < 0:
            raise ValueError("'turns' must be a non-negative integer")
        if not isinstance(obj.get("confirming", False), bool):
            raise ValueError("'confirming' must be a boolean")
        if not isinstance(done, list) or not isinstance(history, list):
            raise ValueError("'done' and 'history' must be lists")
        if not all(
            isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m)
            for m in history
        ):
            raise ValueError("'history' must hold [role, content] string pairs")
        return DialogueState(
            request=Request.from_snapshot(req) if req is not None else None,
            asking=asking,
            confirming=obj.get("confirming", False),
            done=tuple(Request.from_snapshot(r) for r in done),
            history=tuple(ChatMessage(role, content) for role, content in history),
            turns=turns,
            last_act=act,
        )
