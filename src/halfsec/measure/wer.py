"""Word error rate with the text normalisation that makes it meaningful.

Reference transcripts come from different sources (LibriSpeech is upper case with no
punctuation, LJSpeech spells numbers out, Whisper writes digits), so comparing raw
strings would count formatting as recognition errors.  ``normalize_text`` maps both
sides to lower-case words with numbers spelled out (``halfsec.textnorm``, the spelling the
intent matcher uses too) before the edit distance is taken.
The lab and the benchmarks reuse these two functions so every WER the project reports
is computed the same way.
"""

from __future__ import annotations

import re

from halfsec.textnorm import number_words, ordinal_words

__all__ = ["normalize_text", "word_error_rate", "word_errors"]

# Spoken forms of the abbreviations recognisers emit most often.  Kept short on purpose:
# every entry is a guess about how the reference spells the word.
_ABBREVIATIONS = {
    "mr": "mister",
    "mrs": "missus",
    "dr": "doctor",
    "oz": "ounce",
    "st": "saint",
    "&": "and",
    "%": "percent",
}
_NUMBER_RE = re.compile(r"(\d+(?:,\d{3})*)(st|nd|rd|th|s)?\b", re.IGNORECASE)


def _spell_number(match: re.Match[str]) -> str:
    n = int(match.group(1).replace(",", ""))
    suffix = (match.group(2) or "").lower()
    # Four-digit numbers from 1100 to 1999 are read as years, because that is how they
    # occur in read speech ("1455" -> "fourteen fifty five").
    words = number_words(n, years=True)
    if suffix in ("st", "nd", "rd", "th"):
        return " " + ordinal_words(words) + " "
    if suffix == "s":  # "1950s" -> "nineteen fifties"
        plural = ordinal_words(words)[:-2] + "s" if words.endswith("y") else words + "s"
        return " " + plural + " "
    return " " + words + " "


def normalize_text(text: str) -> str:
    """Lower-case words separated by single spaces: no punctuation, numbers spelled out."""
    text = text.lower().replace("%", " % ").replace("&", " & ")
    text = _NUMBER_RE.sub(_spell_number, text)
    # Hyphens and slashes join words ("forty-two", "and/or"): treat them as spaces.
    text = re.sub(r"[-/]", " ", text)
    # Keep apostrophes inside words ("don't"), drop every other punctuation mark.
    text = re.sub(r"[^\w\s'%&]", " ", text)
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    words = [_ABBREVIATIONS.get(w, w) for w in text.split()]
    return " ".join(words)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference word count) after normalising.

    Returning the two counts lets callers pool errors over a corpus, which weights long
    utterances properly, instead of averaging per-utterance rates.
    """
    ref = normalize_text(reference).split()
    hyp = normalize_text(hypothesis).split()
    # Levenshtein distance over words, one row at a time (O(len(hyp)) memory).
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, start=1):
        current = [i] + [0] * len(hyp)
        for j, hyp_word in enumerate(hyp, start=1):
            current[j] = min(
                previous[j] + 1,
                current[j - 1] + 1,
                previous[j - 1] + (ref_word != hyp_word),
            )
        previous = current
    return previous[-1], len(ref)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference`` (0.0 = perfect).

    An empty reference gives 0.0 for an empty hypothesis and 1.0 otherwise, so silence
    checks can use the same function.
    """
    errors, count = word_errors(reference, hypothesis)
    if count == 0:
        return 0.0 if errors == 0 else 1.0
    return errors / count
