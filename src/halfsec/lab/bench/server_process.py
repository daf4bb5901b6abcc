"""``halfsec serve`` as a subprocess for one bench run, and how the bench finds a server.

The bench is a separate process from the server on purpose: a client sharing the
server's event loop and cores would steal exactly the time it is trying to measure.
Without ``--server`` the bench starts ``halfsec serve`` as a subprocess on a free
loopback port (or in the server namespace), waits for ``/healthz`` and stops it
afterwards.  This is the only place the lab starts the product, and it does so by
command line, never by import.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from halfsec.lab.bench.options import BenchError


def server_urls(server: str) -> tuple[str, str]:
    """(WebSocket URL, /healthz URL) from whatever the user typed."""
    s = server if "://" in server else f"ws://{server}"
    u = urlsplit(s)
    if u.scheme not in ("ws", "wss", "http", "https") or not u.netloc:
        raise BenchError(f"--server {server!r} is not a URL like ws://127.0.0.1:8765/ws")
    secure = u.scheme in ("wss", "https")
    path = u.path if u.path and u.path != "/" else "/ws"
    ws = urlunsplit(("wss" if secure else "ws", u.netloc, path, u.query, ""))
    health = urlunsplit(("https" if secure else "http", u.netloc, "/healthz", "", ""))
    return ws, health


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def fetch_health(url: str, timeout_s: float = 2.0) -> dict[str, Any] | None:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http,
            http.get(url) as r,
        ):
            if r.status != 200:
                return None
            data = await r.json()
            return data if isinstance(data, dict) else None
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return None


class ServerProcess:
    """``halfsec serve`` in a subprocess on a free loopback port, for one bench run."""

    def __init__(
        self,
        config: Path | None = None,
        overrides: list[str] | None = None,
        inject_delay_ms: float = 0.0,
        extra_args: list[str] | None = None,
        start_timeout_s: float = 180.0,
        host: str = "127.0.0.1",
        port: int | None = None,
        netns: str | None = None,
        cpus: frozenset[int] | None = None,
    ) -> None:
        self.cpus = cpus
        """CPUs the server may run on (``sched_setaffinity`` before it starts), e.g. to keep
        a browser the bench drives off the server's cores: on one box, a second machine's
        CPU split; None: wherever the kernel puts it."""
        self.port = free_port() if port is None else port
        self.args = ["ip", "netns", "exec", netns] if netns else []
        self.args += [sys.executable, "-m", "halfsec.cli.main", "serve"]
        self.args += ["--host", host, "--port", str(self.port)]
        self.connect: tuple[str, int] = (host, self.port)
        """Where the bench reaches the server (namespace mode: a relay in front of it)."""
        if config is not None:
            self.args += ["--config", str(config)]
        for ov in overrides or []:
            self.args += ["--set", ov]
        if inject_delay_ms:
            self.args += ["--inject-delay-ms", str(inject_delay_ms)]
        self.args += extra_args or []
        self.start_timeout_s = start_timeout_s
        self.proc: asyncio.subprocess.Process | None = None
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
            prefix="halfsec-serve-", suffix=".log", delete=False
        )
        self.health: dict[str, Any] = {}

    @property
    def url(self) -> str:
        return f"ws://{self.connect[0]}:{self.connect[1]}/ws"

    @property
    def log_path(self) -> str:
        return self._log.name

    def log_tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return Path(self._log.name).read_text(errors="replace")[-n:]
        return ""

    async def start(self) -> None:
        cpus = self.cpus

        def pin() -> None:  # in the child before exec: every thread it starts inherits it
            if cpus is not None:
                os.sched_setaffinity(0, cpus)

        self.proc = await asyncio.create_subprocess_exec(
            *self.args,
            stdout=self._log,
            stderr=self._log,
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=pin if cpus is not None else None,
        )
        health = f"http://{self.connect[0]}:{self.connect[1]}/healthz"
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise BenchError(
                    f"`halfsec serve` exited with code {self.proc.returncode} before it was "
                    f"ready; its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            h = await fetch_health(health, 1.0)
            if h is not None:
                self.health = h
                return
            await asyncio.sleep(0.2)
        await self.stop()
        raise BenchError(
            f"`halfsec serve` was not ready within {self.start_timeout_s:.0f} s; log: {self.log_path}"
        )

    async def stop(self) -> None:
        p = self.proc
        if p is None or p.returncode is not None:
            return
        p.terminate()
        try:
            await asyncio.wait_for(p.wait(), timeout=10)
        except TimeoutError:
            p.kill()
            await p.wait()

    async def __aenter__(self) -> ServerProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
