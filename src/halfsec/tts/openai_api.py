"""Streaming text to speech from any server that speaks OpenAI's ``POST /v1/audio/speech``.

The answer is read as it streams, so the first audio reaches the caller after the
server's first bytes, not after the whole clause.  ``response_format`` ``pcm`` is raw
16-bit little-endian mono at the server's fixed rate (OpenAI: 24 kHz, which is what
``tts.openai_sample_rate`` says); ``wav`` carries its rate in the header, and audio at
another rate than the declared one is resampled to it, because the runtime sizes its
resampler from ``sample_rate`` before the first byte arrives.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

import numpy as np

from halfsec.audio.resample import StreamResampler
from halfsec.remote_api import RemoteAPI, RemoteEngineError
from halfsec.tts.engine import TTSEngine
from halfsec.tts.options import TTSOptions
from halfsec.tts.silence_trim import LeadingSilenceTrimmer

__all__ = ["OpenAISpeechEngine", "WavStreamReader"]

SPEECH_PATH = "audio/speech"
READ_BYTES = 4096
"""Bytes read from the response at a time (~85 ms of 24 kHz audio)."""


class WavStreamReader:
    """Incremental WAV parser: bytes in as they arrive, int16 samples out.

    Streaming servers cannot know the length up front and write 0 or 0xFFFFFFFF as the
    data size, so the ``data`` chunk is taken to run to the end of the stream."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.rate: int | None = None
        self.channels = 1
        self._buf = b""
        self._in_data = False

    def feed(self, data: bytes) -> bytes:
        """PCM16 bytes of the data chunk available so far (header bytes are held)."""
        self._buf += data
        if self._in_data:
            out, self._buf = self._buf, b""
            return out
        if len(self._buf) < 12:
            return b""
        if self._buf[:4] != b"RIFF" or self._buf[8:12] != b"WAVE":
            raise RemoteEngineError(f"{self.url} sent response_format=wav that is not a WAV file")
        pos = 12
        while len(self._buf) >= pos + 8:
            chunk_id = self._buf[pos : pos + 4]
            size = struct.unpack("<I", self._buf[pos + 4 : pos + 8])[0]
            if chunk_id == b"data":
                if self.rate is None:
                    raise RemoteEngineError(f"{self.url} sent WAV data before its fmt chunk")
                self._in_data = True
                out, self._buf = self._buf[pos + 8 :], b""
                return out
            if len(self._buf) < pos + 8 + size:
                return b""  # the rest of this header chunk is still on its way
            if chunk_id == b"fmt ":
                fmt, channels, rate, _, _, bits = struct.unpack(
                    "<HHIIHH", self._buf[pos + 8 : pos + 24]
                )
                if fmt not in (1, 0xFFFE) or bits != 16:
                    raise RemoteEngineError(
                        f"{self.url} sent WAV that is not 16-bit PCM (format {fmt}, {bits} bits)"
                    )
                self.rate, self.channels = rate, channels
            pos += 8 + size + (size & 1)
        return b""


class OpenAISpeechEngine(TTSEngine):
    """One client (and connection pool) shared by every session of the process."""

    name = "openai"

    def __init__(self, options: TTSOptions | None = None) -> None:
        self.options = options or TTSOptions(engine="openai")
        self.api = RemoteAPI.for_engine(
            "tts",
            self.options.openai_base_url,
            self.options.openai_api_key_env,
            self.options.openai_timeout_s,
        )
        self.sample_rate = self.options.openai_sample_rate
        self._keep = round(self.options.keep_leading_ms * self.sample_rate / 1000)

    def _body(self, text: str) -> dict[str, object]:
        body: dict[str, object] = {
            "model": self.options.openai_model,
            "input": text,
            "voice": self.options.openai_voice,
            "response_format": self.options.openai_format,
        }
        if self.options.length_scale is not None:
            body["speed"] = 1.0 / self.options.length_scale  # Piper's speed knob, inverted
        return body

    async def synthesize(self, text: str) -> AsyncIterator[np.ndarray]:
        """Yield int16 chunks as the response streams; the leading silence is trimmed
        like Piper's.  Cancelling the consumer closes the connection."""
        if not text or not text.strip():
            return
        url = self.api.url(SPEECH_PATH)
        wav = WavStreamReader(url) if self.options.openai_format == "wav" else None
        resampler: StreamResampler | None = None
        trimmer = LeadingSilenceTrimmer(
            self.options.silence_threshold, self._keep, enabled=self.options.trim_leading_silence
        )
        odd = b""
        received = 0
        async with self.api.post(SPEECH_PATH, json=self._body(text)) as resp:
            if resp.content_type.startswith(("application/json", "text/")):
                body = (await resp.text(errors="replace"))[:200]
                raise RemoteEngineError(f"{url} answered {resp.content_type}, not audio: {body}")
            async for data in resp.content.iter_chunked(READ_BYTES):
                raw = odd + (wav.feed(data) if wav is not None else data)
                if wav is not None and wav.rate is not None and resampler is None:
                    resampler = StreamResampler(wav.rate, self.sample_rate)
                channels = wav.channels if wav is not None else 1
                usable = len(raw) - len(raw) % (2 * channels)
                raw, odd = raw[:usable], raw[usable:]
                if not raw:
                    continue
                pcm = np.frombuffer(raw, dtype="<i2").astype(np.int16)
                received += pcm.size
                if channels > 1:
                    pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
                if resampler is not None:
                    pcm = resampler.process(pcm)
                pcm = trimmer.feed(self._gain(pcm))
                if pcm.size:
                    yield pcm
            if resampler is not None:
                tail = trimmer.feed(self._gain(resampler.process(np.zeros(0, np.int16), last=True)))
                if tail.size:
                    yield tail
        if wav is not None and wav.rate is None:
            raise RemoteEngineError(f"{url} sent response_format=wav without a WAV header")
        if received == 0:
            raise RemoteEngineError(f"{url} sent no audio for {text[:60]!r}")

    def _gain(self, pcm: np.ndarray) -> np.ndarray:
        if self.options.volume == 1.0 or pcm.size == 0:
            return pcm
        scaled = pcm.astype(np.float32) * self.options.volume
        return np.clip(scaled, -32767, 32767).astype(np.int16)

    async def aclose(self) -> None:
        await self.api.aclose()
