"""Admission guards shared by every endpoint that faces clients (server and edge).

A voice endpoint is an open microphone into CPU-heavy models: who may connect (loopback,
token, browser Origin) and how fast they may send (a token bucket per connection) is
decided here, once, so the server and the edge cannot drift apart."""

from __future__ import annotations

import ipaddress
import time
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_problem(host: str, token: str | None) -> str | None:
    """Why binding ``host`` without a token is unsafe, or None when it is fine: an
    unauthenticated voice endpoint must never be reachable beyond this machine."""
    if is_loopback(host) or token:
        return None
    return (
        f"refusing to listen on {host}: it is not a loopback address and no "
        "--token was given, so anyone who can reach this port could use the "
        "pipeline.  Pass --token SECRET (clients send 'Authorization: Bearer SECRET'), "
        "or bind --host 127.0.0.1."
    )


def origin_allowed(origin: str | None, allow: tuple[str, ...]) -> bool:
    """Absent Origin = not a browser (bench, curl): allowed.  Browsers must be listed,
    except pages served from loopback when no list is given."""
    if origin is None:
        return True
    if "*" in allow:
        return True
    if allow:
        return origin.rstrip("/") in {a.rstrip("/") for a in allow}
    host = urlsplit(origin).hostname or ""
    return is_loopback(host)


class RateLimiter:
    """Token bucket of ``rate`` messages per second, with at most one warning a second
    (a flooding client must not make us flood it back with errors)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.t = time.monotonic()
        self.last_warning = -1e9

    def allow(self) -> bool:
        t = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (t - self.t) * self.rate)
        self.t = t
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def should_warn(self) -> bool:
        t = time.monotonic()
        if t - self.last_warning >= 1.0:
            self.last_warning = t
            return True
        return False
