"""The recordings the end-of-turn evaluation replays, each one complete user turn.

Every recording holds exactly one request, so every pause inside it is a mid-utterance
pause and the real end of its speech (``halfsec.measure.end_of_speech``) is the one
place a turn may end.  Three sets:

* ``coffee``: the 150 crowd-sourced coffee orders of the shared corpus (people pause
  inside orders: "a large... oat milk latte");
* ``corpus``: the other 36 shared recordings (read sentences, commands, single words);
* ``hesitation``: orders and multi-sentence requests synthesized with Piper, with
  deliberate pauses (350-900 ms) between their phrases.  Held out: never tuned on.

The shared recordings are split into a *tune* and a *held-out* half by speaker (a
stable hash), so no voice is on both sides."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from halfsec import INTERNAL_RATE
from halfsec.audio.io import load_audio
from halfsec.audio.resample import resample
from halfsec.tts.engine import TTSEngine


@dataclass(frozen=True)
class Recording:
    name: str
    pcm: np.ndarray
    """16 kHz int16, one complete turn, silence around it as recorded."""
    set: str
    """``coffee``, ``corpus`` or ``hesitation``."""
    split: str
    """``tune`` or ``heldout``."""


def _split(speaker: str) -> str:
    h = int(hashlib.sha256(speaker.encode()).hexdigest()[:8], 16)
    return "tune" if h % 2 == 0 else "heldout"


def shared_recordings(manifest: Path, limit: int = 0) -> list[Recording]:
    """The shared corpus, coffee orders and the rest, split by speaker."""
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if limit:
        rows = rows[:limit]
    out: list[Recording] = []
    for r in rows:
        pcm = load_audio(manifest.parent / r["file"])
        speaker = r.get("speaker") or r["file"]
        out.append(
            Recording(
                Path(r["file"]).stem,
                pcm,
                "coffee" if r.get("intent") else "corpus",
                _split(speaker),
            )
        )
    return out


HESITATIONS: tuple[tuple[str, ...], ...] = (
    ("I'd like a large", "oat milk latte."),
    ("Can I get a cappuccino", "with an extra shot, please."),
    ("Give me a small", "um", "dark roast coffee."),
    ("I want a twelve ounce", "americano with soy milk."),
    ("Could I have a medium mocha", "with whipped cream"),
    ("Let me get a", "large iced latte."),
    ("One espresso,", "and a croissant."),
    ("A hot chocolate", "with almond milk, please."),
    ("Uh", "a medium flat white."),
    ("I'll have the", "sixteen ounce light roast."),
    ("Can I please get a latte,", "extra hot."),
    ("Make me a double espresso", "with a splash of milk."),
    ("Hi, I'm calling about my order.", "It hasn't arrived yet."),
    ("Thanks for calling.", "Please listen carefully, as our menu options have changed."),
    ("I'd like to check my balance.", "And then pay my bill."),
    ("My card was declined,", "but the money left my account."),
    ("Please call Stella.", "Ask her to bring these things with her from the store."),
    ("Turn on the living room lamp", "and set it to fifty percent."),
    ("What time is it", "in Tokyo?"),
    ("I need to change my appointment.", "Tuesday doesn't work for me anymore."),
    ("Your call is important to us.", "Please stay on the line."),
    ("Book a table for two", "at seven tonight."),
    ("I was wondering,", "do you have any decaf?"),
    ("So", "I'd like a mocha."),
)
"""Phrases said with a deliberate pause between them; each tuple is one turn."""

PAUSES_MS = (350, 500, 650, 800, 900)


async def hesitation_recordings(tts: TTSEngine) -> list[Recording]:
    """Piper (or any engine) speaking ``HESITATIONS`` with pauses cycling through
    ``PAUSES_MS``: 0.5 s of silence before, 1.5 s after."""
    out: list[Recording] = []
    k = 0
    for i, phrases in enumerate(HESITATIONS):
        parts = [np.zeros(INTERNAL_RATE // 2, dtype=np.int16)]
        for j, phrase in enumerate(phrases):
            if j:
                pause = PAUSES_MS[k % len(PAUSES_MS)]
                k += 1
                parts.append(np.zeros(pause * INTERNAL_RATE // 1000, dtype=np.int16))
            chunks = [c async for c in tts.synthesize(phrase)]
            audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
            parts.append(resample(audio, tts.sample_rate, INTERNAL_RATE))
        parts.append(np.zeros(INTERNAL_RATE * 3 // 2, dtype=np.int16))
        out.append(Recording(f"hesitation_{i:02d}", np.concatenate(parts), "hesitation", "heldout"))
    return out
