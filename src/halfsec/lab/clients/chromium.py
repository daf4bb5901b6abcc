"""Headless Chromium driven over the DevTools protocol, with a WAV as its microphone.

The DevTools protocol is spoken over its WebSocket with ``aiohttp`` (already a
dependency): no Playwright/Selenium, no browser download; the system Chromium
(``/usr/bin/chromium``, Debian package ``chromium``) is used.  One Chromium per
recording, because the fake microphone's file is a command-line flag; it is always
killed here (headless Chromium never exits on its own), with a fresh profile directory
each time.  Chromium runs with ``WebRtcHideLocalIpsWithMdns`` off, so its host candidate
is an IP address a relay can forward to rather than an unresolvable ``<uuid>.local``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from halfsec.errors import HalfsecError

DEFAULT_CHROMIUM = "/usr/bin/chromium"


class BrowserError(HalfsecError):
    """Chromium cannot be started or driven (missing binary, DevTools failure)."""


def chromium_flags(user_data_dir: Path, fake_wav: Path) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--mute-audio",
        f"--user-data-dir={user_data_dir}",
        "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_wav}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "--window-size=1100,1000",
        # Host candidates as IP addresses, not mDNS names: the lab's relays (and aiortc)
        # cannot resolve <uuid>.local.
        "--disable-features=WebRtcHideLocalIpsWithMdns",
    ]


class CDP:
    """A minimal DevTools-protocol session over one target's WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._id = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.console: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            fut = self._waiting.pop(data.get("id", -1), None)
            if fut is not None and not fut.done():
                fut.set_result(data)
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"].get("args", [])
                self.console.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in args)
                )
            elif data.get("method") == "Runtime.exceptionThrown":
                d = data["params"]["exceptionDetails"]
                self.console.append(f"exception: {d.get('exception', {}).get('description') or d}")
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(BrowserError("the DevTools connection closed"))

    async def call(self, method: str, timeout_s: float = 30.0, **params: Any) -> dict[str, Any]:
        self._id += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._id] = fut
        await self.ws.send_str(json.dumps({"id": self._id, "method": method, "params": params}))
        data = await asyncio.wait_for(fut, timeout_s)
        if "error" in data:
            raise BrowserError(f"{method}: {data['error'].get('message')}")
        result: dict[str, Any] = data.get("result", {})
        return result

    async def evaluate(self, expression: str, timeout_s: float = 30.0) -> Any:
        """Evaluate in the page (promises awaited) and return the JSON value."""
        r = await self.call(
            "Runtime.evaluate",
            timeout_s=timeout_s,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            text = d.get("exception", {}).get("description") or d.get("text")
            raise BrowserError(f"page error: {text}")
        return r.get("result", {}).get("value")

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await self.ws.close()


class Chromium:
    """One headless Chromium with a fresh profile and a WAV as its microphone."""

    def __init__(
        self,
        fake_wav: Path,
        executable: str = DEFAULT_CHROMIUM,
        extra_flags: list[str] | None = None,
        start_timeout_s: float = 30.0,
        niceness: int = 0,
    ) -> None:
        self.fake_wav = fake_wav
        self.niceness = niceness
        """``nice`` for Chromium and every process it starts (0: as the caller).  A lab
        knob: on a box where the browser shares the server's cores it shows how much of
        the page's gap is CPU contention, which a user's own device does not have."""
        self.executable = executable
        self.extra_flags = list(extra_flags or [])
        self.start_timeout_s = start_timeout_s
        self.proc: asyncio.subprocess.Process | None = None
        self.profile = Path(tempfile.mkdtemp(prefix="halfsec-chromium-"))
        self.http: aiohttp.ClientSession | None = None
        self.cdp: CDP | None = None
        self._log = self.profile / "chromium.log"

    async def start(self) -> CDP:
        exe = self.executable
        if shutil.which(exe) is None:
            raise BrowserError(
                f"Chromium not found at {exe}; install it (Debian/Ubuntu: "
                "`apt-get install -y chromium`) or pass its path"
            )
        args = chromium_flags(self.profile, self.fake_wav) + self.extra_flags
        log = self._log.open("wb")  # noqa: ASYNC230 - a local file, opened once per browser
        nice = ["nice", "-n", str(self.niceness)] if self.niceness else []
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *nice,
                exe,
                *args,
                "about:blank",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group: killed as a whole
            )
        finally:
            log.close()  # the child keeps its own descriptor
        port = await self._devtools_port()
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        async with self.http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json()
        page = next((t for t in targets if t.get("type") == "page"), None)
        if page is None:
            raise BrowserError("Chromium started without a page target")
        ws = await self.http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self.cdp = CDP(ws)
        await self.cdp.call("Runtime.enable")
        await self.cdp.call("Page.enable")
        return self.cdp

    async def _devtools_port(self) -> int:
        """Chromium writes the port it picked into ``DevToolsActivePort``."""
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.returncode is not None:
                raise BrowserError(
                    f"Chromium exited with code {self.proc.returncode}: {self.log_tail()}"
                )
            with contextlib.suppress(OSError, ValueError, IndexError):
                return int(marker.read_text().splitlines()[0])
            await asyncio.sleep(0.05)
        raise BrowserError(f"Chromium did not open DevTools: {self.log_tail()}")

    def log_tail(self, n: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return self._log.read_text(errors="replace")[-n:]
        return ""

    async def stop(self) -> None:
        if self.cdp is not None:
            with contextlib.suppress(Exception):
                await self.cdp.close()
        if self.http is not None:
            await self.http.close()
        p = self.proc
        if p is not None and p.returncode is None:
            # The whole group: Chromium's renderer, GPU and audio helper processes too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(p.wait(), timeout=5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                await p.wait()
        if p is not None:
            # Helpers that outlived the main process (same group) must not linger.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(self.profile, ignore_errors=True)

    async def __aenter__(self) -> CDP:
        try:
            return await self.start()
        except BaseException:
            await self.stop()
            raise

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def screenshot(cdp: CDP, path: Path) -> Path:
    """The page as a PNG at ``path`` (folders made as needed)."""
    r = await cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    _write_bytes(path, base64.b64decode(r["data"]))
    return path


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
