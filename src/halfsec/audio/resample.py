"""Resampling with soxr, the only resampler halfsec uses.

Streams (microphone, network) use ``StreamResampler`` so chunk boundaries cost nothing in
quality; whole buffers (files, TTS clauses) use ``resample``; a live stream whose delay
counts sample by sample (a phone call) uses ``LowDelayResampler``."""

from __future__ import annotations

import math

import numpy as np
import soxr


def resample(pcm: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Resample a whole int16 or float buffer; returns the same dtype."""
    if in_rate == out_rate or pcm.size == 0:
        return pcm
    return soxr.resample(pcm, in_rate, out_rate, quality="HQ")


class StreamResampler:
    """Chunk-by-chunk int16 resampling that keeps filter state between chunks."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._rs = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")
        )

    def process(self, pcm: np.ndarray, last: bool = False) -> np.ndarray:
        if self._rs is None:
            return pcm
        return np.asarray(self._rs.resample_chunk(pcm.astype(np.int16), last=last))


class LowDelayResampler:
    """Chunk-by-chunk resampling that releases output ``lookahead_ms`` after its input.

    Why not ``StreamResampler``: soxr's stream works in blocks, and fed 20 ms chunks it
    returns nothing for several chunks and then a burst (8 -> 16 kHz at HQ: the first
    samples come out ~120 ms after they went in; 48 -> 16 kHz: 20-40 ms).  On a phone
    call that block would be heard as added latency.  Here each chunk is resampled by
    soxr's whole-buffer resampler together with ``history`` earlier input samples (so the
    window's left edge has settled) and output is released only up to ``lookahead_ms``
    before the newest input (what the filter needs of the future), so the delay is that
    and nothing more.  ``quality="LQ"`` (16-bit, wide transition band) needs 2-3 ms of
    lookahead to come within 3 LSB of resampling the whole signal at once; telephone
    audio (300-3400 Hz, 8-bit mu-law) has nothing for a steeper filter to keep.
    ``flush`` releases the rest at the end of a stream (a reply's last clause).
    ``aligned``: a client's input, cut into frames downstream: the first output starts
    with ``aligning_lead`` (see there)."""

    def __init__(
        self,
        in_rate: int,
        out_rate: int,
        lookahead_ms: float = 3.0,
        quality: str = "LQ",
        history: int = 256,
        aligned: bool = False,
    ) -> None:
        g = math.gcd(in_rate, out_rate)
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.quality = quality
        self._step = in_rate // g
        """A window must start on an input sample that falls on a whole output sample."""
        self._up = out_rate // g
        self._ahead = 0 if in_rate == out_rate else math.ceil(lookahead_ms * in_rate / 1000)
        self._history = history
        self._buf = np.zeros(0, dtype=np.int16)
        self._base = 0
        """Input index of ``_buf[0]``."""
        self._received = 0
        self._released = 0
        self._lead_due = aligned  # ``aligning_lead`` not yet put before the output

    @property
    def delay_samples(self) -> int:
        """Input samples held back before the output covering them is released."""
        return self._ahead

    def aligning_lead(self) -> np.ndarray:
        """Silence (at the output rate) to put before the stream's first output, as long
        as the output the lookahead holds back.

        Why: a client sends 20 ms chunks, and each comes out less its last ``lookahead_ms``,
        which follow with the next chunk, 20 ms later.  A consumer that cuts 20 ms frames
        from the first sample (the session) would find every frame short at its own
        chunk's arrival and complete only a chunk later: each frame heard 20 ms late (a
        phone call's pause came a median 20.5 ms later than over the WebSocket before its
        lead).  With the lead, frame k ends where chunk k's released output ends; the
        stream runs ``lookahead_ms`` behind the client's clock, which no timing uses (the
        client measures).  Empty when nothing is held back (same rate in and out)."""
        return np.zeros(-(-self._ahead * self._up // self._step), dtype=np.int16)

    def process(self, pcm: np.ndarray) -> np.ndarray:
        """Feed int16 input; returns the output now due (possibly empty)."""
        if pcm.size:
            self._buf = np.concatenate([self._buf, pcm.astype(np.int16)])
            self._received += pcm.size
        out = self._release(self._received - self._ahead)
        if self._lead_due:
            self._lead_due = False
            out = np.concatenate([self.aligning_lead(), out])
        return out

    def flush(self) -> np.ndarray:
        """The output still held back; the stream may go on afterwards."""
        return self._release(self._received)

    def _release(self, end_in: int) -> np.ndarray:
        end_out = max(0, end_in) * self._up // self._step
        if end_out <= self._released:
            return np.zeros(0, dtype=np.int16)
        first_in = self._released * self._step // self._up
        start = max(self._base, first_in - self._history)
        start -= start % self._step
        start = max(start, self._base)
        window = self._buf[start - self._base :]
        if self.in_rate == self.out_rate:
            out = window
        else:
            out = soxr.resample(window, self.in_rate, self.out_rate, quality=self.quality)
        k0 = start * self._up // self._step
        seg = np.asarray(out[self._released - k0 : end_out - k0], dtype=np.int16)
        self._released += seg.size
        self._buf = self._buf[start - self._base :]
        self._base = start
        return seg
