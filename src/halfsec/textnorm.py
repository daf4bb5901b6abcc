"""Numbers spelled out as people say them: the one spelling every text comparison uses.

Recognisers write digits ("12oz", "1455", "15th"), people say words, and domain phrases
and reference transcripts are written in words.  Two normalisers compare such text, for
different ends, and both spell numbers with the functions here:

* ``halfsec.logic.normalize`` -- words of a transcript for the intent matcher (accents
  off, "12oz" split, "3.5" read as "three point five");
* ``halfsec.measure.wer`` -- words for the word error rate, read as in read speech
  ("1455" is the year "fourteen fifty five", so ``years=True``).

One spelling, so that "twelve", "twelfth" or "one hundred five" are the same words for the
matcher and for every WER figure the project reports.
"""

from __future__ import annotations

__all__ = ["number_words", "ordinal_words"]

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def number_words(n: int, *, years: bool = False) -> str:
    """Spell an integer the way people say it ("twelve", "one hundred five").

    ``years``: read 1100 to 1999 as a year ("1455" -> "fourteen fifty five", "1900" ->
    "nineteen hundred", "1905" -> "nineteen oh five"), as they occur in read speech;
    otherwise every number is a cardinal ("one thousand four hundred fifty five").
    """
    if n < 0:
        return "minus " + number_words(-n, years=years)
    if years and 1100 <= n <= 1999:
        high, low = divmod(n, 100)
        if low == 0:
            return f"{number_words(high)} hundred"
        if low < 10:
            return f"{number_words(high)} oh {_ONES[low]}"
        return f"{number_words(high)} {number_words(low)}"
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    for size, word in _SCALES:
        if n >= size:
            head, rest = divmod(n, size)
            return f"{number_words(head)} {word}" + (f" {number_words(rest)}" if rest else "")
    raise AssertionError("unreachable")


def ordinal_words(cardinal: str) -> str:
    """The ordinal of a spelled-out number: its last word becomes the ordinal
    ("twenty one" -> "twenty first", "forty" -> "fortieth", "one hundred" -> "one hundredth")."""
    head, _, last = cardinal.rpartition(" ")
    if last in _ORDINAL_IRREGULAR:
        last = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}".strip()
