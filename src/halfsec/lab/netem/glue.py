"""The few lines a bench needs to run "over 4G": ``--net PROFILE`` in, relayed URL out.

Kept separate from the relays so the bench client depends on one small function and
the lab's report records exactly which network it ran over."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from halfsec.lab.netem.profile import PROFILES, NetSpec, parse_net
from halfsec.lab.netem.tcp_relay import TcpRelay

__all__ = ["NET_HELP", "impaired_url", "net_meta"]

NET_HELP = (
    "simulate a network between bench client and server: a profile ("
    + ", ".join(PROFILES)
    + "), a profile with overrides ('4g,seed=3'), or a spec "
    "('delay=40ms,jitter=10ms,loss=2%,ge=0.05/0.3/0.5,rate=1mbit,seed=7'); "
    "see docs/network-lab.md"
)


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
    if net is None or (isinstance(net, str) and net.strip().lower() in ("", "none")):
        yield url, None
        return
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
