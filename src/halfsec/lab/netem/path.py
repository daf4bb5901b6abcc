"""The few lines a bench needs to run "over 4G": ``--net PROFILE`` in, relayed URL out.

Kept separate from the relays so the bench client depends on one small function and
the lab's report records exactly which network it ran over."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from halfsec.lab.netem.namespaces import MID_CLI_ADDR, MID_SRV_ADDR, NamespaceLab
from halfsec.lab.netem.profile import PROFILES, NetSpec, parse_net
from halfsec.lab.netem.rtc_path import RtcRelays
from halfsec.lab.netem.tcp_relay import TcpRelay

__all__ = ["NET_HELP", "NetPath", "impaired_url", "net_meta", "no_net"]

NET_HELP = (
    "simulate a network between bench client and server: a profile ("
    + ", ".join(PROFILES)
    + "), a profile with overrides ('4g,seed=3'), or a spec "
    "('delay=40ms,jitter=10ms,loss=2%,ge=0.05/0.3/0.5,rate=1mbit,seed=7'); "
    "see docs/network-lab.md"
)


def no_net(net: str | NetSpec | None) -> bool:
    """``None``, ``""`` and ``"none"`` all mean: no simulated network."""
    return net is None or (isinstance(net, str) and net.strip().lower() in ("", "none"))


def _default_port(scheme: str) -> int:
    return 443 if scheme in ("wss", "https") else 80


@asynccontextmanager
async def impaired_url(
    url: str,
    net: str | NetSpec | None,
    *,
    down: str | NetSpec | None = None,
) -> AsyncIterator[tuple[str, TcpRelay | None]]:
    """Yield ``(url', relay)``: ``url`` rewritten to reach its server through a
    :class:`TcpRelay` on 127.0.0.1 that applies ``net`` up and ``down`` (default: the
    same spec) down.  ``net`` of ``None``/``""``/``"none"`` yields the URL unchanged and
    no relay, so callers need no special case.

    Only host and port change; path and query are kept.  For ``wss://`` the TLS
    session passes through untouched, but the hostname becomes 127.0.0.1, so the
    certificate must be valid for it (or verification off) -- use ``ws://`` on the lab
    box."""
    if no_net(net):
        yield url, None
        return
    assert net is not None
    up_spec = net if isinstance(net, NetSpec) else parse_net(net)
    down_spec = (
        up_spec if down is None else (down if isinstance(down, NetSpec) else parse_net(down))
    )
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host to relay to")
    target = (parts.hostname, parts.port or _default_port(parts.scheme))
    async with TcpRelay(
        listen=("127.0.0.1", 0), target=target, up=up_spec, down=down_spec
    ) as relay:
        netloc = f"127.0.0.1:{relay.port}"
        if parts.username:
            cred = parts.username + (f":{parts.password}" if parts.password else "")
            netloc = f"{cred}@{netloc}"
        yield urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), relay


def net_meta(net: str | None, relay: TcpRelay | None) -> dict[str, Any] | None:
    """What a report's ``meta.net`` should hold: the specs as applied and the relay's
    counters (so a report shows retransmits and the delay actually added)."""
    if relay is None:
        return None
    return {
        "arg": net,
        "up": relay.up_spec.as_dict(),
        "down": relay.down_spec.as_dict(),
        "transport": "tcp-relay",
        "counters": relay.counters(),
    }


def _with_netloc(url: str, host: str, port: int) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, f"{host}:{port}", p.path, p.query, p.fragment))


class NetPath:
    """Where one bench run's traffic crosses the simulated network.

    ``NetPath(net)``: relay mode, loopback relays in this process (``impaired_url`` for
    TCP, :class:`~halfsec.lab.netem.rtc_path.RtcRelays` on 127.0.0.1 for WebRTC).
    ``NetPath(net, lab)``: namespace mode, the same relays bound in ``lab``'s middle
    namespace, between a client namespace (where the caller's thread must be, see
    ``namespaces.enter_netns``) and a server namespace.  The clients ask this object for
    a relayed URL or a pair of WebRTC relays and never need to know the mode."""

    def __init__(
        self, net: str | None, lab: NamespaceLab | None = None, server_port: int = 0
    ) -> None:
        self.net = None if no_net(net) else net
        self.lab = lab
        self.server_port = server_port
        """Namespace mode: the server's port in its namespace (URLs the bench holds
        point at a relay in front of it, which is not where a fresh relay must go)."""
        self.spec = parse_net(self.net) if self.net else None
        self.relays: list[tuple[int, TcpRelay]] = []
        """Namespace mode: every TCP relay a recording used (``--pcap`` reads their
        counters beside the packets)."""
        self.pcap: dict[str, Any] | None = None
        """``--pcap``: the packet figures beside the lab's, once the capture ended."""

    @property
    def mode(self) -> str:
        return "namespace" if self.lab is not None else "relay"

    @property
    def active(self) -> bool:
        return self.spec is not None

    @asynccontextmanager
    async def tcp(self, url: str) -> AsyncIterator[tuple[str, TcpRelay | None]]:
        """``url`` (ws:// or http://) rewritten to cross a fresh TCP relay (namespace
        mode: in the middle, to the server's own address; path and query kept)."""
        if self.lab is None:
            async with impaired_url(url, self.spec) as out:
                yield out
            return
        if not self.server_port:
            raise ValueError("namespace mode: NetPath needs the server's port")
        async with self.lab.tcp_relay(self.server_port, listen_port=0) as relay:
            self.relays.append((relay.port, relay))
            yield _with_netloc(url, self.lab.relay_host, relay.port), relay

    def tcp_meta(self, relay: TcpRelay | None) -> dict[str, Any] | None:
        """A record's ``net`` for a TCP run: ``net_meta``'s shape, plus ``mode``."""
        meta = net_meta(self.net, relay)
        if meta is not None:
            meta["mode"] = self.mode
            if self.lab is not None:
                # The relay applies what the kernel does not: show the whole spec.
                meta["up"], meta["down"] = self.lab.up.as_dict(), self.lab.down.as_dict()
                meta["kernel_impair"] = self.lab.kernel_impair
        return meta

    def rtc_relays(self) -> RtcRelays:
        """Relays A/B for one WebRTC session (see ``rtc_path``)."""
        assert self.spec is not None, "no --net: nothing to relay"
        if self.lab is None:
            return RtcRelays(self.spec, self.spec)
        up, down = self.lab.relay_specs()
        return RtcRelays(
            up,
            down,
            a_host=MID_CLI_ADDR,
            b_host=MID_SRV_ADDR,
            relay_socket=self.lab.relay_socket,
            bridge=(self.lab.client_host, self.lab.client_socket),
            mode="namespace",
        )
