"""Dialogue state across a Wyoming client's ``handle`` requests.

A voice turn in ``halfsec run`` or ``halfsec serve`` belongs to a session, and the
session keeps the conversation (``logic.state.DialogueState``: the order being taken,
the question pending, the chat history).  Wyoming has no session: Home Assistant's
conversation agent opens a new connection for each utterance.  What the protocol does
have is ``context`` ("context for next interaction") on ``transcript`` and on
``handled`` / ``not-handled``; Home Assistant puts its ``conversation_id`` there, the
id it keeps for a conversation until it has been idle for five minutes.

So the server keeps the state per conversation id, the way Home Assistant's own agent
keeps its chat log: ``WyomingDialogues`` is a bounded, expiring map from the id to the
state after the last reply.  A client that sends no ``conversation_id`` gets one
conversation per connection (several ``transcript`` events on one socket).  The state
never travels in the context: an unsigned state from the client could be anything, and
``server.resume``'s signed snapshots are for moving sessions between halfsec servers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from halfsec.clock import now_ns
from halfsec.logic.state import DialogueState

__all__ = ["CONVERSATION_ID", "WyomingDialogues", "conversation_id"]

CONVERSATION_ID = "conversation_id"
"""The key Home Assistant's Wyoming conversation agent sets in ``transcript.context``."""

IDLE_S = 300.0
"""A conversation idle this long is forgotten (Home Assistant's own conversation timeout
is five minutes: after it, the same id would not come back)."""

MAX_CONVERSATIONS = 1024
"""At most this many kept at once; the least recently used goes first.  A state is a few
KB at most (its chat history is bounded by the LLM's token budget)."""


def conversation_id(context: dict[str, Any] | None) -> str | None:
    """The conversation's id from a ``transcript``'s context (a non-empty string), or None."""
    if not isinstance(context, dict):
        return None
    cid = context.get(CONVERSATION_ID)
    return cid if isinstance(cid, str) and cid.strip() else None


class WyomingDialogues:
    """Conversation id -> dialogue state after its last reply (shared by all connections)."""

    def __init__(
        self,
        idle_s: float = IDLE_S,
        max_conversations: int = MAX_CONVERSATIONS,
        clock: Callable[[], float] = lambda: now_ns() / 1e9,
    ) -> None:
        self.idle_s = idle_s
        self.max_conversations = max_conversations
        self._clock = clock
        self._states: OrderedDict[str, tuple[float, DialogueState]] = OrderedDict()

    def get(self, cid: str) -> DialogueState:
        """The conversation's state; a new one for an unknown or expired id."""
        self._expire()
        kept = self._states.get(cid)
        return kept[1] if kept is not None else DialogueState()

    def put(self, cid: str, state: DialogueState) -> None:
        self._states[cid] = (self._clock(), state)
        self._states.move_to_end(cid)
        while len(self._states) > self.max_conversations:
            self._states.popitem(last=False)

    def _expire(self) -> None:
        cutoff = self._clock() - self.idle_s
        while self._states:
            cid, (used, _state) = next(iter(self._states.items()))
            if used >= cutoff:
                return
            del self._states[cid]

    def __len__(self) -> int:
        return len(self._states)
