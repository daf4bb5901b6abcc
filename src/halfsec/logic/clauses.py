"""Incremental clause splitting: LLM tokens in, speakable clauses out.

TTS can start speaking as soon as one clause is complete, so the split point decides
how early the user hears the answer.  Splitting too eagerly hurts too: a clause of one
word ("Sure,") sounds choppy and wastes a TTS call, and splitting "3.5" or "Mr. Smith"
at the dot reads the number or the name wrongly.  Rules:

* a sentence ends at ``.``, ``!``, ``?`` or an ellipsis followed by white space (so
  "3.5" never splits) unless the word before is a known abbreviation, an initial or
  a dotted abbreviation ("e.g."), or the next word starts in lower case;
* a clause also ends at ``,``, ``;`` or ``:`` followed by white space once it holds at
  least ``min_chars`` characters (and never inside "1,000");
* a line break ends a clause (LLMs write lists);
* a clause longer than ``max_chars`` without punctuation is cut at the last space.

A terminator is only final once the next character is known, so a clause is held back
by at most one token.  :meth:`ClauseSplitter.flush` returns the rest at the end.
"""

from __future__ import annotations

import re

ABBREVIATIONS = frozenset(
    """
    mr mrs ms dr prof sr jr st vs etc approx appt apt dept est fig inc ltd co corp no
    vol jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thurs fri
    sat sun ave blvd rd min max oz lb lbs tbsp tsp
    """.split()
)
_MARKUP = re.compile(r"[*_`#]+|^\s*(?:[-\u2022]|\d+\.)\s+", re.MULTILINE)


class ClauseSplitter:
    """Feed text deltas with :meth:`feed`; collect complete clauses as they end."""

    def __init__(self, min_chars: int = 12, max_chars: int = 220) -> None:
        self.min_chars = min_chars
        self.max_chars = max_chars
        self._buf = ""
        self._scan = 0  # index in _buf from which no decided boundary exists

    def feed(self, delta: str) -> list[str]:
        """Add text; return clauses that are complete now (possibly none)."""
        self._buf += delta
        out: list[str] = []
        i = self._scan
        buf = self._buf
        start = 0
        while i < len(buf):
            ch = buf[i]
            cut = -1
            if ch == "\n":
                cut = i + 1
            elif ch in ".!?,;:":
                # Skip a run of terminators ("?!", "...") and closing quotes/brackets.
                j = i + 1
                while j < len(buf) and buf[j] in ".!?\"')]\u201d":
                    j += 1
                if j >= len(buf):
                    break  # need the next character to decide
                if buf[j].isspace():
                    clause = buf[start:j]
                    if ch in ".!?":
                        k = j
                        while k < len(buf) and buf[k] in " \t":
                            k += 1
                        if k >= len(buf):
                            break  # need the next word to decide
                        if self._is_sentence_end(buf[start:i], buf[k]):
                            cut = j
                    elif len(clause.strip()) >= self.min_chars:
                        cut = j
                i = j - 1
            if cut >= 0:
                text = _clean(buf[start:cut])
                if text:
                    out.append(text)
                start = cut
            elif i - start >= self.max_chars:
                space = buf.rfind(" ", start, i)
                if space > start:
                    text = _clean(buf[start:space])
                    if text:
                        out.append(text)
                    start = space + 1
            i += 1
        self._buf = buf[start:]
        self._scan = max(0, i - start)
        return out

    def flush(self) -> list[str]:
        """End of text: return whatever is left as a last clause."""
        text = _clean(self._buf)
        self._buf = ""
        self._scan = 0
        return [text] if text else []

    def _is_sentence_end(self, before: str, next_char: str) -> bool:
        if next_char.islower():
            return False
        words = before.split()
        if not words:
            return True
        last = words[-1].lstrip("(\"'").lower()
        if last in ABBREVIATIONS:
            return False
        if len(last) == 1 and last.isalpha():
            return False  # an initial: "J. Smith"
        return "." not in last  # "e.g", "u.s" -> dotted abbreviation


def _clean(text: str) -> str:
    """Drop markdown and list markers TTS would read out; squeeze white space."""
    return " ".join(_MARKUP.sub(" ", text).split())


def split_clauses(text: str, min_chars: int = 12) -> list[str]:
    """Split a whole text at once (templates use this)."""
    splitter = ClauseSplitter(min_chars=min_chars)
    return splitter.feed(text) + splitter.flush()
