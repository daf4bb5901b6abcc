"""The shared human speech the benchmarks play: its manifest read one way, and the short
coffee orders the transport benchmarks play, picked and cut one way.

barge_in, edge, gateway and transport each compare two paths turn by turn, so they want
many short turns whose figure is the path's, not a long utterance's: the shortest
labelled orders of the shared corpus (``../shared/speech``), each cut to a little audio
before its speech and a chosen tail after it.  One picker, so the four play the same
recordings and a change of the cut is made once.  Imported as ``_speech`` (a script's
own folder is first on ``sys.path``)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from halfsec import INTERNAL_RATE
from halfsec.audio.io import load_audio
from halfsec.measure.end_of_speech import voiced_bounds

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"
MANIFEST = SPEECH / "manifest.tsv"


def manifest_rows(path: Path = MANIFEST) -> list[dict[str, str]]:
    """Every row of a manifest (``file``, ``duration_s``, ``transcript``, ``intent``,
    ``slots``, ``speaker``: tab-separated, a header first) as a dict, in file order; each
    benchmark filters them its own way (orders, transcribed, ...)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def shortest_orders(
    n: int, after_s: float, before_s: float = 0.3, speech: Path = SPEECH
) -> list[tuple[dict[str, str], np.ndarray]]:
    """The ``n`` shortest coffee orders (intent ``orderDrink``), in order of duration, each as its manifest row and its audio (16 kHz int16) cut to ``before_s``
    before and ``after_s`` after its voiced span (``halfsec.measure.end_of_speech``).
    A recording in which no speech is found is left out: it has no end of speech to time
    a reply from."""
    rows = [r for r in manifest_rows(speech / "manifest.tsv") if r["intent"] == "orderDrink"]
    rows.sort(key=lambda r: float(r["duration_s"]))
    before, after = round(before_s * INTERNAL_RATE), round(after_s * INTERNAL_RATE)
    out = []
    for r in rows[:n]:
        pcm = load_audio(speech / r["file"])
        b = voiced_bounds(pcm)
        if b is not None:
            out.append((r, pcm[max(0, b[0] - before) : b[1] + after]))
    return out
