"""``halfsec bench --pcap FILE``: the network lab checked against the wire itself.

The lab's figures come from its own relays (the delay each chose and measured).  A bug
there would measure itself; packets would not.  In namespace mode every packet crosses
the middle namespace, where the relay reads it on one veth (``m-cli`` up, ``m-srv``
down) and writes it on the other.  ``tcpdump -i any`` in that namespace stamps both
sides on one clock, so each byte's one-way delay through the simulated network is
``t(leaves on the far veth) - t(arrived on the near veth)`` -- no clock sync needed.

From the capture, per relayed connection and direction: one-way delay p50/p95, jitter
(p95 - p50: the spread a jitter buffer must absorb, computable from the relay's counters
alike), loss (data segments sent again / data segments; the kernel's nftables drop sits
*after* the capture tap, so a dropped segment is seen once and then its retransmission),
and RTT (p50 up + p50 down).  One sample per segment leaving on the far veth: departure
is its first copy there, arrival the *last* copy of its bytes on the near veth (what the
relay could read).  The relay counts one sample per piece it writes, and with a rate cap
it writes MSS-sized pieces (``netem.impair.TcpImpairment.pieces``), so the two
populations are the same packets.

Why a hand-written reader: neither dpkt nor scapy is installed, and what is needed is
small and fixed -- the classic pcap container (not pcapng: ``tcpdump -w`` writes classic),
link types Linux cooked v1/v2 (``-i any``), Ethernet and raw IP, and the IPv4 and TCP
headers.  ~100 lines of ``struct`` beat a dependency for that.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import re
import signal
import struct
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halfsec.lab.netem.namespaces import MID_CLI_ADDR, SRV_ADDR
from halfsec.measure.percentile import percentile

__all__ = [
    "AGREE_MS",
    "Capture",
    "Packet",
    "PcapError",
    "capture",
    "compare_with_relays",
    "leg_figures",
    "read_pcap",
]

AGREE_MS = 5.0
"""Packet and lab figures must agree within this (issue 10: "within 5 ms")."""

_LINK_HEADER = {1: 14, 101: 0, 113: 16, 276: 20}  # EN10MB, RAW, LINUX_SLL, LINUX_SLL2
_MAGIC = {0xA1B2C3D4: ("<", 1e-6), 0xA1B23C4D: ("<", 1e-9)}
_MAGIC_BE = {0xA1B2C3D4: (">", 1e-6), 0xA1B23C4D: (">", 1e-9)}
_SYN = 0x02
_Key = tuple[tuple[str, int], tuple[str, int]]
"""One direction of one TCP connection: (source, destination)."""


class PcapError(Exception):
    """The file is not a capture this reader understands; the message says which part."""


@dataclass(frozen=True, slots=True)
class Packet:
    """One IPv4 TCP packet: capture time (s), endpoints, sequence, payload length."""

    t: float
    src: tuple[str, int]
    dst: tuple[str, int]
    seq: int
    flags: int
    length: int


def _ip(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def read_pcap(path: Path) -> list[Packet]:
    """Every IPv4 TCP packet of a classic pcap file, in capture order."""
    data = path.read_bytes()
    if len(data) < 24:
        raise PcapError(f"{path}: too short for a pcap header")
    (magic,) = struct.unpack("<I", data[:4])
    if magic in _MAGIC:
        endian, unit = _MAGIC[magic]
    else:
        (magic,) = struct.unpack(">I", data[:4])
        if magic not in _MAGIC_BE:
            raise PcapError(f"{path}: not a classic pcap file (pcapng? use tcpdump -w)")
        endian, unit = _MAGIC_BE[magic]
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0x0FFFFFFF
    if linktype not in _LINK_HEADER:
        raise PcapError(f"{path}: link type {linktype} is not supported")
    skip = _LINK_HEADER[linktype]
    out: list[Packet] = []
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, caplen, _orig = struct.unpack(endian + "IIII", data[pos : pos + 16])
        frame = data[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen
        pkt = _tcp(frame[skip:], sec + frac * unit) if len(frame) > skip else None
        if pkt is not None:
            out.append(pkt)
    return out


def _tcp(ip: bytes, t: float) -> Packet | None:
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
        return None
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack("!H", ip[2:4])[0]
    tcp = ip[ihl:]
    if len(tcp) < 20:
        return None
    sport, dport, seq = struct.unpack("!HHI", tcp[:8])
    offset = (tcp[12] >> 4) * 4
    return Packet(
        t,
        (_ip(ip[12:16]), sport),
        (_ip(ip[16:20]), dport),
        seq,
        tcp[13],
        max(0, total - ihl - offset),  # from the IP length: the capture may be cut short
    )


# -- one relayed connection ----------------------------------------------------------------


@dataclass
class _Stream:
    """One direction of one TCP connection: when each stream offset was seen."""

    isn: int | None = None
    t_syn: float = float("inf")
    firsts: list[tuple[int, int, float]] = field(default_factory=list)
    """(start, end, time) of each segment's first copy, relative offsets."""
    last_copy: dict[int, float] = field(default_factory=dict)
    data_segments: int = 0
    resent: int = 0
    high: int = 0
    """End of the highest byte seen so far (relative)."""

    def add(self, p: Packet) -> None:
        if p.flags & _SYN:
            self.isn, self.t_syn = p.seq, p.t
            return
        if self.isn is None or p.length == 0:
            return
        start = (p.seq - self.isn - 1) % 2**32
        end = start + p.length
        self.data_segments += 1
        if start < self.high:
            # Bytes sent before: a retransmission (it may span several first copies).
            self.resent += 1
            for s0, e0, _t in self.firsts:
                if s0 < end and start < e0:
                    self.last_copy[s0] = p.t
        if end > self.high:
            new = max(start, self.high)
            self.firsts.append((new, end, p.t))
            self.last_copy[new] = p.t
            self.high = end


def _streams(packets: Iterable[Packet]) -> dict[_Key, _Stream]:
    out: dict[_Key, _Stream] = {}
    for p in packets:
        out.setdefault((p.src, p.dst), _Stream()).add(p)
    return out


def _delays(near: _Stream, far: _Stream) -> list[float]:
    """One-way delay (ms) of each segment that left on ``far``: its first copy's time
    minus when the last of its bytes arrived on ``near`` (the last copy of every near
    segment holding some of them).

    Why per departing segment and not per arriving one: the sender's kernel hands the
    veth GSO super-segments (up to 64 KB seen as one "packet"), which leave the middle
    as dozens of MTU-sized segments.  Counting each arrival once, at its first byte,
    would see one of those dozens and miss the serialization queue behind it; each
    departing segment is one packet the receiver gets, with its own delay."""
    starts = [s for s, _e, _t in near.firsts]  # increasing: firsts only ever extend
    out = []
    for start, end, t_out in far.firsts:
        i = bisect.bisect_right(starts, start) - 1  # the near segment holding ``start``
        if i < 0:
            continue
        t_in = 0.0
        while i < len(starts) and starts[i] < end:
            t_in = max(t_in, near.last_copy[starts[i]])
            i += 1
        out.append((t_out - t_in) * 1e3)
    return out


def _pairs(streams: dict[_Key, _Stream], relay_port: int, server: int) -> list[tuple[_Key, _Key]]:
    """(client->relay key, relay->server key) of each relayed connection on ``relay_port``:
    the relay opens its upstream right after accepting, so each client connection (by
    SYN time) goes with the first upstream connection opened after it."""
    fronts = sorted(
        (k for k, s in streams.items() if k[1] == (MID_CLI_ADDR, relay_port) and s.isn is not None),
        key=lambda k: streams[k].t_syn,
    )
    backs = sorted(
        (k for k, s in streams.items() if k[1] == (SRV_ADDR, server) and s.isn is not None),
        key=lambda k: streams[k].t_syn,
    )
    used: set[_Key] = set()
    out = []
    for front in fronts:
        t0 = streams[front].t_syn
        back = next((b for b in backs if b not in used and streams[b].t_syn >= t0), None)
        if back is not None:
            used.add(back)
            out.append((front, back))
    return out


def _summary(delays: list[float], stream_in: _Stream) -> dict[str, Any]:
    p50, p95 = percentile(delays, 50), percentile(delays, 95)
    segs = stream_in.data_segments
    return {
        "segments": segs,
        "resent": stream_in.resent,
        "loss_pct": round(100 * stream_in.resent / segs, 2) if segs else None,
        "delay_ms_p50": p50,
        "delay_ms_p95": p95,
        "jitter_ms": (p95 - p50) if p50 is not None and p95 is not None else None,
    }


def leg_figures(packets: list[Packet], relay_port: int, server_port: int) -> dict[str, Any]:
    """Packet figures of the connections relayed by the relay on ``relay_port``."""
    streams = _streams(packets)
    up: list[float] = []
    down: list[float] = []
    up_in, down_in = _Stream(), _Stream()
    pairs = _pairs(streams, relay_port, server_port)
    for front, back in pairs:
        c2r, r2s = streams[front], streams[back]
        s2r, r2c = (
            streams.get((back[1], back[0]), _Stream()),
            streams.get((front[1], front[0]), _Stream()),
        )
        up += _delays(c2r, r2s)
        down += _delays(s2r, r2c)
        for total, part in ((up_in, c2r), (down_in, s2r)):
            total.data_segments += part.data_segments
            total.resent += part.resent
    u, d = _summary(up, up_in), _summary(down, down_in)
    rtt = (
        u["delay_ms_p50"] + d["delay_ms_p50"]
        if u["delay_ms_p50"] is not None and d["delay_ms_p50"] is not None
        else None
    )
    return {"connections": len(pairs), "up": u, "down": d, "rtt_ms": rtt}


def compare_with_relays(
    packets: list[Packet], relays: list[tuple[int, dict[str, Any]]], server_port: int
) -> dict[str, Any]:
    """Per relay (``(port, relay.counters())``): packet figures beside the relay's own
    (``actual_delay_ms`` p50/p95), and the differences.

    ``max_diff_ms`` (what ``agrees`` checks) is over the figures the lab reports for a
    network -- RTT and each direction's jitter; ``max_delay_diff_ms`` over each
    direction's p50 and p95 as well.  Both count a segment the relay wrote; the relay
    times it from its read, the capture from the segment's arrival on the veth (the
    difference is how late the relay's loop read it).  ``held_bytes_max`` (the relay's:
    bytes still queued below it right after a write) is copied into each row: above 0, a
    queue the relay's figure cannot include existed."""
    rows = []
    worst = worst_delay = 0.0
    for port, counters in relays:
        pkt = leg_figures(packets, port, server_port)
        lab: dict[str, Any] = {}
        diff: dict[str, float] = {}
        for d in ("up", "down"):
            c = counters.get(d, {})
            p50, p95 = c.get("actual_delay_ms_p50"), c.get("actual_delay_ms_p95")
            lab[d] = {
                "delay_ms_p50": p50,
                "delay_ms_p95": p95,
                "jitter_ms": (p95 - p50) if p50 is not None and p95 is not None else None,
                "held_bytes_max": c.get("held_bytes_max"),
            }
            for key in ("delay_ms_p50", "delay_ms_p95", "jitter_ms"):
                a, b = pkt[d][key], lab[d][key]
                if a is not None and b is not None:
                    diff[f"{d}_{key}"] = round(a - b, 3)
        if lab["up"]["delay_ms_p50"] is not None and lab["down"]["delay_ms_p50"] is not None:
            lab["rtt_ms"] = lab["up"]["delay_ms_p50"] + lab["down"]["delay_ms_p50"]
            if pkt["rtt_ms"] is not None:
                diff["rtt_ms"] = round(pkt["rtt_ms"] - lab["rtt_ms"], 3)
        named = [abs(v) for k, v in diff.items() if k == "rtt_ms" or k.endswith("jitter_ms")]
        worst = max([worst, *named])
        worst_delay = max([worst_delay, *(abs(v) for v in diff.values())])
        rows.append({"relay_port": port, "packets": pkt, "lab": lab, "diff_ms": diff})
    return {
        "relays": rows,
        "max_diff_ms": round(worst, 3),
        "max_delay_diff_ms": round(worst_delay, 3),
        "agree_within_ms": AGREE_MS,
        "agrees": bool(rows) and worst <= AGREE_MS,
    }


# -- capture --------------------------------------------------------------------------------


@dataclass
class Capture:
    """A running or finished capture: where it is written and, once stopped, how many
    packets matched but are not in the file (``missed``: dropped by the kernel because
    tcpdump did not read them in time, or still unread when it stopped; None: unknown).

    Missed packets leave holes in the wire's figures (fewer samples, a segment's arrival
    missing), so a report must say how many there were: 0 is the only complete capture."""

    path: Path
    missed: int | None = None


_STAT = re.compile(rb"(\d+) packets? (captured|received by filter)")
_SETTLE_S = 0.25
"""The file must stop growing this long before tcpdump is stopped: on a loaded box it
reads its buffer late, and SIGINT discards what it has not read yet."""
_SETTLE_MAX_S = 10.0


@contextlib.asynccontextmanager
async def capture(
    netns: str, path: Path, snaplen: int = 96, buffer_kib: int = 32768
) -> AsyncIterator[Capture]:
    """``tcpdump -i any`` in ``netns`` writing ``path`` for the block (headers only:
    ``snaplen`` bytes a packet); stopped with SIGINT so the file is complete.  Fails with
    what to do when tcpdump is missing or does not start.

    ``--immediate-mode``: without it the kernel hands tcpdump packets in blocks, retired
    when full or after a timeout, and on SIGINT the packets of an unretired block are
    lost -- on the loaded 2-core box up to a quarter of a short run's last second went
    missing, and the wire's figures lost their tail.  ``buffer_kib``: the kernel's capture
    buffer, for the moments tcpdump waits for a CPU."""
    cmd = ["ip", "netns", "exec", netns, "tcpdump", "-i", "any", "-n", "-U", "-s", str(snaplen)]
    cmd += ["--immediate-mode", "-B", str(buffer_kib), "-w", str(path), "tcp"]
    cap = Capture(path)
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        # tcpdump says "listening on any" on stderr once its socket is open.
        assert proc.stderr is not None
        said = b""
        while b"listening" not in said:
            line = await asyncio.wait_for(proc.stderr.readline(), 10.0)
            if not line:
                raise PcapError(
                    f"tcpdump did not start ({said.decode(errors='replace').strip()}); "
                    "install it (apt-get install tcpdump) and run as root"
                )
            said += line
        yield cap
    finally:
        if proc.returncode is None:
            await _settle(path)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
            try:
                rest = await asyncio.wait_for(proc.stderr.read(), 5.0) if proc.stderr else b""
                await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                rest = b""
            stats = {kind: int(n) for n, kind in _STAT.findall(rest)}
            if len(stats) == 2:
                cap.missed = stats[b"received by filter"] - stats[b"captured"]


async def _settle(path: Path) -> None:
    """Wait until ``path`` has not grown for ``_SETTLE_S`` (at most ``_SETTLE_MAX_S``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _SETTLE_MAX_S
    size, since = -1, loop.time()
    while loop.time() < deadline:
        try:
            now_size = os.stat(path).st_size
        except FileNotFoundError:
            now_size = 0
        if now_size != size:
            size, since = now_size, loop.time()
        elif loop.time() - since >= _SETTLE_S:
            return
        await asyncio.sleep(0.05)
