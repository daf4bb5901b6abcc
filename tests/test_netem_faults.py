"""Scheduled network faults: a blackout and a loss burst in the ``--net`` spec.

Datagrams in the window are dropped and nothing else about a seeded run changes; a TCP
stream loses nothing but waits for the first retransmission after a blackout (RTO
doubling), through the model and through a real relay on loopback."""

from __future__ import annotations

import asyncio

import pytest

from halfsec.clock import now_ns
from halfsec.lab.netem.impair import TcpImpairment, simulate
from halfsec.lab.netem.profile import NetSpecError, parse_net
from halfsec.lab.netem.tcp_relay import TcpRelay


def test_the_spec_names_the_window_and_round_trips() -> None:
    spec = parse_net("4g,blackout=3s+800ms,burst=1s+200ms@30%")
    assert [(o.kind, o.at_ms, o.dur_ms, o.loss) for o in spec.outages] == [
        ("blackout", 3000.0, 800.0, 1.0),
        ("burst", 1000.0, 200.0, 0.3),
    ]
    assert parse_net(spec.to_string()) == spec
    assert spec.as_dict()["outages"][0]["kind"] == "blackout"  # type: ignore[index]
    assert parse_net("delay=5ms,burst=1s+1s").outages[0].loss == 0.5
    for bad in ("blackout=3s", "blackout=3s+0ms", "blackout=1s+1s@20%", "burst=1s+1s@0%"):
        with pytest.raises(NetSpecError):
            parse_net(f"delay=1ms,{bad}")


def test_a_blackout_drops_its_window_and_changes_nothing_else() -> None:
    base = simulate(parse_net("delay=20ms,jitter=5ms,loss=2%,seed=3"), 200)
    out = simulate(parse_net("delay=20ms,jitter=5ms,loss=2%,seed=3,blackout=1s+500ms"), 200)
    in_window = [d for d in out if 1000 <= d.arrival_ns / 1e6 < 1500]
    assert len(in_window) == 25 and all(d.dropped == "blackout" for d in in_window)
    for a, b in zip(base, out, strict=True):
        if not 1000 <= a.arrival_ns / 1e6 < 1500:
            assert a == b


def test_a_loss_burst_drops_about_its_share() -> None:
    out = simulate(parse_net("delay=5ms,burst=0s+20s@30%,seed=1"), 1000)
    lost = sum(1 for d in out if d.dropped == "burst")
    assert 240 < lost < 360


def test_tcp_waits_for_the_first_retransmission_after_a_blackout() -> None:
    spec = parse_net("delay=10ms,rto=200ms,blackout=100ms+700ms")
    imp = TcpImpairment(spec)
    ms = 1_000_000
    first = imp.decide(100, 0)  # starts the clock
    inside = imp.decide(100, 150 * ms)
    after = imp.decide(100, 900 * ms)
    assert first.delay_ms == pytest.approx(10, abs=0.01)
    # Sent at 150 ms: retransmissions at 350, 750, 1550 ms; the first after 800 ms wins.
    assert inside.departures[0] / ms == pytest.approx(1560, abs=0.01)
    # In order: the later chunk waits behind it.
    assert after.departures[0] > inside.departures[0]


async def test_a_blackout_through_a_real_relay_delays_and_loses_nothing() -> None:
    got: list[tuple[int, bytes]] = []

    async def sink(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(4096):
            got.append((now_ns(), data))
        w.close()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    spec = "delay=5ms,rto=200ms,blackout=300ms+400ms"
    try:
        async with TcpRelay(target=("127.0.0.1", port), up=spec, down=spec) as relay:
            _r, w = await asyncio.open_connection("127.0.0.1", relay.port)
            t0 = now_ns()
            sent = []
            for i in range(50):  # 1 s of 20 ms messages
                w.write(f"{i:04d}".encode())
                await w.drain()
                sent.append(now_ns())
                await asyncio.sleep(0.02)
            await asyncio.sleep(1.5)
            w.close()
    finally:
        server.close()
    stream = b"".join(d for _t, d in got)
    assert stream == b"".join(f"{i:04d}".encode() for i in range(50))  # nothing lost
    # A message sent at ~400 ms (inside the window) arrives only after it ends (700 ms).
    idx = next(i for i, t in enumerate(sent) if (t - t0) / 1e6 > 400)
    offset = 4 * (idx + 1)
    size = 0
    for t, d in got:
        size += len(d)
        if size >= offset:
            assert (t - t0) / 1e6 > 700
            break
