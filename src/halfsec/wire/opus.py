"""Opus for real transports: encode with PyAV's libopus, decode with libopus itself.

Why two bindings
----------------
WebRTC carries speech as Opus, and two of Opus's features matter most on a lossy
mobile link: packet loss concealment (PLC: synthesise a plausible 20 ms when a packet
is missing) and in-band forward error correction (FEC/LBRR: every packet carries a
low-bitrate copy of the *previous* frame, recovered with ``opus_decode(...,
decode_fec=1)``).

* **Encoding** uses PyAV's ``libopus`` codec context (FFmpeg's ``libopusenc``), which
  exposes everything we need as options: ``application=voip``, ``fec=1``,
  ``packet_loss=<expected %>`` (libopus only spends bits on FEC when told to expect
  loss) and ``frame_duration=20``.  It returns exactly one packet per 20 ms frame.
* **Decoding** cannot use PyAV: FFmpeg's decoders (``libopus`` and the native
  ``opus``) have no way to pass ``decode_fec=1``, and an empty packet means "drain",
  not "conceal".  Both PLC and FEC must run on the *same* decoder state that decoded
  the earlier packets, so the whole decoder is libopus called through ``ctypes``.  We
  load the libopus that ships inside PyAV's wheel (``av.libs``) so the encoder and the
  decoder are the same build and no system package is required; a system
  ``libopus`` (``ctypes.util.find_library("opus")``) is the fallback.  ``ctypes``
  releases the GIL during the call, so decoding does not block the event loop's other
  threads.

Rates
-----
Opus is rate-agnostic on the wire: a packet encoded from 48 kHz can be decoded at
16 kHz and vice versa (libopus resamples internally, cheaply, and speech below 8 kHz
is coded at 16 kHz anyway).  So the pipeline should create ``OpusDecoder(16000)`` and
``OpusEncoder(16000)`` and skip resampling altogether.  ``FrameResampler`` exists for
the places that really hold 48 kHz audio (a browser capture, a WAV for a test) and need
exact 20 ms frames at the other rate.

Cost per 20 ms frame, process CPU time on this project's 2-core dev machine with
libopus 1.6.1 (``python benchmarks/jitter_bench.py``, ``codec_cost``): encode ~175 us
at 16 kHz / ~150 us at 48 kHz (24 kbit/s, voip, FEC); decode ~11 us / ~24 us; PLC
~10 us / ~20 us; FEC decode ~8 us / ~21 us.  Under 1 % of one core per direction.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
from collections import deque
from typing import Final

import numpy as np

from halfsec.audio.resample import StreamResampler
from halfsec.errors import AudioInputError, EngineUnavailable

__all__ = [
    "MAX_PACKET_BYTES",
    "OPUS_RATES",
    "FrameResampler",
    "OpusDecoder",
    "OpusEncoder",
    "load_libopus",
    "packet_problem",
]

OPUS_RATES: Final = (8000, 12000, 16000, 24000, 48000)
"""Sample rates libopus accepts at its API (the wire format is rate-agnostic)."""

_MAX_PACKET_BYTES: Final = 1275 * 3 + 7  # RFC 6716: 3 frames of 1275 B + framing
MAX_PACKET_BYTES: Final = 1275
"""The largest 20 ms packet a receiver admits (``packet_problem``).  Opus tops out at 510
kbit/s, which is 1275 bytes per 20 ms, and RFC 6716 (3.2.1) caps one frame at 1275
bytes: nothing an encoder sends for 20 ms is larger (halfsec's own sends ~60-80 bytes at
24 kbit/s, a browser a few hundred).  So a jitter buffer of 500 packets holds at most
640 KB, where 64 KiB messages once made it 32 MB per session."""
_ADMITTED_MS: Final = 20
_MAX_FRAME_MS: Final = 120  # RFC 6716: the longest packet duration
_OPUS_OK: Final = 0
_OPUS_ERRORS: Final = {
    -1: "bad argument",
    -2: "buffer too small",
    -3: "internal error",
    -4: "invalid or corrupted packet",
    -5: "unimplemented request",
    -6: "invalid state",
    -7: "memory allocation failed",
}

_lib: ctypes.CDLL | None = None


def _candidate_paths() -> list[str]:
    paths: list[str] = []
    try:
        # PyAV only to find the libopus its wheel ships; a system libopus (below) is
        # enough to decode, so its absence is not an error.  Imported here, like in the
        # encoder, because PyAV loads FFmpeg's libraries, and importing this module (the
        # jitter buffer's codecs do) should not cost that before anything is encoded.
        import av

        libs = os.path.join(os.path.dirname(os.path.dirname(av.__file__)), "av.libs")
        paths += sorted(glob.glob(os.path.join(libs, "libopus*.so*")))
    except ImportError:
        pass
    found = ctypes.util.find_library("opus")
    if found:
        paths.append(found)
    return paths


def load_libopus() -> ctypes.CDLL:
    """Load libopus once (PyAV's bundled copy first, then the system's) and declare the
    few functions we call, so ctypes checks argument types instead of guessing."""
    global _lib
    if _lib is not None:
        return _lib
    errors = []
    for path in _candidate_paths():
        try:
            lib = ctypes.CDLL(path)
            break
        except OSError as e:
            errors.append(f"{path}: {e}")
    else:
        raise EngineUnavailable(
            "libopus not found: install PyAV with its wheel (pip install av) or the "
            f"system package libopus0 ({'; '.join(errors) or 'no candidates'})"
        )
    lib.opus_decoder_create.restype = ctypes.c_void_p
    lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.opus_decoder_destroy.restype = None
    lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_decode.restype = ctypes.c_int
    lib.opus_decode.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int32,
        ctypes.POINTER(ctypes.c_int16),
        ctypes.c_int,
        ctypes.c_int,
    ]
    lib.opus_packet_get_nb_samples.restype = ctypes.c_int
    lib.opus_packet_get_nb_samples.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32]
    lib.opus_packet_parse.restype = ctypes.c_int
    lib.opus_packet_parse.argtypes = [
        ctypes.c_char_p,
        ctypes.c_int32,
        ctypes.POINTER(ctypes.c_ubyte),
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_int16),
        ctypes.POINTER(ctypes.c_int),
    ]
    lib.opus_get_version_string.restype = ctypes.c_char_p
    lib.opus_get_version_string.argtypes = []
    _lib = lib
    return lib


def libopus_version() -> str:
    return str(load_libopus().opus_get_version_string().decode())


def _check_rate(sample_rate: int) -> None:
    if sample_rate not in OPUS_RATES:
        raise AudioInputError(f"Opus supports sample rates {OPUS_RATES}, got {sample_rate}")


def packet_problem(packet: bytes, frame_ms: int = _ADMITTED_MS) -> str | None:
    """Why ``packet`` may not enter a jitter buffer, or None when it is one well-formed
    Opus packet of exactly ``frame_ms`` (the check at the door, before it is buffered).

    One buffer slot is one sequence number is ``frame_ms`` of audio: a 120 ms packet in a
    20 ms slot would hand the pipeline six times the audio of real time, and a 10 ms one
    half.  Every client halfsec knows sends 20 ms (its own, and browsers by default), so
    other durations are refused rather than re-timed.  The framing (frame count and
    lengths, padding) is parsed by libopus itself (``opus_packet_parse``), so a packet
    that passes decodes or at worst conceals: it cannot stall the buffer."""
    data = bytes(packet)
    if not data:
        return "empty Opus packet"
    if len(data) > MAX_PACKET_BYTES:
        return (
            f"Opus packet of {len(data)} bytes exceeds {MAX_PACKET_BYTES} bytes, the most "
            "Opus codes into 20 ms (510 kbit/s)"
        )
    lib = load_libopus()
    toc = ctypes.c_ubyte(0)
    frames = (ctypes.c_void_p * 48)()
    sizes = (ctypes.c_int16 * 48)()
    offset = ctypes.c_int(0)
    n = lib.opus_packet_parse(
        data, len(data), ctypes.byref(toc), frames, sizes, ctypes.byref(offset)
    )
    if n < 0:
        return f"malformed Opus packet ({_OPUS_ERRORS.get(n, n)})"
    samples = lib.opus_packet_get_nb_samples(data, len(data), 48_000)
    if samples < 0:
        return f"malformed Opus packet ({_OPUS_ERRORS.get(samples, samples)})"
    if samples != 48 * frame_ms:
        return f"Opus packet of {samples / 48:g} ms; send one {frame_ms} ms packet per message"
    return None


class OpusEncoder:
    """One Opus packet per ``frame_ms`` of int16 PCM, via PyAV's libopus encoder.

    ``expected_loss_pct`` is passed to libopus as ``packet_loss``: with ``fec=True``
    libopus only embeds the previous frame's LBRR copy when it expects loss, and spends
    more bits on it the higher the percentage.  Voice mode (``application=voip``)
    favours intelligibility over fidelity and enables FEC-friendly SILK coding.
    """

    def __init__(
        self,
        sample_rate: int = 48000,
        channels: int = 1,
        frame_ms: int = 20,
        bitrate: int = 24000,
        fec: bool = True,
        expected_loss_pct: int = 5,
        application: str = "voip",
    ) -> None:
        import av  # not at module level: see _candidate_paths (FFmpeg only to encode)

        _check_rate(sample_rate)
        if channels not in (1, 2):
            raise AudioInputError(f"Opus channels must be 1 or 2, got {channels}")
        if frame_ms not in (10, 20, 40, 60):
            raise AudioInputError(f"frame_ms must be 10, 20, 40 or 60, got {frame_ms}")
        self.sample_rate = sample_rate
        self.channels = channels
        self.frame_ms = frame_ms
        self.frame_samples = sample_rate * frame_ms // 1000
        self._layout = "mono" if channels == 1 else "stereo"
        ctx = av.CodecContext.create("libopus", "w")
        ctx.sample_rate = sample_rate
        ctx.layout = self._layout
        ctx.format = "s16"
        ctx.bit_rate = bitrate
        ctx.options = {
            "application": application,
            "frame_duration": str(frame_ms),
            "fec": "1" if fec else "0",
            "packet_loss": str(max(0, min(100, int(expected_loss_pct)))),
            "vbr": "on",
        }
        ctx.open()
        self._ctx = ctx
        self._audio_frame = av.AudioFrame
        self._pts = 0

    def encode(self, pcm: np.ndarray) -> bytes:
        """Encode exactly one frame (``frame_samples`` int16 samples per channel)."""
        a = np.asarray(pcm)
        if a.dtype != np.int16:
            raise AudioInputError(f"Opus encoder wants int16 PCM, got {a.dtype}")
        if a.size != self.frame_samples * self.channels:
            raise AudioInputError(
                f"Opus encoder wants {self.frame_samples * self.channels} samples "
                f"({self.frame_ms} ms at {self.sample_rate} Hz), got {a.size}; "
                "buffer or pad to whole frames (FrameResampler does)"
            )
        frame = self._audio_frame.from_ndarray(
            np.ascontiguousarray(a.reshape(1, -1)), format="s16", layout=self._layout
        )
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        self._pts += self.frame_samples
        packets = self._ctx.encode(frame)
        # libopusenc is synchronous: one packet out per frame in (checked in tests).
        return b"".join(bytes(p) for p in packets)


class OpusDecoder:
    """libopus decoder state with the three calls a jitter buffer needs.

    * ``decode(packet)``: normal decode; returns all samples in the packet.
    * ``conceal()``: one frame of PLC (libopus extrapolates from its state and fades
      towards silence over consecutive calls - no click, no hard zero).
    * ``decode_fec(next_packet)``: the *lost previous* frame rebuilt from the LBRR copy
      inside ``next_packet``.  Afterwards call ``decode(next_packet)`` as usual; if
      the packet carries no FEC, libopus falls back to PLC, which is still correct.

    Malformed input raises ``AudioInputError``; libopus never reads past the buffer it is
    given, so a hostile packet cannot crash the process.
    """

    def __init__(self, sample_rate: int = 48000, channels: int = 1, frame_ms: int = 20) -> None:
        _check_rate(sample_rate)
        if channels not in (1, 2):
            raise AudioInputError(f"Opus channels must be 1 or 2, got {channels}")
        self.sample_rate = sample_rate
        self.channels = channels
        self.frame_ms = frame_ms
        self.frame_samples = sample_rate * frame_ms // 1000
        self._lib = load_libopus()
        err = ctypes.c_int(0)
        self._dec = self._lib.opus_decoder_create(sample_rate, channels, ctypes.byref(err))
        if err.value != _OPUS_OK or not self._dec:
            raise EngineUnavailable(f"opus_decoder_create failed: {_OPUS_ERRORS.get(err.value)}")
        self._max = sample_rate * _MAX_FRAME_MS // 1000
        self._buf = (ctypes.c_int16 * (self._max * channels))()

    def __del__(self) -> None:
        dec = getattr(self, "_dec", None)
        if dec:
            self._lib.opus_decoder_destroy(dec)
            self._dec = None

    def _run(self, data: bytes | None, frame_size: int, fec: int) -> np.ndarray:
        n = self._lib.opus_decode(
            self._dec, data, len(data) if data else 0, self._buf, frame_size, fec
        )
        if n < 0:
            raise AudioInputError(
                f"malformed Opus packet ({_OPUS_ERRORS.get(n, n)}); "
                "drop it and conceal the frame instead"
            )
        return np.ctypeslib.as_array(self._buf)[: n * self.channels].copy()

    def _validate(self, packet: bytes) -> bytes:
        if not isinstance(packet, bytes | bytearray | memoryview):
            raise AudioInputError(f"an Opus packet must be bytes, got {type(packet).__name__}")
        data = bytes(packet)
        if not data:
            raise AudioInputError("empty Opus packet: call conceal() for a missing frame")
        if len(data) > _MAX_PACKET_BYTES:
            raise AudioInputError(f"Opus packet of {len(data)} bytes exceeds the RFC 6716 limit")
        nb = self._lib.opus_packet_get_nb_samples(data, len(data), self.sample_rate)
        if nb < 0:
            raise AudioInputError(f"malformed Opus packet ({_OPUS_ERRORS.get(nb, nb)})")
        if nb > self._max:
            raise AudioInputError(f"Opus packet claims {nb} samples, more than 120 ms")
        return data

    def decode(self, packet: bytes) -> np.ndarray:
        data = self._validate(packet)
        return self._run(data, self._max, 0)

    def conceal(self, samples: int | None = None) -> np.ndarray:
        """PLC for one missing frame (``frame_samples`` unless told otherwise; must be a
        multiple of 2.5 ms)."""
        return self._run(None, samples or self.frame_samples, 0)

    def decode_fec(self, next_packet: bytes, samples: int | None = None) -> np.ndarray:
        """Rebuild the lost frame *before* ``next_packet`` from its in-band FEC."""
        data = self._validate(next_packet)
        return self._run(data, samples or self.frame_samples, 1)


class FrameResampler:
    """Streaming resampler that emits exact frames at the output rate.

    soxr's streaming filter has a delay, so a 20 ms input chunk does not map to exactly
    20 ms of output; Opus (and the 20 ms pipeline) need whole frames.  This keeps a FIFO
    and returns every complete ``frame_ms`` frame available after each push.
    """

    def __init__(self, in_rate: int, out_rate: int, frame_ms: int = 20) -> None:
        self._rs = StreamResampler(in_rate, out_rate)
        self.frame_samples = out_rate * frame_ms // 1000
        self._fifo: deque[np.ndarray] = deque()
        self._held = 0

    def push(self, pcm: np.ndarray, last: bool = False) -> list[np.ndarray]:
        out = self._rs.process(np.asarray(pcm, dtype=np.int16), last=last)
        if out.size:
            self._fifo.append(out.astype(np.int16, copy=False))
            self._held += out.size
        if last and self._held % self.frame_samples:
            pad = self.frame_samples - self._held % self.frame_samples
            self._fifo.append(np.zeros(pad, np.int16))
            self._held += pad
        frames: list[np.ndarray] = []
        if self._held < self.frame_samples:
            return frames
        allpcm = np.concatenate(list(self._fifo))
        self._fifo.clear()
        n = allpcm.size // self.frame_samples
        for i in range(n):
            frames.append(allpcm[i * self.frame_samples : (i + 1) * self.frame_samples])
        rest = allpcm[n * self.frame_samples :]
        if rest.size:
            self._fifo.append(rest)
        self._held = rest.size
        return frames
