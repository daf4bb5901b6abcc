"""Can processing before the recognizer, or another recognizer, win back phone-band words?

    python benchmarks/phone_front_end.py [--variants a,b,...] [--json OUT]

The call's audio as the server gets it (``telephone_band`` + mu-law, 8 kHz) is brought to
16 kHz with the server's ``LowDelayResampler`` and then, per variant, changed before
``WhisperDecoder`` (the server's settings and the domain prompt) decodes it:

* ``plain``: nothing (what ``/twilio`` fed tiny.en before ``stt.phone_model``);
* ``noiseD``: white noise at D dBFS in the empty 3.6-8 kHz band (Whisper saw little
  speech with a hard edge at 4 kHz; noise makes the band look like a wideband line's);
* ``foldG``: spectral folding, the classic cheap bandwidth extension: the 0-4 kHz
  spectrum mirrored into 4.6-8 kHz (zero-insertion image) at G dB;
* ``preA``: pre-emphasis ``y[n] = x[n] - A x[n-1]`` (a tilt toward the highs that remain);
* ``shelfF+G``: G dB above F Hz (the 2-3.4 kHz consonant region);
* ``rmsD`` / ``peakD``: level normalised to D dBFS (RMS / peak);
* ``wide``: the wideband recording itself (the reference).

and per decoder: ``tiny`` (greedy), ``tiny-beam5``, ``base`` (Whisper base, the phone
model ``stt.phone_model`` ships).  Variant names combine as ``decoder:audio`` (default
list below).

**Not overfit.** Choosing among a dozen variants on 16 sentences would fit noise (one
word is 1.1 points of a half).  So the variants are *chosen on* the 150 coffee orders
(command acceptance against their labels, and words changed against the wideband
transcript) plus half A of the bench's 16 sentences (every other one, by length), and
*reported on* half B; ``twilio_bench.py`` then measures the chosen one end to end.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import twilio_bench as tb
from _cli import bench_parser, emit

from halfsec.audio.io import load_audio
from halfsec.audio.resample import LowDelayResampler
from halfsec.config import load_config
from halfsec.lab.clients.telephone_band import telephone_band
from halfsec.lab.report.json import accepted, default_meta
from halfsec.logic.factory import create_logic
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.measure.wer import word_errors
from halfsec.stt.options import STTOptions
from halfsec.stt.phone_model import phone_model_dir
from halfsec.stt.whisper_decoder import WhisperDecoder
from halfsec.wire.mulaw import MULAW_RATE, mulaw_decode, mulaw_encode

RATE = 16_000
DEFAULT = (
    "tiny:wide,tiny:plain,tiny:noise-70,tiny:noise-55,tiny:noise-40,tiny:fold-20,"
    "tiny:fold-10,tiny:fold-3,tiny:pre0.5,tiny:pre0.9,tiny:rms-20,tiny:peak-1,"
    "tiny:shelf2000+6,tiny-beam5:plain,base:wide,base:plain,base:shelf2000+6"
)


def upsample(narrow: np.ndarray) -> np.ndarray:
    up = LowDelayResampler(MULAW_RATE, RATE)
    parts = [up.process(narrow[i : i + 160]) for i in range(0, narrow.size, 160)]
    return np.concatenate([*parts, up.flush()]).astype(np.float64)


def _band_gain(n: int, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    return gain(np.fft.rfftfreq(n, 1.0 / RATE))


def high_noise(n: int, dbfs: float) -> np.ndarray:
    w = np.random.default_rng(0).standard_normal(n)
    y = np.fft.irfft(np.fft.rfft(w) * _band_gain(n, lambda f: f >= 3600), n=n)
    return y * (10 ** (dbfs / 20) * 32768 / max(1e-9, float(np.sqrt(np.mean(y**2)))))


def folded(narrow: np.ndarray, db: float) -> np.ndarray:
    z = np.zeros(narrow.size * 2)
    z[::2] = narrow * 2.0
    g = _band_gain(z.size, lambda f: (f >= 4600) * 10 ** (db / 20))
    return np.fft.irfft(np.fft.rfft(z) * g, n=z.size)


def front_end(name: str, narrow: np.ndarray) -> np.ndarray:
    """The 16 kHz float signal of variant ``name`` (see the module docstring)."""
    x = upsample(narrow)
    if name == "plain":
        return x
    if name.startswith("noise"):
        return x + high_noise(x.size, float(name[5:]))
    if name.startswith("fold"):
        y = folded(narrow, float(name[4:]))
        m = min(x.size, y.size)
        return x[:m] + y[:m]
    if name.startswith("pre"):
        y = x.copy()
        y[1:] -= float(name[3:]) * x[:-1]
        return y
    if name.startswith("shelf"):
        f0, db = (float(v) for v in name[5:].split("+"))
        g = _band_gain(x.size, lambda f: np.where(f >= f0, 10 ** (db / 20), 1.0))
        return np.fft.irfft(np.fft.rfft(x) * g, n=x.size)
    if name.startswith("rms"):
        return x * (10 ** (float(name[3:]) / 20) * 32768 / (np.sqrt(np.mean(x**2)) + 1e-9))
    if name.startswith("peak"):
        return x * (10 ** (float(name[4:]) / 20) * 32768 / (np.max(np.abs(x)) + 1e-9))
    raise SystemExit(f"unknown front end {name!r} (see --help)")


def clips() -> list[dict[str, Any]]:
    """Coffee orders and the bench's 16 sentences (halves A/B), speech-trimmed."""
    bench = [it.path.name for it, _ in tb.recordings(16) if tb._sentence(it)]
    out = []
    for it in tb.load_corpus(tb.MANIFEST).items:
        if it.intent:
            kind = "coffee"
        elif it.path.name in bench:
            kind = "A" if bench.index(it.path.name) % 2 == 0 else "B"
        else:
            continue
        pcm = load_audio(it.path)
        b = voiced_bounds(pcm)
        clip = pcm if b is None else pcm[max(0, b[0] - 4800) : b[1] + 16000]
        narrow = mulaw_decode(mulaw_encode(telephone_band(clip)))
        out.append({"item": it, "kind": kind, "wide": clip, "narrow": narrow})
    return out


def main(variants: list[str]) -> dict[str, Any]:
    logic = create_logic(load_config(environ={}).logic)
    prompt = logic.domain.stt_prompt()  # type: ignore[attr-defined]
    decoders = {
        "tiny": WhisperDecoder(STTOptions(prompt=prompt)),
        "tiny-beam5": WhisperDecoder(STTOptions(prompt=prompt, beam_size=5)),
        "base": WhisperDecoder(STTOptions(prompt=prompt, model_path=str(phone_model_dir()))),
    }
    data = clips()
    wide_text = {
        c["item"].path.name: decoders["tiny"].decode(c["wide"], final=True).text for c in data
    }
    results: dict[str, Any] = {}
    for v in variants:
        dec_name, audio = v.split(":")
        dec = decoders[dec_name]
        r: dict[str, Any] = {"coffee_accepted": 0, "coffee_n": 0, "changed": 0, "words": 0}
        r |= {"A": [0, 0], "B": [0, 0], "compute_ms": []}
        for c in data:
            it = c["item"]
            pcm = c["wide"] if audio == "wide" else front_end(audio, c["narrow"])
            got = dec.decode(np.clip(np.round(pcm), -32768, 32767).astype(np.int16), final=True)
            r["compute_ms"].append(got.compute_ms)
            if c["kind"] == "coffee":
                u = logic.understand(got.text)
                r["coffee_accepted"] += accepted(u.intent, u.slots, it.intent, it.slots)
                r["coffee_n"] += 1
                e, n = word_errors(wide_text[it.path.name], got.text)
                r["changed"], r["words"] = r["changed"] + e, r["words"] + n
            else:
                e, n = word_errors(it.transcript or "", got.text)
                r[c["kind"]] = [r[c["kind"]][0] + e, r[c["kind"]][1] + n]
        ms = r.pop("compute_ms")
        r["compute_ms_mean"] = round(float(np.mean(ms)), 1)
        r["sentences_wer_pct"] = round(100 * (r["A"][0] + r["B"][0]) / (r["A"][1] + r["B"][1]), 1)
        results[v] = r
        print(
            f"{v:24s} coffee {r['coffee_accepted']}/{r['coffee_n']} changed "
            f"{100 * r['changed'] / max(1, r['words']):.1f}% | A {r['A'][0]}/{r['A'][1]} "
            f"| B {r['B'][0]}/{r['B'][1]} | all {r['sentences_wer_pct']} % | "
            f"{r['compute_ms_mean']} ms",
            file=sys.stderr,
            flush=True,
        )
    return {"meta": default_meta("python " + " ".join(sys.argv)), "variants": results}


if __name__ == "__main__":
    ap = bench_parser(__doc__)
    ap.add_argument("--variants", default=DEFAULT, help="decoder:audio, comma-separated")
    a = ap.parse_args()
    emit(main(a.variants.split(",")), a.json)
