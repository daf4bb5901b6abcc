"""End-of-turn policies: how much silence ends a turn.

The pause detector says *that* the user is silent; a policy says *whether that silence
ends the turn*.  It sees the speculative transcript (decoded as soon as the pause began),
so a phrase that is obviously unfinished ("a large latte with", "uh") earns a longer
window, while a complete one ends after the short default.  A model-based policy (a
later issue) implements the same method."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable

from halfsec.turn.options import TurnOptions


class EndOfTurnPolicy(ABC):
    @abstractmethod
    def required_silence_ms(self, transcript: str | None) -> float:
        """Silence (after the estimated end of speech) needed to end the turn.

        ``transcript`` is None while the speculative transcript is not ready."""


class SilenceWindowPolicy(EndOfTurnPolicy):
    """A fixed window: the classic VAD endpoint."""

    def __init__(self, options: TurnOptions) -> None:
        self.opt = options

    def required_silence_ms(self, transcript: str | None) -> float:
        return self.opt.silence_ms


_TRAILING_INCOMPLETE = re.compile(
    r"\b(and|or|with|a|an|the|of|some|to|for|uh|um|er|erm|hmm|like|but|so|please and|"
    r"can i|could i|may i|i'd|i would|i want|get me|give me|make me|i'll have|let me)$"
)


class TranscriptAwarePolicy(EndOfTurnPolicy):
    """Short window for complete requests, long window for ones that stop mid-thought.

    ``completeness`` (usually the logic engine's ``is_complete``) judges the meaning: an
    order with no drink yet is unfinished even if it ends on a full word.  Measured over
    the 186 shared recordings (``benchmarks/run_corpus.py``): lexical cues alone either
    cut orders at their commas or, when every trailing comma waits, put p95 at 700 ms."""

    def __init__(
        self, options: TurnOptions, completeness: Callable[[str], bool | None] | None = None
    ) -> None:
        self.opt = options
        self.completeness = completeness

    @staticmethod
    def looks_incomplete(transcript: str) -> bool:
        t = re.sub(r"[^a-z' ]+", " ", transcript.lower()).strip()
        if not t:
            return False
        # Trailing punctuation is no evidence: Whisper ends most cut-off or falling
        # utterances with a comma ("... with soy milk,"), complete or not.  Measured on
        # the built-in corpus, a comma rule sent a fifth of complete orders to the long
        # window.  Only words that cannot end a request count.
        if transcript.rstrip().endswith(("-", "...")):
            return True
        return bool(_TRAILING_INCOMPLETE.search(t))

    def required_silence_ms(self, transcript: str | None) -> float:
        if transcript is None or not transcript.strip():
            return self.opt.silence_ms
        if self.looks_incomplete(transcript):
            return self.opt.incomplete_silence_ms
        complete = self.completeness(transcript) if self.completeness is not None else None
        if complete is False:
            return self.opt.incomplete_silence_ms
        if complete is None and transcript.rstrip().endswith(","):
            return self.opt.uncertain_silence_ms
        return self.opt.silence_ms
