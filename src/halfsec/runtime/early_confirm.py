"""Whether the final transcript confirms an early reply (``TurnTask``'s early start).

An early reply starts from a partial transcript while the final decodes; when the final
lands it either keeps that reply or drops it unheard.  The rule is one concept of its own
(what counts as the same request), apart from the task that runs the turn: the same
intent and slots when the domain understood the words, otherwise the same words."""

from __future__ import annotations

import re

from halfsec.logic.engine import DialogueTurn, LogicEngine
from halfsec.logic.state import DialogueState


def words(text: str) -> list[str]:
    """``text``'s words, lower case, without punctuation (a comma is not a new request)."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def confirmed_turn(
    logic: LogicEngine,
    early_text: str,
    early: DialogueTurn,
    final_text: str,
    dialogue: DialogueState,
) -> DialogueTurn | None:
    """The turn to keep when ``final_text`` asks for what ``early`` (logic's answer to
    ``early_text``) answers, else None.  The kept turn speaks the early reply's clauses
    (already under way) and remembers the final's words in the conversation."""
    again = logic.respond(final_text, dialogue)
    u, v = early.understanding, again.understanding
    same = (u.intent, dict(u.slots)) == (v.intent, dict(v.slots))
    if (same and u.intent is not None) or words(early_text) == words(final_text):
        return DialogueTurn(u, again.state, early.clauses, again.remember)
    return None
