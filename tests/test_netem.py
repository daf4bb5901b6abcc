"""Network lab: spec parsing, the seeded impairment model, and the relays on real sockets.

The model tests check statistics of many simulated packets against the spec; the relay
tests send real datagrams / a real TCP stream through 127.0.0.1 and measure with
monotonic timestamps at both ends; the namespace test builds real namespaces, veths
and an nftables drop rule (needs root: CI runs as root).  Every socket
wait has a timeout and every send loop is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import subprocess
import time

import pytest
from local_http import serve_local

from halfsec.lab.netem import (
    PROFILES,
    GilbertElliott,
    NetSpec,
    NetSpecError,
    parse_net,
    parse_spec,
    simulate,
    summarize,
)
from halfsec.lab.netem.impair import Impairment, TcpImpairment
from halfsec.lab.netem.namespaces import NamespaceLab, namespaces_supported, remove_stale
from halfsec.lab.netem.packet_sim import SRTP_OVERHEAD_BYTES, simulate_arrivals
from halfsec.lab.netem.probe import STAMP, ProbeEndpoint, send_probes
from halfsec.lab.netem.tcp_relay import TcpRelay
from halfsec.lab.netem.udp_relay import UdpRelay


def arrivals_of(decisions: list) -> list[tuple[int, int, int]]:  # type: ignore[type-arg]
    """Model decisions as (seq, send, recv) in arrival order, like a receiver sees them."""
    rows = [(d.seq, d.arrival_ns, t) for d in decisions for t in d.departures]
    return sorted(rows, key=lambda r: r[2])


# -- spec ---------------------------------------------------------------------------------


def test_parse_full_spec() -> None:
    s = parse_spec(
        "delay=40ms,jitter=10ms,loss=2%,ge=0.05/0.3/0.5,reorder=1%,dup=0.5%,rate=1mbit,seed=7"
    )
    assert s.delay_ms == 40 and s.jitter_ms == 10
    assert s.loss == pytest.approx(0.02) and s.reorder == pytest.approx(0.01)
    assert s.dup == pytest.approx(0.005) and s.rate_bps == 1e6 and s.seed == 7
    assert s.ge == GilbertElliott(0.05, 0.3, 0.5, 0.0)
    assert parse_spec(s.to_string()) == s  # round trip
    assert parse_spec("delay=0.5s,jitter=300us,loss=0.1,rate=64kbit").delay_ms == 500
    assert parse_spec("jitter=300us").jitter_ms == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("los=5%", "unknown key 'los'"),
        ("delay=40", None),  # bare number = ms: valid
        ("delay=fast", "delay='fast'"),
        ("loss=150%", "between 0% and 100%"),
        ("loss=abc", "percentage"),
        ("ge=0.1/0.2", "p/r/h"),
        ("ge=0.1/0/0.5", "never ends"),
        ("rate=lots", "bandwidth"),
        ("seed=x", "integer"),
        ("delay=1ms,delay=2ms", "given twice"),
        ("delay", "key=value"),
    ],
)
def test_parse_errors_are_clear(text: str, fragment: str | None) -> None:
    if fragment is None:
        assert parse_spec(text).delay_ms == 40
        return
    with pytest.raises(NetSpecError, match=fragment.replace("(", r"\(").replace("?", r"\?")):
        parse_spec(text)


def test_profiles_and_net_argument() -> None:
    assert set(PROFILES) == {"lan", "wifi", "4g", "3g", "lossy", "satellite"}
    g4 = parse_net("4g")
    assert 2 * g4.delay_ms == 60 and g4.jitter_ms == 15 and g4.loss == pytest.approx(0.01)
    over = parse_net("4g,seed=3,loss=2%")
    assert over.seed == 3 and over.loss == 0.02 and over.delay_ms == 30 and over.name == "4g*"
    assert parse_net("3g:loss=5%").loss == 0.05
    assert parse_net("delay=5ms").name == "custom"
    with pytest.raises(NetSpecError, match="unknown profile '5g'"):
        parse_net("5g")
    with pytest.raises(NetSpecError, match="empty"):
        parse_net("  ")
    for spec in PROFILES.values():
        assert parse_spec(spec.to_string()) == spec


# -- model --------------------------------------------------------------------------------


def test_same_seed_same_decisions_and_directions_independent() -> None:
    spec = parse_net("lossy,seed=11")
    a, b = simulate(spec, 3000), simulate(spec, 3000)
    assert a == b
    c = simulate(spec.with_seed(12), 3000)
    assert [d.dropped for d in a] != [d.dropped for d in c]
    down = simulate(spec, 3000, direction="down")
    assert [d.dropped for d in a] != [d.dropped for d in down]
    # Decisions do not depend on timing or size: loss pattern identical at other pacing.
    e = simulate(spec, 3000, interval_ms=3.0, size=900)
    assert [d.dropped for d in a] == [d.dropped for d in e]
    assert [d.duplicated for d in a] == [d.duplicated for d in e]


def test_loss_delay_and_jitter_match_the_spec() -> None:
    spec = parse_spec("delay=40ms,jitter=10ms,loss=2%,seed=5")
    n = 40_000
    # 200 ms spacing: the FIFO constraint never binds, so the raw distribution shows.
    report = summarize(n, arrivals_of(simulate(spec, n, interval_ms=200)))
    se = math.sqrt(0.02 * 0.98 / n)
    assert abs(report.loss - 0.02) < 4 * se
    assert report.delay_ms_mean == pytest.approx(40, abs=0.3)
    assert report.delay_ms_std == pytest.approx(10, rel=0.03)
    assert report.delay_ms_p50 == pytest.approx(40, abs=0.4)
    assert report.delay_ms_p95 == pytest.approx(40 + 1.645 * 10, abs=0.8)
    assert report.reordered == 0 and report.duplicates == 0


def test_gilbert_elliott_loss_is_bursty() -> None:
    n = 60_000
    ge = parse_spec("ge=0.02/0.25/0.8,seed=2")
    rnd = parse_spec(f"loss={ge.expected_loss() * 100:.4f}%,seed=2")
    r_ge = summarize(n, arrivals_of(simulate(ge, n)))
    r_rnd = summarize(n, arrivals_of(simulate(rnd, n)))
    assert r_ge.loss == pytest.approx(ge.expected_loss(), rel=0.12)
    assert r_rnd.loss == pytest.approx(ge.expected_loss(), rel=0.12)
    assert r_ge.mean_burst is not None and r_rnd.mean_burst is not None
    # Random 6 % loss: mean run ~1.06; GE with r=0.25, h=0.8: runs of ~2.7.
    assert r_rnd.mean_burst < 1.15
    assert r_ge.mean_burst > 2.0


def test_jitter_never_reorders_without_reorder() -> None:
    spec = parse_spec("delay=30ms,jitter=25ms,dup=2%,seed=4")  # jitter >> 20 ms spacing
    decisions = simulate(spec, 20_000)
    deps = [t for d in decisions for t in d.departures]
    assert all(b > a for a, b in zip(deps, deps[1:], strict=False))
    report = summarize(20_000, arrivals_of(decisions))
    assert report.reordered == 0
    assert report.duplicates == pytest.approx(400, rel=0.2)
    # ...and reordering, when asked for, does happen.
    r = summarize(20_000, arrivals_of(simulate(parse_spec("delay=30ms,reorder=2%,seed=4"), 20_000)))
    assert r.reordered > 200


def test_rate_cap_queues_and_tail_drops() -> None:
    spec = parse_spec("rate=80kbit,queue=100ms")  # 1000-byte packet = 100 ms on the wire
    imp = Impairment(spec)
    first = imp.decide(1000, 0)
    second = imp.decide(1000, 0)
    assert first.delay_ms == pytest.approx(100) and second.delay_ms == pytest.approx(200)
    assert imp.decide(1000, 0).dropped == "queue"  # would wait 200 ms > 100 ms queue
    # A paced stream under the cap sees only serialization delay.
    ok = simulate(parse_spec("rate=1mbit"), 500, interval_ms=20, size=200)
    assert all(d.delay_ms == pytest.approx(1.6, abs=0.01) for d in ok)


def test_packet_sim_is_the_relays_model_for_an_audio_stream() -> None:
    """The jitter buffer's simulated links are the lab's profiles, packet for packet:
    the arrivals are exactly the UDP relay model's decisions for that stream (one model,
    no second table of link numbers to drift)."""
    spec = PROFILES["3g"]  # delay, jitter, random and burst loss, reordering, a rate cap
    n, size, start = 3000, 60, 1_000_000_000
    events = simulate_arrivals(spec, [bytes(size)] * n, seed=4)
    step = 20 * 1_000_000
    got = sorted((p.seq, t - start - p.seq * step) for t, p in events)
    model = simulate(spec.with_seed(4), n, size=size + SRTP_OVERHEAD_BYTES)
    want = sorted((d.seq, t - d.arrival_ns) for d in model for t in d.departures)
    assert got == want
    assert len({seq for seq, _ in got}) < n  # the profile's loss reached the stream
    timestamps = {p.seq: p.timestamp for _, p in events}
    assert all(ts == seq * 960 for seq, ts in timestamps.items())  # 20 ms at 48 kHz


def test_tcp_model_turns_loss_into_in_order_delay() -> None:
    model = TcpImpairment(parse_spec("delay=10ms,loss=100%,rto=200ms"))
    a = model.decide(100, 0)
    b = model.decide(100, 1_000_000)
    assert a.delay_ms == pytest.approx(210) and b.delay_ms == pytest.approx(210)
    assert a.departures[0] < b.departures[0]
    clean = TcpImpairment(parse_spec("delay=10ms"))
    assert clean.decide(100, 0).delay_ms == pytest.approx(10)
    assert parse_spec("delay=30ms,jitter=15ms").tcp_rto_ms() == 200
    assert parse_spec("delay=300ms").tcp_rto_ms() == 600


def test_tcp_model_serializes_a_chunk_in_pieces_at_the_rate() -> None:
    """With a rate a chunk leaves as MSS-sized pieces spaced by their serialization time
    (the relay writes each when it may leave, so the bottleneck's queue is the relay's);
    the last leaves when :meth:`decide` would send the whole chunk."""
    spec = parse_spec("delay=30ms,rate=10mbit")
    pieces = TcpImpairment(spec).pieces(48_000, 0)
    assert sum(n for n, _t in pieces) == 48_000 and max(n for n, _t in pieces) == 1448
    times = [t for _n, t in pieces]
    assert times == sorted(times)
    whole = TcpImpairment(spec).decide(48_000, 0).departures[0]
    assert times[-1] == whole == pytest.approx((30 + 48_000 * 8 / 10e6 * 1e3) * 1e6, rel=1e-6)
    assert times[0] == pytest.approx((30 + 1448 * 8 / 10e6 * 1e3) * 1e6, rel=1e-6)
    assert times[1] - times[0] == pytest.approx(1448 * 8 / 10e6 * 1e9, rel=1e-6)
    # A second chunk right behind waits for the first (FIFO), never overtakes it.
    model = TcpImpairment(spec)
    first = model.pieces(48_000, 0)
    second = model.pieces(1448, 1_000_000)
    assert second[0][1] > first[-1][1]
    assert TcpImpairment(parse_spec("delay=30ms")).pieces(48_000, 0) == [(48_000, 30_000_000)]


# -- UDP relay on loopback ----------------------------------------------------------------


async def _until(cond, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    # Polls state that add_reader callbacks update; bounded by the deadline.
    while not cond() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


async def test_udp_relay_delays_and_drops_real_datagrams() -> None:
    up = parse_spec("delay=40ms,jitter=4ms,loss=10%,seed=9")
    down = parse_spec("delay=15ms,seed=9")
    n = 500
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    server = ProbeEndpoint(srv, echo=True)
    cli_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli_sock.bind(("127.0.0.1", 0))
    client = ProbeEndpoint(cli_sock)
    try:
        async with UdpRelay(target=srv.getsockname(), up=up, down=down) as relay:
            await send_probes(cli_sock, relay.address, [STAMP.size + 148] * n, 0.004)
            expected = [d for d in simulate(up, n) if d.delivered]
            await _until(lambda: len(client.rows) >= len(expected), 2.0)
            counters = relay.counters()
    finally:
        server.close()
        client.close()

    one_way = summarize(n, server.rows)
    # Exactly the datagrams the seeded model dropped are missing (decisions are per seq).
    assert {r[0] for r in server.rows} == {d.seq for d in expected}
    assert abs(one_way.loss - 0.10) < 0.04
    assert counters["up"]["packets"] == n and counters["up"]["dropped"] == n - len(expected)
    assert one_way.reordered == 0 and one_way.duplicates == 0
    assert one_way.delay_ms_p50 is not None and one_way.delay_ms_std is not None
    # 40 ms +/- 4 ms (+ a little FIFO and scheduler lateness, never less than the model).
    assert 39.0 < one_way.delay_ms_p50 < 47.0
    assert 2.5 < one_way.delay_ms_std < 7.0
    assert min(r[2] - r[1] for r in server.rows) / 1e6 > 40 - 4 * 4.5
    # Round trip: the down direction added its 15 ms too.
    rtt = summarize(n, client.rows)
    assert rtt.delay_ms_p50 is not None and 54.0 < rtt.delay_ms_p50 < 64.0
    assert counters["down"]["packets"] == len(expected) and counters["down"]["dropped"] == 0


# -- TCP relay on loopback ----------------------------------------------------------------


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    for _ in range(10_000):
        data = await reader.read(65536)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    writer.close()


async def _tcp_rtts(port: int, rounds: int) -> list[float]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    rtts = []
    try:
        for i in range(rounds):
            msg = i.to_bytes(4, "big") * 50
            t = time.monotonic_ns()
            writer.write(msg)
            await writer.drain()
            assert await asyncio.wait_for(reader.readexactly(len(msg)), 5) == msg
            rtts.append((time.monotonic_ns() - t) / 1e6)
    finally:
        writer.close()
    return sorted(rtts)


async def test_tcp_relay_adds_delay_to_a_real_echo_round_trip() -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    target = server.sockets[0].getsockname()[:2]
    try:
        async with TcpRelay(target=target) as plain:
            base = await _tcp_rtts(plain.port, 10)
        async with TcpRelay(target=target, up="delay=25ms", down="delay=25ms") as relay:
            rtts = await _tcp_rtts(relay.port, 10)
            counters = relay.counters()
        async with TcpRelay(target=target, up="delay=10ms,loss=100%,rto=60ms") as lossy:
            lossy_rtts = await _tcp_rtts(lossy.port, 4)
    finally:
        server.close()
    assert base[5] < 10
    assert 50 <= rtts[0] and rtts[5] < 62
    assert counters["up"]["chunks"] == 10 and counters["down"]["chunks"] == 10
    assert counters["up"]["actual_delay_ms_p50"] >= 25
    # Every up chunk "lost" -> delivered one RTO late, never dropped or corrupted.
    assert 70 <= lossy_rtts[0] and lossy_rtts[-1] < 90


async def test_relay_rejects_bad_spec_before_binding() -> None:
    with pytest.raises(NetSpecError):
        UdpRelay(target=("127.0.0.1", 9), up="delay=oops")


# -- namespace mode (root) ----------------------------------------------------------------


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


async def test_namespace_mode_udp_through_bridge_with_kernel_loss_and_cleanup() -> None:
    """Needs root, iproute2 and nftables (setup_host.sh); CI runs as root."""
    ok, why = namespaces_supported()
    assert ok, why
    n = 300
    lab = NamespaceLab(up="delay=30ms,jitter=2ms,loss=15%,rate=2mbit,seed=1", down="delay=5ms")
    with lab:
        assert set(lab.namespaces) <= _netns_names()
        srv = lab.server_socket(socket.AF_INET, socket.SOCK_DGRAM)
        srv.bind((lab.server_host, 9400))
        server = ProbeEndpoint(srv, echo=True)
        cli = lab.client_socket(socket.AF_INET, socket.SOCK_DGRAM)
        cli.bind((lab.client_host, 0))
        client = ProbeEndpoint(cli)
        try:
            # Isolation: the middle does not route, so the relay is the only path.
            with pytest.raises(OSError):
                cli.sendto(b"direct", (lab.server_host, 9400))
            async with lab.udp_relay(9400) as relay:
                await send_probes(cli, (lab.relay_host, relay.port), [STAMP.size + 148] * n, 0.004)

                def settled() -> bool:  # all forwarded datagrams arrived and came back
                    c = relay.counters()
                    if c["up"]["forwarded"] + c["up"]["dropped"] != c["up"]["packets"]:
                        return False
                    return len(server.rows) == len(client.rows) == c["up"]["forwarded"]

                await _until(settled, 3.0)
                counters = relay.counters()
            nft = lab.nft_counters()
        finally:
            server.close()
            client.close()
    assert not (set(lab.namespaces) & _netns_names()), "namespaces left behind"

    one_way = summarize(n, server.rows)
    # nft random drop (15 %) happened in the kernel, before the relay saw the packets.
    assert 0.08 < one_way.loss < 0.22
    assert counters["up"]["packets"] == one_way.received and counters["up"]["dropped"] == 0
    assert "numgen random mod 10000 < 1500" in nft
    assert one_way.delay_ms_p50 is not None and 30 <= one_way.delay_ms_p50 < 37
    rtt = summarize(n, client.rows)
    assert rtt.delay_ms_p50 is not None and 35 <= rtt.delay_ms_p50 < 45


def test_namespace_lab_cleans_up_after_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """Needs root (creates and deletes network namespaces)."""
    lab = NamespaceLab(up=NetSpec(rate_bps=1e6), lab_id=f"t{os.getpid():x}")
    with pytest.raises(RuntimeError, match="boom"), lab:
        assert lab.exists()
        raise RuntimeError("boom")
    assert not lab.exists()
    # A failure half way through setup (namespaces made, kernel rules not) leaves nothing.
    bad = NamespaceLab(up=NetSpec(rate_bps=1e6), lab_id=f"u{os.getpid():x}")
    seen: list[bool] = []

    def fail() -> None:
        seen.append(bad.exists())
        raise RuntimeError("tc failed")

    monkeypatch.setattr(bad, "_kernel_impairments", fail)
    with pytest.raises(RuntimeError, match="tc failed"), bad:
        pass
    assert seen == [True] and not bad.exists()


async def test_impaired_url_puts_a_real_websocket_behind_the_profile() -> None:
    from aiohttp import ClientSession, WSMsgType, web

    from halfsec.lab.netem.path import impaired_url, net_meta

    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_echo)
    runner, where = await serve_local(app)
    url = f"ws://{where}/ws?token=t"
    try:
        async with impaired_url(url, "none") as (same, none_relay):
            assert same == url and none_relay is None
        async with impaired_url(url, "delay=20ms,seed=1") as (relayed, relay):
            assert relay is not None and relayed.endswith("/ws?token=t")
            assert relayed != url
            rtts = []
            async with ClientSession() as http, http.ws_connect(relayed) as ws:
                for i in range(5):
                    t = time.monotonic_ns()
                    await ws.send_bytes(bytes([i]) * 320)
                    msg = await asyncio.wait_for(ws.receive(), 5)
                    assert msg.data == bytes([i]) * 320
                    rtts.append((time.monotonic_ns() - t) / 1e6)
            meta = net_meta("delay=20ms,seed=1", relay)
    finally:
        await runner.cleanup()
    assert 40 <= min(rtts) and sorted(rtts)[2] < 50
    assert meta is not None and meta["up"]["delay_ms"] == 20
    assert meta["counters"]["connections"] == 1


def test_remove_stale_deletes_orphans_of_dead_processes_only() -> None:
    """Needs root (creates network namespaces)."""
    dead = "hs-mid-7ffffffe-0"  # pid 0x7ffffffe is above pid_max: never alive
    mine = NamespaceLab(up=None)
    subprocess.run(["ip", "netns", "add", dead], check=True, timeout=10)
    try:
        with mine:
            removed = remove_stale()
            assert dead in removed
            assert mine.exists() and not (set(mine.namespaces) & set(removed))
    finally:
        subprocess.run(["ip", "netns", "del", dead], capture_output=True, timeout=10)
    assert dead not in _netns_names()


def test_cli_lists_profiles_and_rejects_bad_specs(capsys: pytest.CaptureFixture[str]) -> None:
    from halfsec.lab.netem.__main__ import main

    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    assert "4g         delay=30ms,jitter=15ms,loss=1%" in out
    assert main(["tcp", "--target", "127.0.0.1:9", "--net", "delay=1ms,los=1%"]) == 2
    assert "unknown key 'los'" in capsys.readouterr().err


async def test_client_default_route_keeps_the_relay_the_only_path() -> None:
    """Needs root.  The browser's namespace mode gives the client a default route (Chromium
    gathers WebRTC candidates only there): a datagram sent straight to the server then
    leaves instead of failing, but the middle does not forward it, so it never arrives;
    ``enter_netns`` moves only this thread, and back."""
    from halfsec.lab.netem.namespaces import enter_netns

    own = os.stat("/proc/thread-self/ns/net").st_ino
    with NamespaceLab(client_default_route=True) as lab:
        ip = ["ip", "-n", lab.cli_ns, "route"]
        routes = (
            await asyncio.to_thread(subprocess.run, ip, capture_output=True, text=True)
        ).stdout
        assert f"default via {lab.relay_host}" in routes
        srv = lab.server_socket(socket.AF_INET, socket.SOCK_DGRAM)
        srv.bind((lab.server_host, 9401))
        srv.setblocking(False)
        with enter_netns(lab.cli_ns):
            assert os.stat("/proc/thread-self/ns/net").st_ino != own
            cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # born in the client ns
        try:
            cli.sendto(b"direct", (lab.server_host, 9401))  # routed now, but not forwarded
            await asyncio.sleep(0.2)
            with pytest.raises(BlockingIOError):
                srv.recv(100)
            async with lab.udp_relay(9401) as relay:
                cli.sendto(b"relayed", (lab.relay_host, relay.port))
                got: list[bytes] = []

                def arrived() -> bool:
                    with contextlib.suppress(BlockingIOError):
                        got.append(srv.recv(100))
                    return bool(got)

                await _until(arrived, 2.0)
            assert got == [b"relayed"]
        finally:
            cli.close()
            srv.close()
    assert os.stat("/proc/thread-self/ns/net").st_ino == own
