"""Streaming chat completions from any OpenAI-compatible endpoint.

vLLM, llama.cpp's server, Ollama and the cloud vendors all speak the same
``POST {base_url}/chat/completions`` with ``"stream": true`` and answer with
server-sent events (``data: {json}`` lines, ending with ``data: [DONE]``).  One small
client therefore covers every backend, and the pipeline never waits for a whole
answer: each text delta is yielded as it arrives.

Every failure -- connection refused, HTTP error, no first token within the timeout,
a stall mid-stream, malformed events -- becomes one :class:`LLMError` with a message
that says what happened, so the responder can catch a single type and fall back
politely instead of leaving the caller in silence.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiohttp

from halfsec.clock import now_ns
from halfsec.errors import HalfsecError


class LLMError(HalfsecError):
    """The LLM endpoint failed, timed out or sent something unreadable."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens a chat template adds around each message (role markers, separators)."""


def estimate_tokens(text: str) -> int:
    """Rough token count of English text: one token per ~4 characters.

    halfsec talks to any OpenAI-compatible server and cannot know its tokenizer; the
    budget only has to keep a long conversation from crowding out the model's context
    and slowing its first token, and 4 characters a token is the usual figure for
    English with BPE vocabularies (short words count at least one)."""
    return max(len(text.split()), (len(text) + 3) // 4)


def trim_history(messages: Sequence[ChatMessage], budget_tokens: int) -> tuple[ChatMessage, ...]:
    """The most recent messages that fit in ``budget_tokens``, oldest first.

    Whole exchanges are dropped from the start, so the model never sees an answer
    without the question it answered; the latest message is always kept, even alone
    over budget (the user's current words must reach the model)."""
    kept: list[ChatMessage] = []
    used = 0
    for m in reversed(messages):
        cost = estimate_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS
        if kept and used + cost > budget_tokens:
            break
        kept.append(m)
        used += cost
    kept.reverse()
    while len(kept) > 1 and kept[0].role == "assistant":
        kept.pop(0)
    return tuple(kept)


@dataclass
class StreamActivity:
    """Text deltas an LLM stream has received, for whoever waits on its clauses.

    A reply that has not finished its first clause may come from an LLM that is silent
    or from one that is still writing it; only the stream can tell.  The runtime puts one
    of these in ``STREAM_ACTIVITY`` for the task that reads a reply, and every
    ``ChatClient.stream`` in that task counts its deltas here."""

    deltas: int = 0
    last_ns: int = 0
    """``clock.now_ns()`` of the latest delta (0: none yet)."""


STREAM_ACTIVITY: ContextVar[StreamActivity | None] = ContextVar(
    "halfsec_llm_stream_activity", default=None
)


class SSEDecoder:
    """Server-sent-events framing: lines in, complete ``data`` payloads out.

    Multi-line ``data:`` fields are joined with newlines and an event ends at a blank
    line, per the SSE spec; comments (``:``) and other fields (``event:``, ``id:``) are
    ignored because chat-completion streams carry everything in ``data``.
    """

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed_line(self, line: str) -> str | None:
        line = line.rstrip("\r\n")
        if not line:
            return self.end()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def end(self) -> str | None:
        """Finish the current event (blank line or end of stream)."""
        if not self._data:
            return None
        data = "\n".join(self._data)
        self._data = []
        return data


def parse_delta(data: str) -> str:
    """Text of one chat-completion chunk; raises :class:`LLMError` when unreadable."""
    try:
        chunk: Any = json.loads(data)
    except json.JSONDecodeError as e:
        raise LLMError(f"malformed event from the LLM endpoint: {data[:120]!r}") from e
    if not isinstance(chunk, dict):
        raise LLMError(f"unexpected event from the LLM endpoint: {data[:120]!r}")
    if "error" in chunk:
        err = chunk["error"]
        msg = err.get("message", err) if isinstance(err, dict) else err
        raise LLMError(f"LLM endpoint reported an error: {msg}")
    choices = chunk.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""  # usage-only or keep-alive chunks
    choice = choices[0]
    delta = choice.get("delta") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    if content is None:
        content = choice.get("text")  # legacy completion-style chunks
    return content if isinstance(content, str) else ""


class ChatClient:
    """Streams chat completions; one client keeps its HTTP connection pool warm.

    ``first_token_timeout_s`` bounds the time from sending the request to the first
    text delta (what the user waits for); ``stall_timeout_s`` bounds each later gap
    between text deltas (SSE comments and empty deltas, which servers send as
    keep-alives, do not count as text).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        connect_timeout_s: float = 2.0,
        first_token_timeout_s: float = 5.0,
        stall_timeout_s: float = 5.0,
        max_tokens: int = 150,
        temperature: float = 0.3,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.connect_timeout_s = connect_timeout_s
        self.first_token_timeout_s = first_token_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_env(cls, base_url: str, model: str, api_key_env: str | None, **kw: Any) -> ChatClient:
        """Read the key from the named environment variable (absent: no auth header,
        which is what local servers expect)."""
        key = os.environ.get(api_key_env) if api_key_env else None
        return cls(base_url, model, api_key=key or None, **kw)

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=self.connect_timeout_s,
                    sock_read=self.stall_timeout_s,
                )
            )
            self._loop = loop
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None
    ) -> AsyncIterator[str]:
        """Yield text deltas of the assistant's reply as they arrive."""
        body = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": self.temperature,
        }
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        session = self._get_session()
        loop = asyncio.get_running_loop()
        got_first = False
        activity = STREAM_ACTIVITY.get()
        try:
            # One timer: first token, then each gap between text deltas.  It is re-armed
            # only by text, so keep-alive comments cannot hold a stalled stream open, and
            # it is off while the consumer holds a delta (the gap is the server's, not
            # the consumer's; and a timer firing then would cancel the consumer's task).
            async with asyncio.timeout_at(loop.time() + self.first_token_timeout_s) as timer:
                async with session.post(self.url, json=body, headers=headers) as resp:
                    if resp.status != 200:
                        text = (await resp.text())[:200]
                        raise LLMError(
                            f"LLM endpoint {self.url} answered HTTP {resp.status}: {text}"
                        )
                    decoder = SSEDecoder()
                    async for raw in resp.content:
                        data = decoder.feed_line(raw.decode("utf-8", errors="replace"))
                        if data is None:
                            continue
                        if data.strip() == "[DONE]":
                            return
                        delta = parse_delta(data)
                        if delta:
                            got_first = True
                            timer.reschedule(None)
                            if activity is not None:
                                activity.deltas += 1
                                activity.last_ns = now_ns()
                            yield delta
                            timer.reschedule(loop.time() + self.stall_timeout_s)
                    data = decoder.end()
                    if data is not None and data.strip() != "[DONE]":
                        delta = parse_delta(data)
                        if delta:
                            timer.reschedule(None)
                            yield delta
        except TimeoutError as e:
            if not got_first:
                raise LLMError(
                    f"no reply from the LLM at {self.url} within {self.first_token_timeout_s:g} s"
                ) from e
            raise LLMError(
                f"the LLM at {self.url} stalled: no text for more than {self.stall_timeout_s:g} s"
            ) from e
        except LLMError:
            raise
        except aiohttp.ClientError as e:
            raise LLMError(f"cannot reach the LLM at {self.url}: {e}") from e
        except Exception as e:  # an over-long line, a broken payload: still the LLM failing
            raise LLMError(f"the LLM stream from {self.url} broke: {type(e).__name__}: {e}") from e
