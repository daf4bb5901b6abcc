"""Speech to text from any server that speaks OpenAI's ``POST /v1/audio/transcriptions``.

The API is batch (one multipart upload, one JSON answer), so the stream keeps the
utterance and uploads it as a 16 kHz WAV when a hypothesis is asked for.  The runtime's
two finals per turn (speculative, then at the end of turn) cost one request, like
Whisper's: every answer is cached by how much audio it covers, and a partial or final
for audio that is already on its way waits for that request instead of sending another.
Silence is answered "" without a request, since Whisper-based servers invent words on it.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import wave
from dataclasses import dataclass

import aiohttp
import numpy as np

from halfsec.audio.levels import loudest_frame_dbfs
from halfsec.remote_api import RemoteAPI, RemoteEngineError
from halfsec.stt.engine import STTEngine, STTStream, Transcript
from halfsec.stt.options import STTOptions
from halfsec.stt.pcm_input import SAMPLE_RATE, as_pcm16

__all__ = ["OpenAITranscriptionEngine", "OpenAITranscriptionStream", "wav_bytes"]

TRANSCRIPTIONS_PATH = "audio/transcriptions"


def wav_bytes(pcm: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """16-bit mono WAV in memory: the upload format every compatible server accepts."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()


def parse_transcription(body: bytes, url: str) -> str:
    """``text`` of a ``response_format=json`` answer; anything else is an engine error."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RemoteEngineError(
            f"{url} answered with a body that is not JSON: {body[:120]!r}"
        ) from e
    text = data.get("text") if isinstance(data, dict) else None
    if not isinstance(text, str):
        raise RemoteEngineError(f"{url} answered JSON without a 'text' string: {body[:120]!r}")
    return text.strip()


class OpenAITranscriptionEngine(STTEngine):
    """One client (and connection pool) shared by every session of the process."""

    name = "openai"

    def __init__(self, options: STTOptions | None = None) -> None:
        self.options = options or STTOptions(engine="openai")
        self.api = RemoteAPI.for_engine(
            "stt",
            self.options.openai_base_url,
            self.options.openai_api_key_env,
            self.options.openai_timeout_s,
        )

    def open_stream(self) -> OpenAITranscriptionStream:
        return OpenAITranscriptionStream(self)

    async def transcribe(self, pcm: np.ndarray) -> str:
        """One request for the whole of ``pcm`` (16 kHz int16); "" for silence."""
        if pcm.size == 0 or loudest_frame_dbfs(pcm) < self.options.silence_dbfs:
            return ""
        form = aiohttp.FormData()
        form.add_field("file", wav_bytes(pcm), filename="audio.wav", content_type="audio/wav")
        form.add_field("model", self.options.openai_model)
        form.add_field("response_format", "json")
        if self.options.language:
            form.add_field("language", self.options.language)
        if self.options.prompt:
            form.add_field("prompt", self.options.prompt)
        async with self.api.post(TRANSCRIPTIONS_PATH, data=form) as resp:
            body = await resp.read()
        return parse_transcription(body, self.api.url(TRANSCRIPTIONS_PATH))

    async def aclose(self) -> None:
        await self.api.aclose()


@dataclass(slots=True)
class _Request:
    version: int
    """Samples fed when the request was made: the audio it transcribes."""
    task: asyncio.Task[str]
    started: float
    elapsed_ms: float = 0.0


class OpenAITranscriptionStream(STTStream):
    """The utterance so far and the one request that covers the most of it."""

    def __init__(self, engine: OpenAITranscriptionEngine) -> None:
        self._engine = engine
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        self._request: _Request | None = None

    def feed(self, pcm: np.ndarray) -> None:
        chunk = as_pcm16(pcm)
        if chunk.size:
            self._chunks.append(chunk)
            self._samples += chunk.size

    def _start(self) -> _Request:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        pcm = self._chunks[0] if self._chunks else np.zeros(0, np.int16)
        task = asyncio.ensure_future(self._engine.transcribe(pcm))
        request = _Request(self._samples, task, time.perf_counter())

        def settle(t: asyncio.Task[str]) -> None:
            request.elapsed_ms = (time.perf_counter() - request.started) * 1000.0
            if not t.cancelled():
                t.exception()  # retrieved here: a caller that was cancelled never will

        task.add_done_callback(settle)
        self._request = request
        return request

    async def hypothesis(self, final: bool) -> Transcript:
        version = self._samples
        request = self._request
        usable = request is not None and not (
            request.task.done() and (request.task.cancelled() or request.task.exception())
        )
        if request is not None and usable and request.version == version:
            cached = request.task.done()
        elif request is not None and usable and not final and not request.task.done():
            cached = False  # a preview: the answer already on its way, for less audio
        else:
            request, cached = self._start(), False
        text = await asyncio.shield(request.task)
        return Transcript(
            text=text,
            final=final,
            compute_ms=0.0 if cached else request.elapsed_ms,
            audio_ms=request.version * 1000.0 / SAMPLE_RATE,
        )

    def close(self) -> None:
        self._chunks = []
