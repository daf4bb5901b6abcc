"""The reference end of speech: where the voice-to-voice clock starts.

The clock starts at the *last voiced sample* of the user's speech as the client sent it,
found offline on the clean recording (never by the pipeline under test).  The rule is
numpy only, so a client measures without onnxruntime or any engine.  It is held to ends
marked by eye (``tests/data/end_of_speech_marks.tsv``: 40 recordings -- studio prompts in
digital silence, phone band, crowd-sourced rooms, read speech, commands) to 20 ms; five
fades whose defensible readings span more than that are held to 60 ms.
The marks put the end after the final fricative, a stop's release and its aspiration,
and a vowel's fade until it is ~25 dB under the level the last sound held or has met the
background; breath, the room's reverberation and clicks after the voice are not voice.

How:

1. Band levels: 16 ms Hann frames every 5 ms, power in seven bands from 250 Hz to
   7.5 kHz, each judged against its own noise floor.  A final /s/ lives above 3 kHz
   where room rumble does not; a vowel lives below where hiss does not.  Under 250 Hz
   live hum, rumble and wind on the microphone, and every voiced sound has energy above.
2. Noise floor per band: a low percentile of the band's quiet frames, never under an
   absolute floor.  Digital silence (exact zeros: studio prompts, padded recordings)
   would otherwise put it at -inf.  The old rule's floor did fall to -120 dB there, its
   threshold became "35 dB under the speech peak", and it cut quiet endings: on an IVR
   prompt, -23..-31 dBFS of voice went on 90 ms after its end.
3. Voice level: the power by which the bands clearly above their floor exceed it.
4. Sounding frames: a sound starts at an onset (a band rising sharply) and is
   *sounding* until it has faded ``_DROP_DB`` under its own plateau, or until its fade
   has settled into a steady background ``_KNEE_DB`` or more under that plateau.
   Measured against its own plateau, a sound's end does not depend on the recording's
   gain, and a weak release after a closure or a soft /s/ after a loud vowel keeps its
   own reference.  An onset counts only if its sound comes within ``_GATE_DB`` of the
   recording's loudest: a click or a gate's hiss in a room that reads far over its floor
   must not become a reference the room's own level is measured against.
5. Runs of sounding frames: a run is speech if it lasts a syllable, holds a pitch and
   comes within ``_GATE_DB`` of the loudest; a later run that is not (a release, a
   fricative split from its vowel) belongs to the speech if it starts within
   ``_ATTACH_MS`` of it.  Noise bursts, breath, wind and far clicks belong to nothing.
6. The end is the centre of the last sounding frame of the last run that belongs; the
   start is the end of the recording played backwards.

``benchmarks/end_of_speech_check.py`` compares this rule with the old one on the shared
recordings (every v2v figure moves by minus the difference) and with the marks.
"""

from __future__ import annotations

import numpy as np

from halfsec.measure.percentile import percentile

_RATE = 16_000
_WIN = 256
"""16 ms analysis window: long enough to resolve 250 Hz bands (62.5 Hz bins), short
enough that an abrupt end smears by under 8 ms."""
_HOP = 80
"""5 ms between frames, a quarter of the 20 ms the marks are held to."""

_BANDS_HZ = (
    (250, 500),
    (500, 1000),
    (1000, 2000),
    (2000, 3000),
    (3000, 4000),
    (4000, 5500),
    (5500, 7500),
)
"""Octaves up to 2 kHz (vowel formants), then narrower bands where fricatives and
bursts live.  The 3-4 kHz band holds the top of the phone band (300-3400 Hz); above it,
only wide-band recordings have anything."""

_ABS_FLOOR_DB = -100.0
"""The lowest a band's noise floor may be, in dB relative to full scale.  int16's own
quantisation noise is about -101 dBFS over the whole band; nothing fainter is a sound
anyone recorded on purpose, and studio prompts in exact zeros need *some* floor."""

_FLOOR_PERCENTILE = 10.0
_QUIET_DB = 30.0
_FLOOR_MIN_FRAMES = 20
"""Noise is what a band reads most quietly: the 10th percentile of its frames, taken
among the frames more than 30 dB under the band's loudest when there are at least 20
(100 ms) of them.  Leaving out the loud frames keeps the estimate on the noise in a
recording that is nearly all speech (a trimmed LJSpeech sentence keeps 60 ms of
silence), where a percentile over every frame reads speech; a recording noisier than
30 dB under its speech keeps every frame, which is then mostly noise anyway."""

_MARGIN_DB = 9.0
"""A band counts only when this far above its floor.  A 16 ms frame of steady noise in
the narrowest band (4 bins) peaks about 7.5 dB above the floor's 10th percentile."""

_SNR_DB = 6.0
"""...and a frame only when what those bands add is 6 dB over the noise of all bands
together: one band flickering 9-12 dB over its floor in a noisy room is not a sound."""

_DROP_DB = 30.0
"""A sound has ended once it has fallen this far under its plateau (``_PLATEAU_MS``
levels, the loudest since its onset).  The hand marks end a fade ~25 dB under the level
the eye reads as the plateau, where it leaves the x10 waveform and the spectrogram; the
loudest 25 ms of a vowel sit ~5 dB above that level, hence 30."""

_HOLD_MS = 300.0
"""The plateau is looked for at most this far back.  Fades of 0.15-0.2 dB/ms (breathy
vowel ends) need up to 200 ms to fall 30 dB; beyond 300 ms, a softer syllable that
started without a sharp onset becomes its own reference."""

_PLATEAU_MS = 25.0
"""The plateau is read on levels averaged over 25 ms (power), as the eye reads it
through pitch pulses, not on the peak of one 16 ms frame."""

_KNEE_DB = 12.0
_FLAT_DB = 6.0
_FLAT_MS = 50.0
"""A fade that has fallen 12 dB under its plateau and then will not fall more than 6 dB
in the next 50 ms (no onset there) has reached the background: a denoiser's open gate
or the room's hiss, which in padded or gated recordings sits well above the floor that
the rest of the file reads.  Frames with nothing over the floor are left out of that
look-ahead: digital-silence padding cuts the background off, it does not make it fall."""

_ONSET_DB = 9.0
_ONSET_MS = 30.0
_ONSET_ABOVE_DB = 15.0
_SMOOTH_MS = 20.0
"""A band whose 20 ms level rises 9 dB above its lowest of the last 30 ms, to 15 dB over
its floor, starts a new sound, whose own level becomes the reference: a stop's release
after its closure, a final /s/ after a vowel (in its own bands), a new syllable.
Averaged over 20 ms, pitch pulses and noise move a band by 3 dB or less, so they do not
start sounds; tails (breath, the room's reverberation) only fade, so they never do."""

_SPEECH_MS = 80.0
"""A run that sounds this long (and holds a pitch, below) is speech on its own: a short
syllable lasts 80 ms or more, a click or a lip smack 5-30 ms plus the window's smear."""

_ATTACH_MS = 200.0
"""A run that is not speech on its own belongs to the speech if it starts within 200 ms
of its last sounding frame: a final release after its closure (up to ~150 ms, longer in
the phone band, where the /s/ before the /t/ of "surpassed" sinks into the floor), or a
fricative whose vowel's fade split it off.  A noise burst 245 ms after a Speech
Commands "off" does not."""

_GATE_DB = 38.0
"""Runs whose loudest frame is more than 38 dB under the recording's loudest are not
voice: breath and room noise after speech sit 40 dB or more under it, while the faintest
final releases among the marks (Piper's "stop" and "help") peak 33 dB under.

The same bar decides which onsets start a new sound (within ``_PLATEAU_MS`` of the onset,
some frame must come within 38 dB of the loudest).  In recordings padded or gated with
digital silence the floor reads -100 dBFS and the room 20-30 dB over it, so the room
itself is "sounding"; a tongue click 75 ms after "sugar" (-59 dBFS, 42 dB under) or a
faint smudge of hiss after "sweetener" (46 dB under) then started a sound of its own,
the room stayed within ``_KNEE_DB`` of that new reference, and the end ran 108-118 ms
into the room.  A flicker of LJSpeech's hiss 90 ms after "book" (41 dB under) did the
same.  The faint final /s/ of a Speech Commands "yes" (34 dB under) and Piper's releases
(33) still start sounds."""

_PITCH_WIN = 512
_VOICED_CORR = 0.5
_VOICED_MS = 50.0
"""A run is speech only if it holds 50 ms of frames with a pitch (autocorrelation over
0.5 at a 62-400 Hz period, in a 32 ms window: two periods of a low male voice).  Noise
bursts, breath, wind and handling noise have none, or a few frames where a hum's
harmonics line up; every utterance has a vowel of 50 ms or more."""

_BRIDGE_MS = 20.0
"""Dips shorter than this inside a run (between pitch pulses of creaky voice, within a
burst) do not split it."""


def _band_levels(pcm: np.ndarray) -> np.ndarray:
    """(frames, bands) mean-square level in dB re full scale, one frame per ``_HOP``."""
    x = pcm.astype(np.float64) / 32768.0
    if x.size < _WIN:
        x = np.concatenate([x, np.zeros(_WIN - x.size)])
    frames = np.lib.stride_tricks.sliding_window_view(x, _WIN)[::_HOP]
    window = np.hanning(_WIN)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    # Parseval for a one-sided spectrum: band mean-square of the (unwindowed) signal.
    power *= 2.0 / (_WIN * float(np.sum(window * window)))
    freqs = np.fft.rfftfreq(_WIN, 1.0 / _RATE)
    bands = [power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) for lo, hi in _BANDS_HZ]
    return np.asarray(10.0 * np.log10(np.maximum(np.stack(bands, axis=1), 1e-20)))


def _floors(levels: np.ndarray) -> np.ndarray:
    """Per band: the ``_FLOOR_PERCENTILE`` of the frames well under the band's loudest
    (all frames if too few are), never under the absolute floor."""
    out = np.empty(levels.shape[1])
    for b in range(levels.shape[1]):
        band = levels[:, b]
        quiet = band[band < band.max() - _QUIET_DB]
        pool = quiet if quiet.size >= _FLOOR_MIN_FRAMES else band
        noise = percentile(pool, _FLOOR_PERCENTILE)
        out[b] = _ABS_FLOOR_DB if noise is None else max(noise, _ABS_FLOOR_DB)
    return out


def _voice_level(levels: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Per frame: dB of the power the clearly-above-floor bands add over their floor."""
    above = levels > floor + _MARGIN_DB
    excess = np.where(above, 10.0 ** (levels / 10.0) - 10.0 ** (floor / 10.0), 0.0)
    total = excess.sum(axis=1)
    noise = float(np.sum(10.0 ** (floor / 10.0)))
    return np.where(
        total >= noise * 10.0 ** (_SNR_DB / 10.0),
        10.0 * np.log10(np.maximum(total, 1e-30)),
        -np.inf,
    )


def _onsets(levels: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Frames where some band rises ``_ONSET_DB`` within ``_ONSET_MS`` to a level
    ``_ONSET_ABOVE_DB`` over its floor (levels averaged over ``_SMOOTH_MS`` first)."""
    per_ms = _RATE / 1000 / _HOP
    smooth = max(1, int(round(_SMOOTH_MS * per_ms)))
    span = max(1, int(round(_ONSET_MS * per_ms)))
    power = 10.0 ** (levels / 10.0)
    csum = np.concatenate([np.zeros((smooth, power.shape[1])), np.cumsum(power, axis=0)])
    csum = np.concatenate([np.zeros((1, power.shape[1])), csum])
    trailing = (csum[smooth + 1 :] - csum[1:-smooth]) / smooth
    level = 10.0 * np.log10(np.maximum(trailing, 1e-20))
    before = np.concatenate([np.full((span, level.shape[1]), np.inf), level])[:-1]
    recent_min = np.lib.stride_tricks.sliding_window_view(before, span, axis=0)[: level.shape[0]]
    rise = level - recent_min.min(axis=2)
    hit = ((rise >= _ONSET_DB) & (level >= floor + _ONSET_ABOVE_DB)).any(axis=1)
    # Only the first frame of a rise: the rise stays "9 dB over the last 30 ms" for a
    # while after it, and the sound's own peak must stay inside its reference.
    return np.asarray(hit & ~np.concatenate([[False], hit[:-1]]))


def _sounding(level: np.ndarray, onsets: np.ndarray) -> np.ndarray:
    """Frames with voice within ``_DROP_DB`` of the loudest it has been since the last
    onset that could be voice (and at most ``_HOLD_MS`` back)."""
    per_ms = _RATE / 1000 / _HOP
    hold = int(round(_HOLD_MS * per_ms))
    # The reference is the sound's held level, not the peak of one 16 ms frame: averaged
    # over ``_PLATEAU_MS`` (power), the way the eye reads a plateau through pitch pulses.
    k = max(1, int(round(_PLATEAU_MS * per_ms)))
    power = np.where(np.isfinite(level), 10.0 ** (level / 10.0), 0.0)
    held = np.convolve(power, np.ones(k) / k, mode="same")
    plateau = 10.0 * np.log10(np.maximum(held, 1e-30))
    # An onset starts a sound only if that sound could be voice on its own: some frame
    # within ``_PLATEAU_MS`` of it comes within ``_GATE_DB`` of the loudest.
    lead = np.concatenate([level, np.full(k, -np.inf)])
    soon = np.lib.stride_tricks.sliding_window_view(lead, k + 1)[: level.size].max(axis=1)
    onsets = onsets & (soon >= float(np.max(level)) - _GATE_DB)
    # Settled: the level will not fall more than ``_FLAT_DB`` in the next ``_FLAT_MS``
    # and no new sound starts there -- the fade has reached the background.  Frames with
    # nothing above the floor do not count: a recorder that pads the end with digital
    # silence cuts the background off, it does not make it fall.
    flat = int(round(_FLAT_MS * per_ms))
    ahead = np.concatenate([np.where(np.isfinite(level), plateau, np.inf), np.full(flat, np.inf)])
    ahead_min = np.lib.stride_tricks.sliding_window_view(ahead, flat + 1)[: level.size].min(axis=1)
    ahead_min = np.where(np.isfinite(ahead_min), ahead_min, -np.inf)
    starts = np.concatenate([onsets[1:], np.zeros(flat + 1, dtype=bool)])
    onset_ahead = np.lib.stride_tricks.sliding_window_view(starts, flat)[: level.size].any(axis=1)
    settled = (plateau - ahead_min <= _FLAT_DB) & ~onset_ahead
    out = np.zeros(level.size, dtype=bool)
    since = 0
    for t in range(level.size):
        if onsets[t]:
            since = t
        if np.isfinite(level[t]):
            peak = plateau[max(since, t - hold) : t + 1].max()
            faded = level[t] < peak - _DROP_DB
            out[t] = not faded and not (settled[t] and plateau[t] <= peak - _KNEE_DB)
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[first, last] frame of each run of True, runs closer than ``_BRIDGE_MS`` joined."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return []
    bridge = int(round(_BRIDGE_MS * _RATE / 1000 / _HOP))
    breaks = np.flatnonzero(np.diff(idx) > bridge + 1)
    starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    ends = np.concatenate([idx[breaks], [idx[-1]]])
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def _voiced(pcm: np.ndarray, frames: int) -> np.ndarray:
    """Per frame: is there a pitch?  Normalised autocorrelation of a 32 ms window (same
    centre as the frame), 100-4000 Hz, peak over 2.5-16 ms lags (62-400 Hz) over
    ``_VOICED_CORR``."""
    x = pcm.astype(np.float64) / 32768.0
    half = _PITCH_WIN // 2
    padded = np.concatenate([np.zeros(half), x, np.zeros(_PITCH_WIN)])
    centres = np.arange(frames) * _HOP + _WIN // 2
    idx = centres[:, None] + np.arange(_PITCH_WIN)[None, :]
    window = np.hanning(_PITCH_WIN)
    spec = np.abs(np.fft.rfft(padded[idx] * window, 2 * _PITCH_WIN, axis=1)) ** 2
    freqs = np.fft.rfftfreq(2 * _PITCH_WIN, 1.0 / _RATE)
    spec[:, (freqs < 100) | (freqs > 4000)] = 0.0
    acf = np.fft.irfft(spec, axis=1)[:, :_PITCH_WIN]
    wacf = np.fft.irfft(np.abs(np.fft.rfft(window, 2 * _PITCH_WIN)) ** 2)[:_PITCH_WIN]
    norm = acf / np.maximum(acf[:, :1], 1e-20) / np.maximum(wacf / wacf[0], 1e-3)
    lo, hi = _RATE // 400, _RATE * 16 // 1000
    return np.asarray(norm[:, lo : hi + 1].max(axis=1) > _VOICED_CORR)


def _speech_frames(pcm: np.ndarray) -> tuple[int, int] | None:
    """First and last sounding frame of the speech, or None if there is none."""
    levels = _band_levels(pcm)
    floor = _floors(levels)
    level = _voice_level(levels, floor)
    onsets = _onsets(levels, floor)
    runs = _runs(_sounding(level, onsets))
    if not runs:
        return None
    loudest = float(np.max(level))
    frames_per_ms = _RATE / 1000 / _HOP
    voiced = _voiced(np.asarray(pcm), level.size) & np.isfinite(level)
    voiced_len = int(round(_VOICED_MS * frames_per_ms))
    speech_len = int(round(_SPEECH_MS * frames_per_ms))
    attach = int(round(_ATTACH_MS * frames_per_ms))
    first: int | None = None
    last: int | None = None
    for a, b in runs:
        if float(np.max(level[a : b + 1])) < loudest - _GATE_DB:
            continue
        if b - a + 1 >= speech_len and voiced[a : b + 1].sum() >= voiced_len:
            first = a if first is None else first
            last = b
        elif last is not None and a - last <= attach:
            last = b
    return None if first is None or last is None else (first, last)


def _end_sample(pcm: np.ndarray) -> int | None:
    """One past the last voiced sample of ``pcm``, or None."""
    frames = _speech_frames(pcm)
    if frames is None:
        return None
    return min(frames[1] * _HOP + _WIN // 2, pcm.size)


def voiced_bounds(pcm: np.ndarray, rate: int = 16_000) -> tuple[int, int] | None:
    """(first voiced sample, last voiced sample + 1) of a 16 kHz recording, or None.

    The first voiced sample is the end of speech of the recording played backwards: the
    same rule, so a room's hiss before the first word, a gate opening on it, or a breath
    is left out the way it is after the last word."""
    if rate != _RATE:
        raise ValueError("the end-of-speech rule runs at 16 kHz")
    x = np.asarray(pcm)
    end = _end_sample(x)
    if end is None:
        return None
    backwards = _end_sample(x[::-1])
    start = 0 if backwards is None else x.size - backwards
    return (start, end) if start < end else (max(0, end - 1), end)


def last_voiced_sample(pcm: np.ndarray, rate: int = 16_000) -> int | None:
    """Index one past the last voiced sample (the v2v clock's start), or None if no speech."""
    b = voiced_bounds(pcm, rate)
    return None if b is None else b[1]
