"""The HTTP side of engines that run behind an API (OpenAI's audio endpoints and their
many compatible servers): one connection pool per event loop, the key read from a named
environment variable, and every failure turned into one ``RemoteEngineError``.

One error type, because the runtime reports a failed turn by the exception's message:
"HTTP 503 from http://host/v1/audio/speech: overloaded" or "no answer from ... within 5 s"
tells the operator what to fix, where a bare ``ClientResponseError`` would not.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from halfsec.errors import EngineUnavailable, HalfsecError


class RemoteEngineError(HalfsecError):
    """A remote engine answered with an HTTP error, too late, or with an unreadable body."""


class RemoteAPI:
    """POSTs to ``{base_url}/{path}`` with a bearer key when one is configured.

    ``timeout_s`` bounds connecting and every wait for bytes (the answer's headers, then
    each gap while its body streams), not the whole exchange: a long reply that keeps
    streaming is fine, a server that goes quiet is not."""

    def __init__(self, base_url: str, api_key_env: str | None, timeout_s: float) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise RemoteEngineError(
                f"base URL {base_url!r} is not an http(s) URL; give one such as "
                "http://127.0.0.1:8000/v1"
            )
        if timeout_s <= 0:
            raise RemoteEngineError(f"timeout must be > 0 seconds, got {timeout_s:g}")
        self.base_url = base_url.rstrip("/")
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        """Absent variable: no Authorization header, which is what local servers expect."""
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def for_engine(
        cls, section: str, base_url: str | None, api_key_env: str | None, timeout_s: float
    ) -> RemoteAPI:
        """The client of the ``openai`` engine of config section ``section`` ("stt",
        "tts"): a missing or bad base URL makes the engine unavailable, with a message that
        names the key to set."""
        if not base_url:
            raise EngineUnavailable(
                f"{section} engine 'openai' needs {section}.openai_base_url, the server's "
                "base URL such as http://127.0.0.1:8000/v1"
            )
        try:
            return cls(base_url, api_key_env, timeout_s)
        except RemoteEngineError as e:
            raise EngineUnavailable(f"{section}.openai_base_url: {e}") from e

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _get_session(self) -> aiohttp.ClientSession:
        # One engine serves every session of a process, possibly from several event loops
        # over its life (tests, ``halfsec run``): a pool belongs to the loop that made it.
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.timeout_s, sock_read=self.timeout_s
                )
            )
            self._loop = loop
        return self._session

    @asynccontextmanager
    async def post(self, path: str, **kwargs: Any) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response to a POST, once its status says success; failures raise
        ``RemoteEngineError`` (including those while the caller reads the body)."""
        url = self.url(path)
        headers = dict(kwargs.pop("headers", {}) or {})
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            async with self._get_session().post(url, headers=headers, **kwargs) as resp:
                if resp.status >= 400:
                    body = (await resp.text(errors="replace"))[:300].strip()
                    raise RemoteEngineError(f"HTTP {resp.status} from {url}: {body or resp.reason}")
                yield resp
        except TimeoutError as e:
            raise RemoteEngineError(f"no answer from {url} within {self.timeout_s:g} s") from e
        except aiohttp.ClientPayloadError as e:
            raise RemoteEngineError(f"the answer from {url} broke off: {e}") from e
        except aiohttp.ClientError as e:
            raise RemoteEngineError(f"cannot reach {url}: {e}") from e

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
