"""Repetition loops in a transcript: find one at the end and cut it to its first copy."""

from __future__ import annotations

import re

_WORD_RE = re.compile(r"\S+")


def _norm(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def cut_repetition_loop(text: str) -> tuple[str, bool]:
    """Cut a trailing repetition loop; return (text, whether a loop was found).

    Whisper on a short window tends to repeat its last phrase until the token cap
    ("Please call Stella. Please call Stella. Please call ...").  A loop is a periodic
    tail: a unit of k words repeated back to back up to the end of the text, at least
    3.5 times for single words, 2.5 times for units of 2-3 words, 1.5 times for longer
    phrases (the last copy is often cut short by the token cap).  People do say "no, no"
    or "yes yes", so short units need more repeats before they count.  The returned text
    keeps the first copy.  Comparison ignores case and punctuation.
    """
    spans = [(m.start(), m.end()) for m in _WORD_RE.finditer(text)]
    words = [_norm(text[s:e]) for s, e in spans]
    n = len(words)
    best: int | None = None
    for k in range(1, n // 2 + 1):
        needed = 3.5 if k == 1 else 2.5 if k <= 3 else 1.5
        start = n - k  # earliest index of the periodic tail with period k
        while start - 1 >= 0 and start - 1 + k < n and words[start - 1] == words[start - 1 + k]:
            start -= 1
        # words[start:] has period k; it must hold enough copies of a real (non-empty) unit.
        if (n - start) / k >= needed and all(words[start : start + k]):
            keep = start + k
            best = keep if best is None else min(best, keep)
    if best is None:
        return text, False
    return text[: spans[best - 1][1]].strip(), True
