"""``halfsec serve --workers 2``: two processes behind one port, a crash ends only one
worker's sessions and the parent replaces it, and SIGTERM drains.

Each test runs the real command (the parent binds the port, the workers load real
models) and talks to it over the wire.  Which worker a connection reached is in every
response's ``X-Halfsec-Worker`` header, the WebSocket upgrade's included.  The process
group is killed at the end whatever happened, so nothing outlives a failed test.  The
last test stops a worker's web server in this process, at the moment that raced."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

from halfsec.audio.io import load_audio
from halfsec.server.listen import listen_on
from halfsec.server.workers import bind_shared, stop_serving
from halfsec.wire.protocol import session_start_message

CLIP = Path(__file__).resolve().parent / "data" / "dialogue" / "latte_please.flac"
START_S = 180.0
"""Two workers load their models on two shared cores: generous."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.base = f"http://127.0.0.1:{port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=out, start_new_session=True)


def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and every worker
    proc.wait(10)
    log.unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def workers(*extra: str) -> AsyncIterator[tuple[Served, aiohttp.ClientSession]]:
    """The command, and an HTTP client that opens a new connection per request (a
    kept-alive connection stays with the worker that accepted it)."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="halfsec-workers-", suffix=".log")[1])
    args = [sys.executable, "-m", "halfsec.cli.main", "serve", "--port", str(port)]
    args += ["--workers", "2", "--no-trace", "--drain-s", "20", *extra]
    served = Served(spawn(args, log), port, log)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            yield served, http
    finally:
        stop(served.proc, log)


async def ready_pids(
    http: aiohttp.ClientSession, s: Served, want: int, timeout_s: float
) -> set[int]:
    """Poll ``/ready`` until ``want`` distinct workers answered it; their pids."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert s.proc.poll() is None, s.log_text()[-3000:]
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with http.get(f"{s.base}/ready") as r:
                body = await r.json()
                if r.status == 200:
                    seen.add(int(body["worker"]))
        if len(seen) >= want:
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"only workers {seen} answered; log:\n{s.log_text()[-3000:]}")


async def new_worker(http: aiohttp.ClientSession, s: Served, old: set[int]) -> int:
    """Poll ``/ready`` until a worker not in ``old`` answers (a replacement); its pid."""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        pid = (await ready_pids(http, s, 1, START_S)).pop()
        if pid not in old:
            return pid
    raise AssertionError(f"no worker but {old} answered; log:\n{s.log_text()[-3000:]}")


async def session_on_each(
    http: aiohttp.ClientSession, s: Served, pids: set[int]
) -> dict[int, aiohttp.ClientWebSocketResponse]:
    """One started session on each worker of ``pids`` (connect until each was reached)."""
    found: dict[int, aiohttp.ClientWebSocketResponse] = {}
    for _ in range(60):
        try:
            ws = await http.ws_connect(f"{s.base}/ws")
        except aiohttp.WSServerHandshakeError as e:
            # A worker still loading its spares may be saturated for a moment: a caller
            # does what the refusal says and comes back.
            assert e.status == 503 and e.headers is not None, e
            await asyncio.sleep(min(1.0, float(e.headers["Retry-After"])))
            continue
        pid = int(ws._response.headers["X-Halfsec-Worker"])  # the upgrade's response
        if pid in found or pid not in pids:
            await ws.close()
            continue
        await ws.send_str(session_start_message())
        assert (await ws.receive_json(timeout=10))["type"] == "session.started"
        found[pid] = ws
        if set(found) == pids:
            return found
    raise AssertionError(f"60 connections reached only workers {set(found)} of {pids}")


async def pong(ws: aiohttp.ClientWebSocketResponse, n: int) -> None:
    """Ping ``ws`` and wait for the pong of this ping (earlier events and pongs skipped)."""
    await ws.send_json({"type": "ping", "id": n, "t_client_ns": n})
    while True:
        msg = await ws.receive(timeout=10)
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
        ev = json.loads(msg.data) if msg.type == aiohttp.WSMsgType.TEXT else {}
        if ev.get("type") == "pong" and ev.get("id") == n:
            return


async def speak(ws: aiohttp.ClientWebSocketResponse, pcm: np.ndarray) -> dict[str, Any]:
    """Say ``pcm`` then 1.5 s of silence at real-time pace; what came back until
    ``reply.done`` or the end of the connection."""
    audio = np.concatenate([pcm, np.zeros(24_000, np.int16)]).astype("<i2")
    got: dict[str, Any] = {"audio": 0, "events": [], "closed": False}

    async def send() -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            for i in range(0, audio.size, 320):
                await ws.send_bytes(audio[i : i + 320].tobytes())
                await asyncio.sleep(0.02)

    sender = asyncio.create_task(send())
    try:
        while True:
            msg = await ws.receive(timeout=30)
            if msg.type == aiohttp.WSMsgType.BINARY:
                got["audio"] += 1
            elif msg.type == aiohttp.WSMsgType.TEXT:
                ev = json.loads(msg.data)
                got["events"].append(ev["type"])
                if ev["type"] == "reply.done":
                    return got
            else:
                got["closed"] = True
                return got
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender


@contextlib.asynccontextmanager
async def kept_alive(
    ws: aiohttp.ClientWebSocketResponse, every_s: float = 5.0
) -> AsyncIterator[None]:
    """Ping ``ws`` every ``every_s`` while the test waits on something else, as a live
    client does (a microphone sends audio, a client with nothing to say pings): the server
    closes a session silent for ``--idle-timeout-s`` (30 s), and a replacement worker may
    take longer than that to load its models on a loaded box.  The pongs queue up and are
    skipped by whatever reads ``ws`` next."""

    async def ping() -> None:
        n = 1000
        while True:
            await asyncio.sleep(every_s)
            n += 1
            await ws.send_json({"type": "ping", "id": n, "t_client_ns": n})

    task = asyncio.create_task(ping())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def ended(ws: aiohttp.ClientWebSocketResponse, timeout_s: float = 15.0) -> bool:
    """Whether the connection ends within ``timeout_s`` (events before the end skipped)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            return False
        if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            return True
    return False


async def test_the_workers_admit_by_the_load_of_the_box() -> None:
    """``--capacity 0.75`` a worker: the box carries 1.5 turns, 3 calls at the default
    duty of 0.5, wherever the shared socket put them (counted per worker, a 3/0 split
    would admit 2 and a 2/2 split 4).  Then both workers say so and refuse with
    ``Retry-After``, and an admitted caller is still answered."""
    pcm = load_audio(CLIP)
    async with workers("--capacity", "0.75") as (s, http):
        await ready_pids(http, s, 2, START_S)
        calls: list[aiohttp.ClientWebSocketResponse] = []
        for _ in range(40):
            if len(calls) == 3:
                break
            try:
                ws = await http.ws_connect(f"{s.base}/ws")
            except aiohttp.WSServerHandshakeError as e:
                assert e.status == 503, e  # a moment of loop lag on the shared box
                await asyncio.sleep(0.5)
                continue
            await ws.send_str(session_start_message())
            assert (await ws.receive_json(timeout=10))["type"] == "session.started"
            calls.append(ws)
            await asyncio.sleep(0.3)  # each worker publishes its load every 0.1 s
        assert len(calls) == 3
        seen: dict[int, tuple[int, dict[str, Any]]] = {}
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:
            async with http.get(f"{s.base}/ready") as r:
                body = await r.json()
            seen[int(body["worker"])] = (r.status, body)
        assert len(seen) == 2, seen
        for status, body in seen.values():
            assert status == 503 and body["reason"] == "saturated", body
            assert body["signals"]["calls"] == 1.0, body  # 3 x 0.5 / (2 x 0.75)
        async with http.get(f"{s.base}/ws") as r:
            assert r.status == 503 and int(r.headers["Retry-After"]) >= 1
            assert (await r.json())["error"] == "busy"
        heard = await speak(calls[0], pcm)
        assert heard["audio"] > 0 and "reply.done" in heard["events"], heard
        for ws in calls:
            await ws.close()


async def test_a_killed_worker_is_replaced_the_other_serves_on_and_sigterm_drains() -> None:
    pcm = load_audio(CLIP)
    async with workers() as (s, http):
        pids = await ready_pids(http, s, 2, START_S)
        sessions = await session_on_each(http, s, pids)
        victim, survivor = sorted(pids)
        os.kill(victim, signal.SIGKILL)  # a crash in native code, as the kernel sees it
        assert await ended(sessions[victim]), "the killed worker's session did not end"
        ws = sessions[survivor]
        await pong(ws, 1)
        heard = await speak(ws, pcm)
        assert heard["audio"] > 0 and "reply.done" in heard["events"], heard
        async with kept_alive(ws):  # else the survivor's session may idle out meanwhile
            await new_worker(http, s, pids)
        assert f"worker {victim} died (signal 9)" in s.log_text()
        await pong(ws, 2)  # the survivor has a session open when the drain starts

        s.proc.send_signal(signal.SIGTERM)  # the parent forwards it: every worker drains
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        body: dict[str, object] = {}
        while loop.time() < deadline:
            assert s.proc.poll() is None, f"the parent exited; log:\n{s.log_text()[-3000:]}"
            # Every poll is answered: the shared socket's queue outlives a worker that
            # exits, and what a worker has accepted it answers before it exits
            # (workers.stop_serving).  A reset or a hang here is the bug, not a race.
            try:
                async with asyncio.timeout_at(deadline), http.get(f"{s.base}/ready") as r:
                    body = await r.json()
            except TimeoutError:
                log = s.log_text()[-3000:]
                raise AssertionError(f"a poll went unanswered; log:\n{log}") from None
            if r.status == 503 and body["reason"] == "draining" and body["worker"] == survivor:
                break  # (the replacement may say so too, for the moment before it exits)
            await asyncio.sleep(0.05)
        want = {"ready": False, "draining": True, "worker": survivor, "sessions": 1}
        assert body == {**body, **want}, body
        # A new session is refused by the survivor.  Only its answer counts: the
        # replacement may not have handled the forwarded SIGTERM yet (it exits within a
        # second), and a plain GET /ws to a worker that is not draining is a 400.
        for _ in range(200):
            async with http.get(f"{s.base}/ws") as r:
                if r.headers.get("X-Halfsec-Worker") == str(survivor):
                    assert r.status == 503 and int(r.headers["Retry-After"]) >= 1
                    assert (await r.json())["error"] == "busy"
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the surviving worker never answered GET /ws")
        heard = await speak(ws, pcm)  # the open session still gets its turns answered
        assert heard["audio"] > 0 and "reply.done" in heard["events"], heard
        assert s.proc.poll() is None, "the parent waits for the drain"
        await ws.close()
        code = await asyncio.to_thread(s.proc.wait, 20)
        assert code == 0, s.log_text()[-3000:]


async def test_the_worker_kill_fault_ends_only_that_workers_sessions() -> None:
    pcm = load_audio(CLIP)
    async with workers("--fault", "worker.kill") as (s, http):
        pids = await ready_pids(http, s, 2, START_S)
        sessions = await session_on_each(http, s, pids)
        victim, survivor = sorted(pids)
        heard = await speak(sessions[victim], pcm)  # dies as its reply starts to synthesize
        assert heard["closed"] and heard["audio"] == 0, heard
        assert "vad.speech_started" in heard["events"], "it died mid-turn, not before"
        await pong(sessions[survivor], 1)
        async with kept_alive(sessions[survivor]):
            await new_worker(http, s, pids)
        assert f"worker {victim} died (signal 9)" in s.log_text()
        await pong(sessions[survivor], 2)
        for ws in sessions.values():
            await ws.close()


async def test_a_request_accepted_as_the_worker_stops_is_answered_and_the_stop_is_prompt() -> None:
    """A worker that has drained stops listening and exits; a connection it accepted in
    that moment, its request not read yet, must still get its answer and must not hold
    the exit.  With aiohttp's cleanup alone (``runner.cleanup()``) this request was
    dropped unanswered, and when the connection came a loop turn later the exit waited
    out aiohttp's 60 s shutdown timeout: the parent killed the worker at ``--drain-s`` +
    15 s and the probe hung until then (docs/reliability.md)."""
    app = web.Application()

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"reason": "draining"}, status=503)

    app.router.add_get("/ready", ready)
    sock = bind_shared("127.0.0.1", 0)
    runner, port = await listen_on(app, sock)
    assert runner.server is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    # Stop once the worker has accepted the connection (before, it is any worker's to
    # take) and before its handler has read the request: a loop turn or two.
    while not runner.server.connections:  # noqa: ASYNC110 (no event to wait on)
        await asyncio.sleep(0)
    t0 = time.monotonic()
    await stop_serving(runner)
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 503"), answer
    assert time.monotonic() - t0 < 10, "the stop waited for a connection that never sends"
