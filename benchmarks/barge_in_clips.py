"""Interruption and backchannel clips for the barge-in bench and tests.

Synthesized with Piper (the packaged joe voice at three speeds) and espeak-ng (four
voices), plus the human single words of ``../shared/speech`` that fit: "yes" and "right"
said alone are backchannels, "stop" and "no" interruptions.  Every clip is 16 kHz int16,
cut to its voiced part with 100 ms before it (``measure.end_of_speech.voiced_bounds``).

``python benchmarks/barge_in_clips.py --write tests/data/barge_in`` writes the few the
tests use (committed: Piper draws noise, a fresh draw per run would make tests flaky).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from _speech import manifest_rows

from halfsec.audio.io import load_audio
from halfsec.audio.resample import resample
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.tts.espeak import EspeakEngine
from halfsec.tts.options import TTSOptions
from halfsec.tts.piper import PiperEngine

BACKCHANNELS = ("uh-huh", "yeah", "okay", "mm-hmm", "right", "yeah, yeah", "I see", "got it")
INTERRUPTIONS = (
    "wait",
    "no, stop",
    "hold on",
    "actually, make it a small one",
    "can I change that",
    "sorry, I meant tea",
)
PIPER_SPEEDS = (0.85, 1.0, 1.2)
ESPEAK_VOICES = ("en-us", "en-us+f3", "en-gb-scotland", "en-029")
HUMAN = {"yes": "backchannel", "right": "backchannel", "stop": "interruption", "no": "interruption"}
LEAD = 1600  # samples kept before the voiced part (100 ms)


@dataclass(frozen=True, slots=True)
class Clip:
    name: str
    kind: str
    """``backchannel`` or ``interruption``."""
    text: str
    voice: str
    pcm: np.ndarray


def _trim(pcm: np.ndarray) -> np.ndarray | None:
    b = voiced_bounds(pcm)
    if b is None:
        return None
    return pcm[max(0, b[0] - LEAD) : b[1] + 1].astype(np.int16)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z]+", "_", text.lower()).strip("_")


def synthesized(per_kind: int | None = None, voices_per_text: int = 2) -> list[Clip]:
    """Every text in ``voices_per_text`` voices, the voices taken in turn so that each
    is used (``per_kind``: at most that many of each kind, one voice each)."""
    engines: list[tuple[str, PiperEngine | EspeakEngine]] = [
        (f"piper-joe-x{s}", PiperEngine(TTSOptions(engine="piper", length_scale=s)))
        for s in PIPER_SPEEDS
    ]
    engines += [
        (f"espeak-{v}", EspeakEngine(TTSOptions(engine="espeak", espeak_voice=v)))
        for v in ESPEAK_VOICES
    ]
    out: list[Clip] = []
    for kind, texts in (("backchannel", BACKCHANNELS), ("interruption", INTERRUPTIONS)):
        n = len(engines)
        pairs = [
            (t, engines[(i * voices_per_text + j) % n])
            for i, t in enumerate(texts)
            for j in range(voices_per_text)
        ]
        if per_kind is not None:
            pairs = [(t, engines[i % len(engines)]) for i, t in enumerate(texts)][:per_kind]
        for text, (voice, eng) in pairs:
            raw = eng.render_blocking(text)
            pcm = _trim(resample(raw.astype(np.int16), eng.sample_rate, 16_000).astype(np.int16))
            if pcm is not None:
                out.append(Clip(f"{_slug(text)}__{voice}", kind, text, voice, pcm))
    for _, eng in engines:
        eng.close()
    return out


def human(speech_dir: Path) -> list[Clip]:
    """The single words of the shared corpus that are a backchannel or an interruption."""
    out: list[Clip] = []
    for row in manifest_rows(speech_dir / "manifest.tsv"):
        kind = HUMAN.get(row["transcript"].strip().lower())
        if kind is None or "speechcommands" not in row["file"]:
            continue
        pcm = _trim(load_audio(speech_dir / row["file"]))
        if pcm is not None:
            name = Path(row["file"]).stem
            out.append(Clip(name, kind, row["transcript"], "human", pcm))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--write", type=Path, required=True, help="folder for the FLAC clips")
    ap.add_argument("--per-kind", type=int, default=3)
    args = ap.parse_args()
    args.write.mkdir(parents=True, exist_ok=True)
    for c in synthesized(args.per_kind):
        sf.write(str(args.write / f"{c.kind}__{c.name}.flac"), c.pcm, 16_000, subtype="PCM_16")
        print(c.kind, c.name, f"{c.pcm.size / 16:.0f} ms")


if __name__ == "__main__":
    main()
