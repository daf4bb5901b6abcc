"""``--pcap``: packet figures measured from a capture agree with the lab's own.

A hand-made capture checks the reader and the arithmetic (no root).  Then real
namespaces: a TCP echo server in the server namespace, a client sending small messages
through the lab's relay in the middle, ``tcpdump`` in the middle namespace; the one-way
delays read from the packets must match the relay's own counters, and the kernel's
nftables drops must show up as retransmissions.

The rate-capped case is the one that used to fail (``4g``: the kernel's ``tbf`` queue
was invisible to the relay): 48 KB bursts down at 10 Mbit/s (~40 ms to serialize, like
the server's TTS audio) while the event loop the relay shares is blocked 25 ms every
100 ms (like the bench's client).  ``MARGIN_MS`` is the noise measured on the loaded
2-core box, rounded up; a hidden kernel queue (a ``tbf`` below the relay) must break it."""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from halfsec.lab.bench.pcap import (
    AGREE_MS,
    Packet,
    capture,
    compare_with_relays,
    leg_figures,
    read_pcap,
)
from halfsec.lab.netem.namespaces import (
    CLI_ADDR,
    MID_CLI_ADDR,
    MID_SRV_ADDR,
    SRV_ADDR,
    NamespaceLab,
    namespaces_supported,
)

SERVER_PORT = 9100
MARGIN_MS = AGREE_MS
"""How far lab and wire may differ here (max over RTT, jitter, p50 and p95 per direction).
The noise, measured 2026-12-01 07:12 UTC on the 2-core box at load average 7-11 (other
engineers' tests running), 20 runs of ``test_rate_capped_bursts_agree_with_a_busy_loop``'s
setup: max_delay_diff_ms 0.02-1.18 ms (median 0.07).  5 ms (the issue's figure) is four
times the worst of it; the hidden queue below differs by tens of ms."""


def _frame(
    t: float, src: tuple[str, int], dst: tuple[str, int], seq: int, flags: int, n: int
) -> bytes:
    """One Linux-cooked-v1 IPv4 TCP packet record (payload ``n`` bytes, cut off)."""
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + 20 + n, 0, 0, 64, 6, 0,
        socket.inet_aton(src[0]), socket.inet_aton(dst[0]),
    )  # fmt: skip
    tcp = struct.pack("!HHIIBBHHH", src[1], dst[1], seq, 0, 5 << 4, flags, 65535, 0, 0)
    body = b"\0" * 16 + ip + tcp  # SLL header, then IP and TCP headers only
    sec, usec = int(t), round((t - int(t)) * 1e6)
    return struct.pack("<IIII", sec, usec, len(body), len(body) + n) + body


def test_a_hand_made_capture_gives_the_delays_it_was_made_with(tmp_path: Path) -> None:
    c, r, u, s = (CLI_ADDR, 40000), (MID_CLI_ADDR, 7000), (MID_SRV_ADDR, 41000), (SRV_ADDR, 9100)
    recs = [
        _frame(1.000, c, r, 100, 0x02, 0),  # SYN client -> relay
        _frame(1.001, u, s, 500, 0x02, 0),  # SYN relay -> server
        _frame(1.002, s, u, 900, 0x12, 0),  # SYN-ACK server -> relay
        _frame(1.003, r, c, 300, 0x12, 0),  # SYN-ACK relay -> client
    ]
    # Up: 3 segments of 100 bytes, each leaving 20, 25, 30 ms later; the second is
    # resent 200 ms later (a kernel drop), so its delay counts from the resend.
    recs += [
        _frame(1.100, c, r, 101, 0x18, 100),
        _frame(1.120, u, s, 501, 0x18, 100),
        _frame(1.200, c, r, 201, 0x18, 100),
        _frame(1.400, c, r, 201, 0x18, 100),
        _frame(1.425, u, s, 601, 0x18, 100),
        _frame(1.500, c, r, 301, 0x18, 100),
        _frame(1.530, u, s, 701, 0x18, 100),
        # Down: one segment, 40 ms.
        _frame(1.600, s, u, 901, 0x18, 50),
        _frame(1.640, r, c, 301, 0x18, 50),
    ]
    path = tmp_path / "x.pcap"
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 96, 113) + b"".join(recs))
    packets = read_pcap(path)
    assert len(packets) == len(recs) and all(isinstance(p, Packet) for p in packets)
    fig = leg_figures(packets, 7000, 9100)
    assert fig["connections"] == 1
    assert fig["up"]["segments"] == 4 and fig["up"]["resent"] == 1
    assert fig["up"]["delay_ms_p50"] == pytest.approx(25, abs=0.01)
    assert fig["down"]["delay_ms_p50"] == pytest.approx(40, abs=0.01)
    assert fig["rtt_ms"] == pytest.approx(65, abs=0.01)
    # Beside a relay that says the same: agreement; beside one that says 10 ms more: not.
    same = {"up": {"actual_delay_ms_p50": 25.0, "actual_delay_ms_p95": 29.5}}
    same["down"] = {"actual_delay_ms_p50": 40.0, "actual_delay_ms_p95": 40.0}
    assert compare_with_relays(packets, [(7000, same)], 9100)["agrees"]
    off = {d: {k: v + 10 for k, v in row.items()} for d, row in same.items()}
    cmp = compare_with_relays(packets, [(7000, off)], 9100)
    assert not cmp["agrees"] and cmp["max_diff_ms"] >= 10 - 0.01
    assert cmp["relays"][0]["diff_ms"]["rtt_ms"] == pytest.approx(-20, abs=0.01)


def test_a_file_that_is_not_a_capture_says_so(tmp_path: Path) -> None:
    from halfsec.lab.bench.pcap import PcapError

    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\x0a\x0d\x0d\x0a" + b"\0" * 40)  # pcapng's magic
    with pytest.raises(PcapError, match="pcapng"):
        read_pcap(bad)


async def _echo_over(
    lab: NamespaceLab,
    pcap: Path,
    messages: int,
    burst: int = 0,
    block_ms: float = 0.0,
    block_every_s: float = 0.3,
) -> dict[str, object]:
    """Echo ``messages`` 200-byte messages (20 ms apart) through the lab; every tenth
    also asks for ``burst`` bytes back at once.  ``block_ms``: the loop is blocked that
    long every ``block_every_s`` meanwhile."""
    srv_sock = lab.server_socket(socket.AF_INET, socket.SOCK_STREAM)
    srv_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv_sock.bind((SRV_ADDR, SERVER_PORT))
    srv_sock.setblocking(False)

    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(4096):
            w.write(data + b"y" * burst * data.count(b"!"))
            await w.drain()
        w.close()

    loop = asyncio.get_running_loop()
    blocker: list[asyncio.TimerHandle] = []

    def block() -> None:
        time.sleep(block_ms / 1e3)  # a busy client sharing the relay's loop
        blocker[:] = [loop.call_later(block_every_s, block)]

    server = await asyncio.start_server(echo, sock=srv_sock)
    try:
        async with (
            capture(lab.mid_ns, pcap) as cap,
            lab.tcp_relay(SERVER_PORT, listen_port=0) as relay,
        ):
            sock = lab.client_socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            await loop.sock_connect(sock, (lab.relay_host, relay.port))
            reader, writer = await asyncio.open_connection(sock=sock)
            if block_ms:
                blocker.append(loop.call_later(0.05, block))
            want = messages * 200 + burst * (messages // 10 if burst else 0)

            async def read_all() -> None:  # reads as it arrives, as a real client does
                got = 0
                while got < want:
                    got += len(await asyncio.wait_for(reader.read(65536), 10))

            reading = asyncio.ensure_future(read_all())
            for i in range(messages):
                writer.write((b"!" if burst and i % 10 == 5 else b"x") + b"x" * 199)
                await writer.drain()
                await asyncio.sleep(0.02)
            await reading
            for handle in blocker:
                handle.cancel()
            writer.close()
            await asyncio.sleep(0.3)  # let the last packets reach the capture
            counters = relay.counters()
            port = relay.port
    finally:
        for handle in blocker:
            handle.cancel()
        server.close()
    assert cap.missed == 0, f"tcpdump missed {cap.missed} packets: the wire's figures have holes"
    return compare_with_relays(read_pcap(pcap), [(port, counters)], SERVER_PORT)


def _need_namespaces() -> None:
    ok, why = namespaces_supported()
    assert ok, f"this test needs namespace mode: {why}"


async def test_packet_delays_agree_with_the_relays_figures(tmp_path: Path) -> None:
    _need_namespaces()
    with NamespaceLab(up="delay=20ms,jitter=5ms", down="delay=30ms,jitter=3ms") as lab:
        cmp = await asyncio.wait_for(_echo_over(lab, tmp_path / "a.pcap", 150), 40)
    assert not lab.exists()
    row = cmp["relays"][0]  # type: ignore[index]
    pkt = row["packets"]
    assert pkt["connections"] == 1 and pkt["up"]["segments"] >= 100, pkt
    assert 15 < pkt["up"]["delay_ms_p50"] < 35 and 25 < pkt["down"]["delay_ms_p50"] < 45, pkt
    # Nagle on the relay's sockets (asyncio leaves it on for factory-made sockets) held
    # small writes for the peer's ACK: 10-15 ms more on the wire than the relay saw.
    assert cmp["max_delay_diff_ms"] <= AGREE_MS, cmp  # type: ignore[operator]


async def test_kernel_drops_show_as_retransmissions_in_the_capture(tmp_path: Path) -> None:
    _need_namespaces()
    with NamespaceLab(up="delay=5ms,loss=5%,seed=1", down="delay=5ms") as lab:
        cmp = await asyncio.wait_for(_echo_over(lab, tmp_path / "b.pcap", 150), 40)
        drops = lab.nft_counters()
    up = cmp["relays"][0]["packets"]["up"]  # type: ignore[index]
    assert up["resent"] >= 1, (up, drops)
    assert 0 < up["loss_pct"] < 20


_RATE_CAPPED = "delay=30ms,jitter=15ms,rate=10mbit,seed=4"  # the 4g profile without loss


async def test_rate_capped_bursts_agree_with_a_busy_loop(tmp_path: Path) -> None:
    """The queue of a 10 Mbit/s bottleneck is counted by the relay (it paces MSS-sized
    pieces) and the late reads of a blocked loop are not (arrival = the kernel's stamp;
    departure = read right after the ``send``), while the loop is blocked 25 ms every
    100 ms.  Noise: see ``MARGIN_MS``."""
    _need_namespaces()
    with NamespaceLab(up=_RATE_CAPPED, down=_RATE_CAPPED) as lab:
        cmp = await asyncio.wait_for(
            _echo_over(lab, tmp_path / "c.pcap", 100, burst=48_000, block_ms=25, block_every_s=0.1),
            60,
        )
    row = cmp["relays"][0]  # type: ignore[index]
    down = row["packets"]["down"]
    # The bursts did queue: their segments left spread over ~40 ms at 10 Mbit/s.
    assert down["delay_ms_p95"] - down["delay_ms_p50"] > 15, row
    assert row["lab"]["down"]["held_bytes_max"] == 0, row
    assert cmp["max_delay_diff_ms"] <= MARGIN_MS, cmp  # type: ignore[operator]


async def test_a_queue_hidden_below_the_relay_breaks_the_agreement(tmp_path: Path) -> None:
    """The check can fail: a kernel shaper under the relay (``tbf`` at 4 Mbit/s on the
    down veth, what the lab itself did until 2026-12-01) delays packets the relay's
    figure does not include."""
    _need_namespaces()
    with NamespaceLab(up=_RATE_CAPPED, down=_RATE_CAPPED) as lab:
        tbf = "tc qdisc add dev m-cli root tbf rate 4mbit burst 5000 latency 500ms"
        cmd = ["ip", "netns", "exec", lab.mid_ns, *tbf.split()]
        await asyncio.to_thread(subprocess.run, cmd, check=True, timeout=10)
        cmp = await asyncio.wait_for(_echo_over(lab, tmp_path / "d.pcap", 100, burst=48_000), 60)
    assert not cmp["agrees"], cmp
    diff = cmp["relays"][0]["diff_ms"]  # type: ignore[index]
    assert diff["down_delay_ms_p95"] > 2 * MARGIN_MS, cmp
