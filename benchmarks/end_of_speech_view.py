"""Draw the end of a recording so a person can mark where the voice stops, by eye.

    python benchmarks/end_of_speech_view.py FILE OUT.png [--center-ms MS] [--span-ms 500]
        [--mark-ms MS ...]

One PNG, three panels:

* the whole recording as a level envelope (5 ms RMS, dBFS), to see where speech is;
* a zoom of ``--span-ms`` around ``--center-ms`` (default: the last 5 ms window 20 dB
  above the recording's quietest tenth and within 50 dB of its loudest, a deliberately
  generous guess that only places the zoom): the waveform (linear, and magnified x10 so
  decays and soft fricatives show), the 2.5 ms RMS envelope in dBFS on a -100..0 grid
  (red: above 250 Hz, leaving out hum and rumble; blue: above 3 kHz, where fricatives
  live), and a
  spectrogram (16 ms Hann window, 2 ms hop, 0-8 kHz, 80 dB range);
* a ruler every 10 ms (labelled every 50 ms) across the zoom, plus any ``--mark-ms``
  drawn in red, so a candidate mark can be checked against the picture.

Only numpy and Pillow: the lab's machines do not have matplotlib, and a marking tool
should not decide anything itself, so nothing here computes an end of speech.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from halfsec.audio.io import load_audio
from halfsec.measure.percentile import percentile_rows

RATE = 16_000
WIDTH = 1200
_ANCHORS = np.array(
    [[0, 0, 4], [40, 10, 90], [120, 30, 120], [200, 60, 80], [250, 140, 30], [252, 252, 160]],
    dtype=np.float64,
)


def _colour(v: np.ndarray) -> np.ndarray:
    """0..1 -> RGB along a dark-to-bright ramp (magma-like)."""
    pos = np.clip(v, 0.0, 1.0) * (len(_ANCHORS) - 1)
    i = np.minimum(pos.astype(int), len(_ANCHORS) - 2)
    f = (pos - i)[..., None]
    return np.asarray(_ANCHORS[i] * (1 - f) + _ANCHORS[i + 1] * f, dtype=np.uint8)


def _rms_db(x: np.ndarray, win: int, hop: int) -> np.ndarray:
    n = max(0, (x.size - win) // hop + 1)
    if n == 0:
        return np.zeros(0)
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
    seg = x[idx]
    return np.asarray(10 * np.log10(np.maximum(np.mean(seg * seg, axis=1), 1e-12)))


def _guess_center(x: np.ndarray) -> int:
    db = _rms_db(x, 80, 80)
    if db.size == 0:
        return x.size // 2
    floor = float(percentile_rows(db, 10))
    idx = np.flatnonzero(db > max(floor + 20, float(db.max()) - 50))
    return x.size // 2 if idx.size == 0 else int(idx[-1] + 1) * 80


def render(pcm: np.ndarray, center: int | None, span_ms: float, marks: list[float]) -> Image.Image:
    x = pcm.astype(np.float64) / 32768.0
    if center is None:
        center = _guess_center(x)
    span = int(span_ms * RATE / 1000)
    a = max(0, center - span * 3 // 4)
    b = min(x.size, a + span)
    a = max(0, b - span)
    h_over, h_wave, h_env, h_spec, h_rule = 90, 200, 160, 220, 24
    height = h_over + h_wave + h_env + h_spec + h_rule + 10
    img = Image.new("RGB", (WIDTH, height), (255, 255, 255))
    d = ImageDraw.Draw(img)

    # Overview: 5 ms envelope of the whole file, zoom window shaded.
    env = _rms_db(x, 80, 80)
    if env.size:
        px = np.linspace(0, WIDTH - 1, env.size)
        ys = h_over - 1 - (np.clip(env, -100, 0) + 100) / 100 * (h_over - 12)
        d.rectangle([a / x.size * WIDTH, 0, b / x.size * WIDTH, h_over], fill=(225, 235, 255))
        d.line(list(zip(px.tolist(), ys.tolist(), strict=True)), fill=(0, 0, 0))
    d.text((4, 2), f"whole file {x.size / RATE:.3f} s, 5 ms RMS -100..0 dBFS", fill=(0, 0, 0))

    top = h_over + 5
    seg = x[a:b]
    edges = np.linspace(0, seg.size, WIDTH + 1).astype(int)  # linear: one column per span/WIDTH
    cols = [np.arange(edges[c], max(edges[c + 1], edges[c] + 1)) for c in range(WIDTH)]
    mid = top + h_wave // 2
    for gain, colour in ((10.0, (170, 200, 255)), (1.0, (0, 0, 120))):
        for c, ix in enumerate(cols):
            if ix.size:
                lo = float(np.clip(seg[ix].min() * gain, -1, 1))
                hi = float(np.clip(seg[ix].max() * gain, -1, 1))
                d.line([c, mid - hi * h_wave / 2, c, mid - lo * h_wave / 2], fill=colour)
    d.text((4, top), "waveform (dark) and x10 (light)", fill=(0, 0, 0))

    top += h_wave
    # The envelope leaves out what is under 250 Hz: mains hum, rumble and wind on the
    # microphone live there, and every voiced sound has energy above it.
    spec_voice = np.fft.rfft(x)
    spec_voice[np.fft.rfftfreq(x.size, 1 / RATE) < 250] = 0
    e = _rms_db(np.fft.irfft(spec_voice, x.size)[a:b], 40, 8)  # 2.5 ms window, 0.5 ms hop
    for lvl in range(-100, 1, 10):
        y = top + h_env - (lvl + 100) / 100 * h_env
        d.line([0, y, WIDTH, y], fill=(220, 220, 220) if lvl % 20 else (170, 170, 170))
        if lvl % 20 == 0:
            d.text((2, y - 11), f"{lvl}", fill=(100, 100, 100))
    # Blue: above 3 kHz only, where fricatives live, so a soft final /s/ shows even when
    # the vowel band's level hides it.
    spec_hi = np.fft.rfft(x)  # whole file: no wrap-around at the zoom's edges
    spec_hi[np.fft.rfftfreq(x.size, 1 / RATE) < 3000] = 0
    high = np.fft.irfft(spec_hi, x.size)[a:b]
    for trace, colour in ((_rms_db(high, 40, 8), (0, 90, 230)), (e, (200, 0, 0))):
        if trace.size:
            px = (np.arange(trace.size) * 8 + 20) / seg.size * WIDTH
            ys = top + h_env - (np.clip(trace, -100, 0) + 100) / 100 * h_env
            d.line(list(zip(px.tolist(), ys.tolist(), strict=True)), fill=colour)

    top += h_env
    nfft, hop = 256, 32
    padded = np.concatenate([np.zeros(nfft // 2), seg, np.zeros(nfft // 2)])
    nfr = max(1, (padded.size - nfft) // hop + 1)
    idx = np.arange(nfft)[None, :] + hop * np.arange(nfr)[:, None]
    spec = np.abs(np.fft.rfft(padded[idx] * np.hanning(nfft), axis=1)) ** 2
    sdb = 10 * np.log10(np.maximum(spec, 1e-14))
    top_db = max(float(sdb.max()), -40.0)
    norm = (sdb - (top_db - 80)) / 80
    rgb = _colour(norm.T[::-1])  # low frequencies at the bottom
    spec_img = Image.fromarray(rgb).resize((WIDTH, h_spec), Image.Resampling.NEAREST)
    img.paste(spec_img, (0, top))
    for khz in (1, 2, 3, 4, 6):
        y = top + h_spec - khz / 8 * h_spec
        d.text((2, y - 6), f"{khz}k", fill=(255, 255, 255))

    # Ruler and marks across the zoom panels.
    t0_ms = a * 1000 / RATE
    t1_ms = b * 1000 / RATE
    first = int(np.ceil(t0_ms / 10)) * 10
    for t in range(first, int(t1_ms) + 1, 10):
        xpx = (t - t0_ms) / (t1_ms - t0_ms) * WIDTH
        major = t % 50 == 0
        d.line(
            [xpx, h_over + 5, xpx, top + h_spec],
            fill=(120, 120, 120) if major else (215, 215, 215),
        )
        if major:
            d.text((xpx + 2, top + h_spec + 4), f"{t}", fill=(0, 0, 0))
    for m in marks:
        xpx = (m - t0_ms) / (t1_ms - t0_ms) * WIDTH
        d.line([xpx, h_over + 5, xpx, top + h_spec], fill=(255, 0, 0), width=1)
    return img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--center-ms", type=float, default=None)
    ap.add_argument("--span-ms", type=float, default=500.0)
    ap.add_argument("--mark-ms", type=float, action="append", default=[])
    args = ap.parse_args()
    pcm = load_audio(args.file)
    center = None if args.center_ms is None else int(args.center_ms * RATE / 1000)
    render(pcm, center, args.span_ms, args.mark_ms).save(args.out)


if __name__ == "__main__":
    main()
