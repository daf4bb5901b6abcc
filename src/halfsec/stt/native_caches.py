"""A bound on the shape-keyed cache under CTranslate2, which otherwise grows for hours.

CTranslate2 runs Whisper through oneDNN, and oneDNN keeps every primitive it creates in a
process-wide cache keyed by the exact tensor shapes, up to 1,024 entries by default.  A
voice server never decodes the same shape twice in a row: the window is the utterance
plus padding, and every generated token is a step of another length.  So the cache only
grows: measured 2026-12-01 (tiny.en, int8, one decoder, real human utterances), native
memory in use +11.1 MB over 20 utterances with the default and -0.4 MB with 16 entries;
+41 MB over 60 utterances with the default.  In a server every final and every partial
adds entries, which is the slow RSS creep the soak showed between its steps
(``benchmarks/soak.py``, docs/scaling.md).

A smaller cache costs nothing measurable: creating a primitive takes microseconds against
a ~100 ms decode (40 utterances: median decode 97-99 ms with 16 entries, 99-107 ms with
1,024, same box, same run).

oneDNN reads ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` when it first creates a primitive, so the
bound must be set before the process's first decode (``WhisperDecoder`` does it before it
loads a model).  A value the user already set is kept.
"""

from __future__ import annotations

import os

__all__ = ["ONEDNN_CACHE_ENTRIES", "ONEDNN_CACHE_VAR", "bound_onednn_cache"]

ONEDNN_CACHE_VAR = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
ONEDNN_CACHE_ENTRIES = 16
"""Enough for the shapes of one decode in flight on each lane; see the module docstring."""


def bound_onednn_cache(entries: int = ONEDNN_CACHE_ENTRIES) -> int:
    """Set oneDNN's primitive cache capacity unless the environment already does; returns
    the capacity in force (a value that is not a number counts as oneDNN's default)."""
    value = os.environ.setdefault(ONEDNN_CACHE_VAR, str(entries))
    try:
        return int(value)
    except ValueError:
        return 1024
