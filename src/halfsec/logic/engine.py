"""The logic interface: transcript in, understanding and reply clauses out.

Replies stream clause by clause so TTS can start on the first clause while later ones
are still being written (by a template, or token by token by an LLM).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


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


class LogicEngine(ABC):
    name: str = "logic"

    @abstractmethod
    def understand(self, text: str) -> Understanding:
        """Intent and slots of one utterance.  Cheap and synchronous (~1 ms)."""

    def is_complete(self, text: str) -> bool | None:
        """Does ``text`` read as a finished request?  ``None`` = cannot tell.

        The end-of-turn policy asks this about the speculative transcript: an order that
        names no drink yet ("give me a dark roast,") is a pause inside a turn, not its
        end.  Engines that cannot judge keep the default."""
        return None

    @abstractmethod
    def reply(self, text: str, understanding: Understanding) -> AsyncIterator[ReplyClause]:
        """Stream the reply, one speakable clause at a time."""
