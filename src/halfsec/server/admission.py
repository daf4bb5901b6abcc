"""Admission rules shared by every endpoint that faces clients (server and edge).

A voice endpoint is an open microphone into CPU-heavy models: who may connect (loopback,
token, browser Origin), how many may be connected at once, and how fast and how much
each may send is decided here, once, so the server's WebSocket and WebRTC endpoints and
the edge cannot drift apart."""

from __future__ import annotations

import hmac
import ipaddress
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

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


def presented_token(request: web.Request, body_token: str | None = None) -> str | None:
    """The token a client presented: ``Authorization: Bearer`` wins, then a token in the
    request body (WebRTC offers carry one, browsers cannot set headers on a page load),
    then ``?token=``."""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[len("Bearer ") :].strip()
    if body_token is not None:
        return body_token
    return request.query.get("token")


def token_matches(given: str | None, token: str | None) -> bool:
    """No token configured admits everyone; otherwise a constant-time comparison."""
    if not token:
        return True
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a connection attempt was turned away: the HTTP status and a sentence that
    tells the client what to change."""

    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class Admission:
    """Who may open a session: token, browser Origin and the session cap, in that order."""

    token: str | None
    allow_origins: tuple[str, ...]
    max_sessions: int

    def origin_refusal(self, request: web.Request) -> Refusal | None:
        origin = request.headers.get("Origin")
        if origin_allowed(origin, self.allow_origins):
            return None
        return Refusal(
            403, f"origin {origin} is not allowed; start the server with --allow-origin {origin}"
        )

    def refusal(
        self, request: web.Request, open_sessions: int, body_token: str | None = None
    ) -> Refusal | None:
        """None when ``request`` may open one more session next to ``open_sessions``."""
        if not token_matches(presented_token(request, body_token), self.token):
            return Refusal(
                401,
                "missing or wrong token: send 'Authorization: Bearer <token>' or ?token=",
            )
        bad_origin = self.origin_refusal(request)
        if bad_origin is not None:
            return bad_origin
        if open_sessions >= self.max_sessions:
            return Refusal(
                503,
                f"server busy: {self.max_sessions} sessions already open (--max-sessions); "
                "retry later",
            )
        return None


class _OncePerSecond:
    """At most one warning a second: a flooding client must not make us flood it back
    with errors."""

    def __init__(self) -> None:
        self.last_warning = -1e9

    def should_warn(self) -> bool:
        t = time.monotonic()
        if t - self.last_warning >= 1.0:
            self.last_warning = t
            return True
        return False


class RateLimiter(_OncePerSecond):
    """Token bucket of ``rate`` messages per second, with at most one warning a second."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate
        self.tokens = rate
        self.t = time.monotonic()

    def allow(self) -> bool:
        t = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (t - self.t) * self.rate)
        self.t = t
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class Rejection:
    """A client message that is dropped; ``message`` None: drop it without a word (the
    client was already warned this second)."""

    code: str
    message: str | None


class MessageLimits:
    """Per-connection limits on client messages: rate (token bucket) and size."""

    def __init__(self, max_messages_per_s: float, max_message_bytes: int) -> None:
        self.max_messages_per_s = max_messages_per_s
        self.max_message_bytes = max_message_bytes
        self._limiter = RateLimiter(max_messages_per_s)

    def rejection(self, size: int) -> Rejection | None:
        """None when a message of ``size`` bytes may be handled now."""
        if not self._limiter.allow():
            if not self._limiter.should_warn():
                return Rejection("rate_limited", None)
            return Rejection(
                "rate_limited",
                f"more than {self.max_messages_per_s:.0f} messages/s; messages are "
                "being dropped (send 20 ms frames at real-time pace)",
            )
        if size > self.max_message_bytes:
            return Rejection(
                "message_too_large",
                f"message of {size} bytes exceeds the {self.max_message_bytes} byte "
                "limit; send audio in frames of 20-100 ms",
            )
        return None


class RealTimeAudio(_OncePerSecond):
    """Admission of client audio by its duration: at most ``rate`` times real time.

    Message limits count messages, not audio: one 64 KiB message is 2 s of 16 kHz PCM,
    so 200 messages a second could carry 400 s of audio a second, and every second of it
    costs VAD on the event loop every session shares, and later STT.  A microphone
    produces 1x; ``rate`` (1.5) leaves room for a client catching up after a hiccup.
    The bucket holds ``burst_ms`` of credit (what a client may send at once after a
    stall of the network, 5 s: about 17 ms of VAD on the loop), refilled at ``rate`` ms
    per ms.  A message is admitted
    while the credit is not negative and may take it below zero (so a message longer
    than the burst still gets in when the bucket is full); until the debt is repaid,
    audio is dropped with one ``rate_limited`` error a second.  Over any window ``T``
    a session so gets at most ``burst + rate * T`` plus one message of audio in."""

    def __init__(self, rate: float = 1.5, burst_ms: float = 5000.0) -> None:
        super().__init__()
        if not rate > 0 or not burst_ms > 0:
            raise ValueError(f"audio rate {rate!r} and burst {burst_ms!r} ms must be > 0")
        self.rate = rate
        self.burst_ms = burst_ms
        self.credit_ms = burst_ms
        self.t = time.monotonic()
        self.admitted_ms = 0.0
        self.dropped_ms = 0.0

    def rejection(self, audio_ms: float) -> Rejection | None:
        """None when ``audio_ms`` of audio may go to the session now."""
        t = time.monotonic()
        self.credit_ms = min(self.burst_ms, self.credit_ms + (t - self.t) * 1e3 * self.rate)
        self.t = t
        if self.credit_ms >= 0:
            self.credit_ms -= audio_ms
            self.admitted_ms += audio_ms
            return None
        self.dropped_ms += audio_ms
        if not self.should_warn():
            return Rejection("rate_limited", None)
        return Rejection(
            "rate_limited",
            f"audio arrives faster than {self.rate:g}x real time; audio is being dropped "
            "(send it as a microphone produces it)",
        )


def timeout_rejection(started: bool, start_timeout_s: float, idle_timeout_s: float) -> Rejection:
    """The fatal error for a connection that went quiet: before ``session.start`` it had
    ``start_timeout_s``, after it ``idle_timeout_s`` (a live microphone never stops)."""
    if not started:
        return Rejection(
            "start_timeout",
            f"no valid session.start within {start_timeout_s:.0f} s of connecting",
        )
    return Rejection(
        "idle_timeout",
        f"no message for {idle_timeout_s:.0f} s; send audio (silence counts) or pings to "
        "keep the session open",
    )
