"""TEST DOUBLE for an outside speech service -- not a product server, not for production.

A small local server that speaks OpenAI's documented audio API, so halfsec's ``openai``
STT and TTS engines can be tested without a network, a vendor account or a GPU:

* ``POST /v1/audio/transcriptions``: multipart form with ``file`` (audio) and ``model``
  (required), ``response_format`` (``json`` default, or ``text``), ``language``,
  ``prompt``; answers ``{"text": "..."}``;
* ``POST /v1/audio/speech``: JSON with ``model``, ``input`` and ``voice`` (required),
  ``response_format`` (``pcm``: raw 16-bit little-endian mono at 24 kHz, or ``wav``),
  ``speed``; answers the audio as a chunked stream;
* errors as OpenAI shapes them: HTTP 400/401 with ``{"error": {"message", "type"}}``.

Behind it, transcriptions run through a real halfsec STT engine (Whisper) and speech
through a real TTS engine (Piper) when given, or answer fixed content (``fixed_text``,
a tone) when not.  ``mode`` makes it fail the ways real services do:

    ``ok``         answer normally
    ``http500``    HTTP 500 with an OpenAI-shaped error body
    ``hang``       accept the request and never answer
    ``malformed``  HTTP 200 with a body that is not what was asked for (HTML for a
                   transcription, JSON for speech)
    ``stall``      speech only: send the first audio, then go quiet

Usage::

    async with OpenAIAudioDouble(stt=engines.stt, tts=engines.tts) as api:
        STTOptions(engine="openai", openai_base_url=api.base_url)
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf
from aiohttp import web
from local_http import serve_local

from halfsec.audio.io import to_pcm16
from halfsec.audio.resample import resample
from halfsec.stt.engine import STTEngine
from halfsec.tts.engine import TTSEngine

PCM_RATE = 24_000
"""OpenAI's ``pcm`` format: 24 kHz, 16-bit signed little-endian, mono."""


@dataclass
class RecordedAudioRequest:
    path: str
    fields: dict[str, Any]
    """Form fields (the file as its byte count) or the JSON body."""
    headers: dict[str, str]
    audio: np.ndarray | None = None
    """The uploaded audio at 16 kHz (transcriptions)."""


@dataclass
class OpenAIAudioDouble:
    stt: STTEngine | None = None
    tts: TTSEngine | None = None
    fixed_text: str = "one small latte please"
    mode: str = "ok"
    wav_rate: int = PCM_RATE
    """Rate of ``wav`` answers (another rate than 24 kHz exercises the client's resampling)."""
    chunk_samples: int = 2400
    """Samples per written chunk of a speech answer (100 ms at 24 kHz)."""
    chunk_delay_s: float = 0.0
    """Pause between two written chunks, to tell a streamed answer from a buffered one."""
    api_key: str | None = None
    """When set, requests without ``Authorization: Bearer <api_key>`` get HTTP 401."""
    requests: list[RecordedAudioRequest] = field(default_factory=list)
    chunk_sent_at: list[float] = field(default_factory=list)
    """``time.perf_counter()`` when each speech chunk was written."""
    base_url: str = ""
    _runner: web.AppRunner | None = None

    async def __aenter__(self) -> OpenAIAudioDouble:
        app = web.Application(client_max_size=25 * 1024 * 1024)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        app.router.add_post("/v1/audio/speech", self._speech)
        self._runner, where = await serve_local(app)
        self.base_url = f"http://{where}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _error(status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        return web.json_response(body, status=status)

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(401, "Incorrect API key provided.", "authentication_error")
        return None

    async def _fail_early(self) -> web.Response | None:
        if self.mode == "http500":
            return self._error(
                500, "The server had an error processing your request.", "server_error"
            )
        if self.mode == "hang":
            await asyncio.sleep(3600)
        return None

    # -- POST /v1/audio/transcriptions ------------------------------------------------------

    async def _transcriptions(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        fields: dict[str, Any] = {
            k: (len(v.file.read()) if isinstance(v, web.FileField) else v) for k, v in form.items()
        }
        recorded = RecordedAudioRequest(request.path, fields, dict(request.headers))
        self.requests.append(recorded)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if (failed := await self._fail_early()) is not None:
            return failed
        if not isinstance(upload, web.FileField):
            return self._error(400, "you must provide a 'file' (multipart form field)")
        if not form.get("model"):
            return self._error(400, "you must provide a 'model' parameter")
        fmt = form.get("response_format", "json")
        if fmt not in ("json", "text"):
            return self._error(400, f"response_format {fmt!r} is not supported by this double")
        upload.file.seek(0)
        try:
            data, rate = sf.read(io.BytesIO(upload.file.read()), dtype="float32", always_2d=True)
        except Exception as e:
            return self._error(400, f"could not decode the audio file: {e}")
        pcm = to_pcm16(data, rate)
        recorded.audio = pcm
        if self.mode == "malformed":
            return web.Response(text="<html>Bad gateway</html>", content_type="text/html")
        text = self.fixed_text
        if self.stt is not None:
            stream = self.stt.open_stream()
            stream.feed(pcm)
            text = (await stream.hypothesis(final=True)).text
            stream.close()
        if fmt == "text":
            return web.Response(text=text + "\n", content_type="text/plain")
        return web.json_response({"text": text})

    # -- POST /v1/audio/speech --------------------------------------------------------------

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._error(400, "the body must be JSON")
        self.requests.append(RecordedAudioRequest(request.path, body, dict(request.headers)))
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if (failed := await self._fail_early()) is not None:
            return failed
        for name in ("model", "input", "voice"):
            if not body.get(name):
                return self._error(400, f"you must provide '{name}'")
        fmt = body.get("response_format", "mp3")
        if fmt not in ("pcm", "wav"):
            return self._error(400, f"response_format {fmt!r} is not supported by this double")
        if self.mode == "malformed":
            return web.json_response({"error": None, "note": "not audio"})
        rate = PCM_RATE if fmt == "pcm" else self.wav_rate
        audio = await self._render(str(body["input"]), rate)
        resp = web.StreamResponse(
            headers={"Content-Type": "audio/pcm" if fmt == "pcm" else "audio/wav"}
        )
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        if fmt == "wav":
            # Streamed WAV: the length is unknown when the header leaves, as real servers do.
            header = b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE"
            header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            header += b"data" + struct.pack("<I", 0xFFFFFFFF)
            await resp.write(header)
        for i in range(0, audio.size, self.chunk_samples):
            if i and self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            await resp.write(audio[i : i + self.chunk_samples].astype("<i2").tobytes())
            self.chunk_sent_at.append(time.perf_counter())
            if self.mode == "stall":
                await asyncio.sleep(3600)
        await resp.write_eof()
        return resp

    async def _render(self, text: str, rate: int) -> np.ndarray:
        if self.tts is None:
            t = np.arange(int(0.5 * rate)) / rate
            return (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        parts = [chunk async for chunk in self.tts.synthesize(text)]
        audio = np.concatenate(parts) if parts else np.zeros(0, np.int16)
        return resample(audio, self.tts.sample_rate, rate).astype(np.int16)
