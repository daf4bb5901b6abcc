"""The one spelling every comparison of the logic stage uses: words of a transcript.

The domain loader checks that no phrase belongs to two slots, and the matcher looks
phrases up in a transcript; both must see "A 12-ounce, Latté!" and "a twelve ounce latte"
as the same words, so both call :func:`normalize`.
"""

from __future__ import annotations

import re
import unicodedata

from halfsec.textnorm import number_words, ordinal_words

__all__ = ["normalize"]

_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d{3}\b)")
_ORDINAL_RE = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_DECIMAL = re.compile(r"\b(\d+)\.(\d+)\b")
_DIGITS = re.compile(r"\d+")
_DIGIT_LETTER = re.compile(r"(?<=\d)(?=[a-z])|(?<=[a-z])(?=\d)")
_NON_WORD = re.compile(r"[^a-z0-9' ]+")


def normalize(text: str) -> list[str]:
    """Words of ``text`` in the one spelling every comparison uses: lower case, accents
    and punctuation off, hyphens split, digits spelled out ("12" -> "twelve", "3.5" ->
    "three point five", "2nd" -> "second") and split from letters ("12oz")."""
    t = unicodedata.normalize("NFKD", text)
    t = "".join(c for c in t if not unicodedata.combining(c)).lower()
    t = t.replace("\u2019", "'").replace("&", " and ").replace("%", " percent ")
    t = _DIGIT_COMMA.sub("", t)
    t = _ORDINAL_RE.sub(lambda m: f" {ordinal_words(number_words(int(m.group(1))))} ", t)
    t = _DECIMAL.sub(
        lambda m: (
            f" {number_words(int(m.group(1)))} point "
            + " ".join(number_words(int(d)) for d in m.group(2))
            + " "
        ),
        t,
    )
    t = _DIGIT_LETTER.sub(" ", t)
    t = _DIGITS.sub(lambda m: f" {number_words(int(m.group(0)))} ", t)
    t = _NON_WORD.sub(" ", t)
    return [w.strip("'").replace("'", "") for w in t.split() if w.strip("'")]
