"""The edge gateway with real engines, real speech and real sockets on 127.0.0.1.

Origin (``halfsec serve`` in process), edge and client share one event loop: fine for
behaviour; the latency comparison runs out of process in ``benchmarks/edge_bench.py``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from halfsec.audio.io import load_audio
from halfsec.config import load_config
from halfsec.edge.gateway import EdgeError, EdgeOptions, EdgeServer, check_edge_bind, start_edge
from halfsec.edge.origin_link import OriginOptions
from halfsec.edge.origin_pool import OriginPool
from halfsec.lab.clients.client_run import ClientRun
from halfsec.lab.clients.websocket import run_recording
from halfsec.lab.netem.tcp_relay import TcpRelay
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.runtime.engines import Engines
from halfsec.server.app import ServerOptions, VoiceServer, start_server
from halfsec.wire.protocol import session_start_message


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def origin(
    engines: Engines, port: int = 0, max_sessions: int = 8
) -> AsyncIterator[tuple[VoiceServer, str, Any]]:
    server, runner, bound = await start_server(
        engines,
        load_config(),
        ServerOptions(host="127.0.0.1", port=port, max_sessions=max_sessions),
    )
    try:
        yield server, f"ws://127.0.0.1:{bound}/ws", runner
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def edge_to(origin_url: str, **kw: Any) -> AsyncIterator[tuple[EdgeServer, str]]:
    edge, runner, port = await start_edge(EdgeOptions(origin=origin_url, port=0, **kw))
    try:
        await _until(lambda: edge.pool.warm >= 1, 10.0)
        yield edge, f"ws://127.0.0.1:{port}/ws"
    finally:
        await runner.cleanup()


async def _until(cond: Any, timeout_s: float) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def _coffee(rows: list[dict[str, str]], speech_dir: Path, n: int) -> tuple[np.ndarray, str, str]:
    """The n-th shortest coffee order, cut to 0.3 s before and 1 s after its speech."""
    coffee = sorted(
        (r for r in rows if r["intent"] == "orderDrink"), key=lambda r: float(r["duration_s"])
    )
    row = coffee[n]
    pcm = load_audio(speech_dir / row["file"])
    b = voiced_bounds(pcm)
    assert b is not None
    return pcm[max(0, b[0] - 4800) : b[1] + 16000], row["intent"], row["transcript"]


def _final_text(run: ClientRun) -> str:
    finals = run.events_of("transcript.final")
    assert finals, f"no transcript (error: {run.error})"
    return re.sub(r"[^a-z0-9 ]", "", str(finals[-1]["text"]).lower()).strip()


def test_options_are_checked() -> None:
    with pytest.raises(EdgeError):
        EdgeOptions(origin="http://nope")
    with pytest.raises(EdgeError):
        check_edge_bind(EdgeOptions(origin="ws://127.0.0.1:1/ws", host="0.0.0.0"))
    check_edge_bind(EdgeOptions(origin="ws://127.0.0.1:1/ws", host="0.0.0.0", token="t"))


async def test_spoken_reply_through_the_edge(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    pcm, intent, _ = _coffee(rows, speech_dir, 0)
    async with origin(engines) as (_, o_url, _r), edge_to(o_url) as (edge, e_url):
        run = await run_recording(e_url, pcm)
        assert run.error is None, run.error
        assert [e.get("intent") for e in run.events_of("intent")][-1] == intent
        assert run.packets and sum(p.samples for p in run.packets) > run.output_rate // 2
        assert run.session_id  # the origin session's id, answered locally by the edge
        marks = {str(e["name"]) for e in run.events_of("timing")}
        assert {"edge.gate.open", "edge.turn.end_received", "edge.reply.first_audio"} <= marks
        # The handshake was local: the session came from the pre-started pool.
        assert edge.pool.acquired_warm == 1 and edge.pool.acquired_cold == 0
        # Origin times were mapped onto the edge's clock (the client's pings were
        # answered by the edge), so turn.end lies inside the client's timeline.
        assert run.clock is not None
        t_end = run.clock.to_client_ns(int(run.events_of("turn.end")[-1]["t_server_ns"]))
        assert run.t0_ns < t_end < run.t0_ns + int(30e9)


async def test_edge_forwards_less_audio_yet_same_transcript(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    speech, _, _ = _coffee(rows, speech_dir, 1)
    rng = np.random.default_rng(0)
    gap = (rng.normal(0, 30, 3 * 16000)).astype(np.int16)  # a quiet room, not digital zero
    pcm = np.concatenate([gap, speech, gap])
    async with origin(engines) as (_, o_url, _r), edge_to(o_url) as (edge, e_url):
        direct = await run_recording(o_url, pcm)
        via = await run_recording(e_url, pcm)
        assert direct.error is None and via.error is None, (direct.error, via.error)
        await _until(lambda: not edge.sessions, 2.0)
        stats = edge.finished[-1]
    assert stats.client_audio_bytes_16k >= 2 * pcm.size
    # Only speech (with preroll) and the silence the origin's endpointing needed.
    assert stats.forwarded_audio_bytes < 0.5 * stats.client_audio_bytes_16k, stats
    assert stats.forwarded_audio_messages < 0.3 * stats.client_audio_messages, stats
    assert _final_text(via) == _final_text(direct)


async def test_origin_going_away_mid_turn(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    port = _free_port()
    pcm, intent, _ = _coffee(rows, speech_dir, 2)
    async with origin(engines, port) as (_, o_url, o_runner):
        edge, runner, e_port = await start_edge(EdgeOptions(origin=o_url, port=0, pool_size=1))
        e_url = f"ws://127.0.0.1:{e_port}/ws"
        try:
            await _until(lambda: edge.pool.warm >= 1, 10.0)
            task = asyncio.create_task(run_recording(e_url, pcm))

            def origin_in_turn() -> bool:
                return any(c.gate and c.gate.origin_open_turns for c in edge.sessions.values())

            await _until(origin_in_turn, 10.0)
            await o_runner.cleanup()  # the origin goes away mid-turn
            run = await asyncio.wait_for(task, 10.0)
            assert run.error is not None and "origin_lost" in run.error, run.error
            assert [e["code"] for e in run.events_of("error")] == ["origin_lost"]
            health = await _get_json(f"http://127.0.0.1:{e_port}/healthz")
            assert health["role"] == "edge"
            # The origin comes back on its address: the edge serves the next user.
            async with origin(engines, port):
                await _until(lambda: edge.pool.warm >= 1, 10.0)
                run2 = await run_recording(e_url, pcm)
                assert run2.error is None, run2.error
                assert [e.get("intent") for e in run2.events_of("intent")][-1] == intent
                assert run2.packets
        finally:
            await runner.cleanup()


async def _get_json(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert r.status == 200
        return dict(await r.json())


async def test_bad_input_is_rejected_at_the_edge(engines: Engines) -> None:
    async def error_code(ws: aiohttp.ClientWebSocketResponse) -> str:
        while True:
            msg = await ws.receive(timeout=5.0)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            ev = json.loads(msg.data)
            if ev["type"] == "error":
                assert ev["fatal"] is False
                return str(ev["code"])

    async with (
        origin(engines) as (o_server, o_url, _r),
        edge_to(o_url) as (edge, e_url),
        aiohttp.ClientSession() as http,
        http.ws_connect(e_url) as ws,
    ):
        await ws.send_bytes(b"\x00\x00" * 320)
        assert await error_code(ws) == "not_started"
        await ws.send_str("{not json")
        assert await error_code(ws) == "bad_json"
        await ws.send_str(json.dumps({"type": "launch"}))
        assert await error_code(ws) == "unknown_type"
        await ws.send_str(
            json.dumps({"type": "session.start", "protocol": 2, "sample_rate": 16000})
        )
        assert await error_code(ws) == "unsupported_protocol"
        await ws.send_str(session_start_message(sample_rate=4000))
        assert await error_code(ws) == "bad_sample_rate"
        # Nothing so far took an origin session from the pool.
        assert edge.pool.acquired_warm == 0 and edge.pool.acquired_cold == 0
        await ws.send_str(session_start_message(sample_rate=16000))
        while True:
            ev = json.loads((await ws.receive(timeout=5.0)).data)
            if ev["type"] == "session.started":
                break
        conn = next(iter(edge.sessions.values()))
        assert conn.link is not None
        before = conn.link.sent.messages - conn.link.sent.pings
        await ws.send_bytes(b"\x01\x02\x03")
        assert await error_code(ws) == "bad_audio"
        await ws.send_bytes(b"\x00" * (70 * 1024))
        assert await error_code(ws) == "message_too_large"
        await ws.send_str(json.dumps({"type": "trace.context", "traceparent": "00-zz"}))
        assert await error_code(ws) == "bad_traceparent"
        await ws.send_str(json.dumps({"type": "ping", "id": "x", "t_client_ns": 1}))
        assert await error_code(ws) == "bad_ping"
        await ws.send_str(session_start_message(sample_rate=16000))
        assert await error_code(ws) == "already_started"
        # None of it reached the origin: the origin link sent nothing after the start.
        assert conn.link.sent.messages - conn.link.sent.pings == before
        assert conn.stats.rejected_messages == 10
        assert conn.stats.forwarded_audio_bytes == 0
        assert edge.pool.acquired_warm + edge.pool.acquired_cold == 1


async def test_pool_holds_exactly_its_links_behind_a_slow_path(engines: Engines) -> None:
    """Regression: with an 80 ms RTT an open takes ~0.5 s, and a prune during it (every
    ``/healthz`` prunes) used to drop the new link into an orphaned list -- alive, pinging,
    holding an origin session forever -- until the origin answered 503."""
    async with origin(engines) as (o_server, o_url, _r):
        port = int(o_url.split(":")[2].split("/")[0])
        async with TcpRelay(
            target=("127.0.0.1", port), up="delay=40ms", down="delay=40ms"
        ) as relay:
            pool = OriginPool(OriginOptions(url=f"ws://127.0.0.1:{relay.port}/ws", pool_size=2))
            pool.start()
            try:
                for _ in range(100):  # 2 s of pruning while both links open
                    _ = pool.warm
                    await asyncio.sleep(0.02)
                assert pool.warm == 2
                assert pool.opened == 2 and relay.connections == 2
                assert o_server.session_count == 2
                # Taking one makes the pool open exactly one replacement.
                link, warm = await pool.acquire()
                assert warm
                await link.close()
                await _until(lambda: pool.warm == 2, 5.0)
                await _until(lambda: o_server.session_count == 2, 5.0)
                assert pool.opened == 3 and pool.died_warm == 0
            finally:
                await pool.close()
        await _until(lambda: o_server.session_count == 0, 5.0)


async def test_full_origin_gives_a_clear_error_and_no_churn(engines: Engines) -> None:
    """The origin allows one session and the edge's pool holds it: the next client must
    hear that the origin is full (not a hang, not a vague failure), and the pool must
    back off rather than hammer the origin with refused upgrades."""
    async with (
        origin(engines, max_sessions=1) as (o_server, o_url, _r),
        edge_to(o_url, pool_size=1) as (edge, e_url),
        aiohttp.ClientSession() as http,
    ):
        async with http.ws_connect(e_url) as first:
            await first.send_str(session_start_message(sample_rate=16000))
            assert await _next_of(first, "session.started")
            async with http.ws_connect(e_url) as second:
                await second.send_str(session_start_message(sample_rate=16000))
                ev = await _next_of(second, "error")
                assert ev["code"] == "origin_unavailable" and ev["fatal"] is True
                assert "503" in ev["message"] and "max-sessions" in ev["message"], ev
            refused = edge.pool.refused
            await asyncio.sleep(2.0)
            # Exponential backoff from 0.2 s: a handful of tries in 2 s, not dozens.
            assert edge.pool.refused - refused <= 4, edge.pool.stats()
            assert o_server.session_count == 1
        # The first client left: its session is freed and the pool warms up again.
        await _until(lambda: edge.pool.warm == 1, 10.0)


async def _next_of(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    while True:
        msg = await ws.receive(timeout=10.0)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        ev = json.loads(msg.data)
        if ev["type"] == kind:
            return dict(ev)
