"""Writes the recordings for the end-of-speech marks (run by hand; output is committed).

    python tests/data/make_end_of_speech_data.py [--force]

Three kinds the shared corpus lacks, written to ``tests/data/end_of_speech/``:

* ``studio_*``: IVR-style prompts as a studio delivers them, synthesized with Piper
  (packaged joe voice) and with espeak-ng, resampled to 16 kHz and framed in digital
  silence (exact zeros), at the levels prompts are mastered to (peaks from -1 to
  -20 dBFS).  Many end on the sounds a level rule cuts short: fricatives ("six",
  "yes", "please"), a released stop ("stop"), a decaying vowel ("goodbye").
* ``phone_*``: speech as a telephone call delivers it: band-limited to 300-3400 Hz,
  G.711 mu-law at 8 kHz.  Stored at 8 kHz (what the line carries); the tests read them
  back at 16 kHz through ``load_audio`` (soxr), as a client would.  Sources are some of
  the studio prompts and some shared human recordings.

Piper's VITS sampling and espeak-ng's output are not bit-exact from run to run, so the
audio is committed rather than regenerated: the hand marks belong to these exact files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from halfsec.audio.io import load_audio
from halfsec.audio.resample import resample
from halfsec.tts.espeak import EspeakEngine
from halfsec.tts.options import TTSOptions
from halfsec.tts.piper import PiperEngine

OUT = Path(__file__).resolve().parent / "end_of_speech"
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "speech" / "audio"
RATE = 16_000

# (name, engine, text, peak dBFS)
STUDIO = [
    ("studio_piper_six", "piper", "For billing, press six.", -3.0),
    ("studio_piper_yes", "piper", "If that is correct, say yes.", -6.0),
    ("studio_piper_please", "piper", "One moment, please.", -1.0),
    ("studio_piper_stop", "piper", "To cancel, say stop.", -6.0),
    ("studio_piper_goodbye", "piper", "Thank you. Goodbye.", -3.0),
    ("studio_piper_number", "piper", "Please enter your account number.", -12.0),
    ("studio_piper_quiet_minutes", "piper", "Your wait is five minutes.", -20.0),
    ("studio_piper_help", "piper", "Say help.", -3.0),
    ("studio_espeak_six", "espeak", "Press six.", -3.0),
    ("studio_espeak_yes", "espeak", "Say yes.", -6.0),
    ("studio_espeak_please", "espeak", "Hold on, please.", -3.0),
    ("studio_espeak_stop", "espeak", "To cancel, say stop.", -10.0),
]

# (name, source: a studio name above or a shared file)
PHONE = [
    ("phone_piper_six", "studio_piper_six"),
    ("phone_piper_number", "studio_piper_number"),
    ("phone_vctk_p225_001", "vctk_p225_001.flac"),
    ("phone_ljspeech_surpassed", "ljspeech_LJ001-0008.flac"),
    ("phone_rhasspy_what_time", "rhasspy_what_time_is_it.flac"),
    ("phone_coffee_small", "picovoice_5c1f2252-71e8-41d8-b645-ae05bbb33bfd.flac"),
]


def studio(engine_name: str, text: str, peak_dbfs: float) -> np.ndarray:
    """One prompt at 16 kHz, peak at ``peak_dbfs``, 200 ms of zeros before, 500 after."""
    opts = TTSOptions(engine="piper" if engine_name == "piper" else "espeak")
    engine = PiperEngine(opts) if engine_name == "piper" else EspeakEngine(opts)
    try:
        raw = engine.render_blocking(text)
        rate = engine.sample_rate
    finally:
        engine.close()
    x = resample(raw.astype(np.float64) / 32768.0, rate, RATE)
    # The engines' own silence around the words is kept (it is part of the prompt);
    # the zeros a studio edit adds go outside it.
    x = x * (10 ** (peak_dbfs / 20) / np.max(np.abs(x)))
    pcm = np.round(x * 32767).astype(np.int16)
    return np.concatenate([np.zeros(RATE // 5, np.int16), pcm, np.zeros(RATE // 2, np.int16)])


def _band(x: np.ndarray, rate: int, lo: float, hi: float) -> np.ndarray:
    """Zero-phase band-pass by FFT mask with 50 Hz raised-cosine edges."""
    n = x.size
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(n, 1 / rate)
    edge = 50.0
    gain = np.ones_like(f)
    gain[f < lo - edge] = 0
    low = (f >= lo - edge) & (f < lo)
    gain[low] = 0.5 - 0.5 * np.cos(np.pi * (f[low] - (lo - edge)) / edge)
    gain[f > hi + edge] = 0
    high = (f > hi) & (f <= hi + edge)
    gain[high] = 0.5 + 0.5 * np.cos(np.pi * (f[high] - hi) / edge)
    return np.asarray(np.fft.irfft(spec * gain, n))


def mu_law(x: np.ndarray) -> np.ndarray:
    """G.711-style mu-law (mu = 255) to 8 bits and back: the quantisation a call adds."""
    mu = 255.0
    y = np.sign(x) * np.log1p(mu * np.minimum(np.abs(x), 1.0)) / np.log1p(mu)
    q = np.round(y * 127.0) / 127.0
    return np.asarray(np.sign(q) * ((1 + mu) ** np.abs(q) - 1) / mu)


def phone(pcm16k: np.ndarray) -> np.ndarray:
    """16 kHz int16 -> 8 kHz int16 as a telephone line delivers it."""
    x = resample(pcm16k.astype(np.float64) / 32768.0, RATE, 8000)
    x = mu_law(_band(x, 8000, 300.0, 3400.0))
    return np.asarray(np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16))


def main() -> None:
    """Writes the files that are missing; ``--force`` rewrites all of them (and then every
    mark of a rewritten studio file has to be read again: the audio will differ)."""
    force = "--force" in sys.argv[1:]
    OUT.mkdir(exist_ok=True)
    made: dict[str, np.ndarray] = {}
    for name, engine, text, peak in STUDIO:
        path = OUT / f"{name}.flac"
        if path.exists() and not force:
            made[name] = load_audio(path)
            continue
        made[name] = studio(engine, text, peak)
        sf.write(path, made[name], RATE, subtype="PCM_16")
    for name, source in PHONE:
        path = OUT / f"{name}.flac"
        if path.exists() and not force:
            continue
        src = made[source] if source in made else load_audio(SHARED / source)
        sf.write(path, phone(src), 8000, subtype="PCM_16")
    total = sum(p.stat().st_size for p in OUT.glob("*.flac"))
    print(f"{len(STUDIO) + len(PHONE)} files, {total / 1024:.0f} KiB in {OUT}")


if __name__ == "__main__":
    main()
