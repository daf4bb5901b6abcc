"""TEST DOUBLE for a vendor LLM API -- not a model, not for production.

A tiny local server that speaks the OpenAI-compatible ``POST /v1/chat/completions``
streaming protocol (server-sent events, ``data: {...}`` chunks, ``data: [DONE]``), so
the LLM client and the responder can be tested without a GPU, a network or a vendor
account.  It replays a fixed list of tokens with a configurable per-token delay, which
makes "the first clause arrives before the stream ends" measurable, and it can fail on
request the ways real endpoints do.

Modes:
    ``ok``          stream ``tokens`` then ``[DONE]``
    ``http500``     answer HTTP 500 with a JSON error body
    ``hang``        accept the request and never send a byte
    ``malformed``   send one chunk that is not JSON
    ``error_event`` send an ``{"error": ...}`` event instead of tokens
    ``stall``       send the first two tokens, then hang

Usage::

    async with LLMDouble(tokens=["Hi", " there."], delay_s=0.05) as llm:
        client = ChatClient(llm.base_url, "test-model")
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from local_http import serve_local


@dataclass
class RecordedRequest:
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class LLMDouble:
    tokens: list[str] = field(default_factory=lambda: ["Hello", "."])
    delay_s: float = 0.0
    mode: str = "ok"
    requests: list[RecordedRequest] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)
    """``time.perf_counter()`` when each request arrived."""
    finished_at: list[float] = field(default_factory=list)
    """``time.perf_counter()`` when each stream sent ``[DONE]``."""
    _runner: web.AppRunner | None = None
    base_url: str = ""

    async def __aenter__(self) -> LLMDouble:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner, where = await serve_local(app)
        self.base_url = f"http://{where}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _chunk(content: str) -> bytes:
        payload = {
            "id": "chatcmpl-double",
            "object": "chat.completion.chunk",
            "model": "double",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
        }
        return f"data: {json.dumps(payload)}\n\n".encode()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.started_at.append(time.perf_counter())
        self.requests.append(RecordedRequest(await request.json(), dict(request.headers)))
        if self.mode == "http500":
            return web.json_response({"error": {"message": "double: internal error"}}, status=500)
        if self.mode == "hang":
            await asyncio.sleep(3600)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if self.mode == "malformed":
            await resp.write(b"data: {not json\n\n")
            return resp
        if self.mode == "error_event":
            await resp.write(b'data: {"error": {"message": "double: overloaded"}}\n\n')
            return resp
        await resp.write(b": keep-alive comment\n\n")
        await resp.write(b'data: {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}\n\n')
        for i, token in enumerate(self.tokens):
            if self.mode == "stall" and i == 2:
                await asyncio.sleep(3600)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            await resp.write(self._chunk(token))
        await resp.write(b"data: [DONE]\n\n")
        self.finished_at.append(time.perf_counter())
        return resp
