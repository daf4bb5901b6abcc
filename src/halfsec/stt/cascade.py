"""Two recognizers in a cascade: the fast one first, the larger one only when the first
is unsure, and the more confident text of the two.

Why, for phone calls: over 300-3400 Hz neither Whisper tiny.en nor Whisper base is the
better recognizer everywhere.  On the phone prompt bench's tuning split (134 coffee
orders, 20 Speech Commands words, 88 Piper sentences, all as a call carries them;
``benchmarks/phone_prompt_bench.py``), tiny.en wrote 77 synthetic-sentence errors where
base wrote 93, while base keeps more words of real voices on the Twilio bench's
sentences; keeping, per utterance, the text whose decoder was the more confident (its
length-normalised log-probability, ``Decoded.avg_logprob``) wrote 69 and accepted the
most orders (127/134).  Both decodes on every final would cost a call ~2x base's final
on a 2-core box, so the larger model runs only when the fast one's confidence is below
``min_logprob``: a confident tiny.en final is the answer at tiny.en's price.

The cascade has a ``WhisperDecoder``'s interface (``decode``, ``decode_padded``), so a
decode lane holds it as it holds one model (``stt/decode_lanes.py``): the same worker,
spare, deadlines and hung-worker replacement.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from halfsec.stt.whisper_decoder import Decoded, WhisperDecoder

__all__ = ["CascadeDecoder", "confidence"]


def confidence(d: Decoded) -> float:
    """How sure the decoder was of ``d``: its average log-probability; a text from the
    30 s fallback or cut out of a loop has no comparable score and counts as the least
    sure (``-inf``).  Silence (no decode, "") is certain."""
    if d.fallback or d.broken:
        return -math.inf
    return d.avg_logprob


class CascadeDecoder:
    """``first`` decodes every utterance; ``second`` also decodes a final whose first
    text is less confident than ``min_logprob`` (``-inf``: never, ``+inf``: always),
    and the more confident of the two is the final.  Partials are ``first``'s alone.

    Thread-compatible, not thread-safe, as each model is: one lane worker calls it."""

    def __init__(self, first: WhisperDecoder, second: WhisperDecoder, min_logprob: float) -> None:
        self.first = first
        self.second = second
        self.min_logprob = min_logprob
        self.options = second.options
        self.prompt_ids = second.prompt_ids
        self.escalated = 0
        """Finals the second model also decoded (for benchmarks: its share is the cost)."""

    def decode(self, pcm: np.ndarray, *, final: bool, short: Decoded | None = None) -> Decoded:
        a = self.first.decode(pcm, final=final, short=short)
        if not final or confidence(a) >= self.min_logprob:
            return a
        self.escalated += 1
        b = self.second.decode(pcm, final=True)
        best = a if confidence(a) > confidence(b) else b
        return dataclasses.replace(best, compute_ms=a.compute_ms + b.compute_ms)

    def decode_padded(self, audio: np.ndarray, duration_s: float) -> tuple[str, float]:
        """The 30 s window fallback is the larger model's (warm-up calls it too)."""
        return self.second.decode_padded(audio, duration_s)
