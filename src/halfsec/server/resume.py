"""Signed context snapshots: a conversation that outlives the server it started on.

When a server (or a whole region) dies mid-conversation, the client reconnects through
the gateway to another server.  That server has never seen the conversation, and there
is no shared database to ask: the *client* carries the dialogue state instead.  After
every answered turn the server sends a ``context`` event holding a token; on reconnect
the client puts it in ``session.start`` (``"resume": TOKEN``) and the new server
continues from that state ("Large." still answers "What size?").

The token is the dialogue state (``DialogueState.snapshot``), the domain it belongs to
and an expiry, signed with HMAC-SHA256 under a key every server of one deployment shares
(``halfsec serve --resume-key`` or ``HALFSEC_RESUME_KEY``).  The client can read it but
cannot change it: a changed token fails the signature check, so a client cannot forge an
order it never placed.  A server without a key sends no snapshots and refuses resumes
(``resume_unavailable``); the session then starts fresh, like every refusal here.

Why a wall clock (``time.time``) for the expiry, against the monotonic rule everywhere
else: the token is checked by *another process*, possibly on another machine, and
monotonic clocks of two processes share no origin.  Expiry needs agreement to seconds,
not latency precision, so NTP-synced wall clocks are the right tool; a skew shows as a
token living a little longer or shorter.

Format: ``hs1.<base64url(JSON payload)>.<base64url(HMAC-SHA256(key, "hs1." + payload))>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from halfsec.logic.state import DialogueState

__all__ = [
    "DEFAULT_TTL_S",
    "MIN_KEY_CHARS",
    "RESUME_KEY_ENV",
    "ContextSealer",
    "ResumeError",
    "key_problem",
    "sealer_from_key",
]

RESUME_KEY_ENV = "HALFSEC_RESUME_KEY"
DEFAULT_TTL_S = 600.0
"""How long a snapshot may be resumed: long enough for a reconnect across regions and a
user who paused, short enough that a stolen token soon stops being useful."""
MIN_KEY_CHARS = 16
"""A shorter key is refused at start: HMAC is only as good as a key nobody can guess."""
MAX_TOKEN_CHARS = 48 * 1024
"""Larger tokens are refused before decoding (a session.start is at most 64 KiB)."""
_PREFIX = "hs1."
_VERSION = 1


class ResumeError(Exception):
    """A ``resume`` the server will not honour; ``code`` goes into the ``error`` event."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class ContextSealer:
    """Seals dialogue states into tokens and opens them, under one deployment key."""

    key: bytes
    ttl_s: float = DEFAULT_TTL_S
    clock: Callable[[], float] = time.time

    def _mac(self, signed: str) -> bytes:
        return hmac.new(self.key, signed.encode("ascii"), hashlib.sha256).digest()

    def seal(self, state: DialogueState, domain: str | None, session_id: str) -> dict[str, Any]:
        """``{"token", "expires_at"}`` for ``state`` (``expires_at``: Unix seconds)."""
        now = self.clock()
        payload = {
            "v": _VERSION,
            "domain": domain,
            "session": session_id,
            "iat": round(now, 3),
            "exp": round(now + self.ttl_s, 3),
            "state": state.snapshot(),
        }
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        signed = _PREFIX + body
        return {"token": f"{signed}.{_b64(self._mac(signed))}", "expires_at": payload["exp"]}

    def open(self, token: object, domain: str | None) -> tuple[DialogueState, dict[str, Any]]:
        """The state in ``token`` and its payload; ``ResumeError`` if it is not one this
        deployment signed for ``domain``, or it expired."""
        if not isinstance(token, str) or not token.startswith(_PREFIX):
            raise ResumeError("resume_invalid", "'resume' must be a context token (hs1....)")
        if len(token) > MAX_TOKEN_CHARS:
            raise ResumeError("resume_invalid", f"'resume' is over {MAX_TOKEN_CHARS} characters")
        signed, _, mac = token.rpartition(".")
        try:
            given = _unb64(mac)
        except (binascii.Error, ValueError) as e:
            raise ResumeError("resume_invalid", "the context token's signature is garbled") from e
        if not hmac.compare_digest(given, self._mac(signed)):
            raise ResumeError(
                "resume_invalid",
                "the context token's signature does not match this deployment's key (changed "
                "token, or servers with different --resume-key)",
            )
        try:
            payload = json.loads(_unb64(signed[len(_PREFIX) :]))
        except (binascii.Error, ValueError) as e:
            raise ResumeError("resume_invalid", "the context token's payload is garbled") from e
        if not isinstance(payload, dict) or payload.get("v") != _VERSION:
            raise ResumeError("resume_invalid", "the context token has an unknown version")
        exp = payload.get("exp")
        if not isinstance(exp, int | float) or self.clock() > exp:
            raise ResumeError(
                "resume_expired",
                f"the context token expired (tokens live {self.ttl_s:g} s); the "
                "conversation starts fresh",
            )
        if payload.get("domain") != domain:
            raise ResumeError(
                "resume_invalid",
                f"the context token is for domain {payload.get('domain')!r}, this server "
                f"runs {domain!r}",
            )
        try:
            state = DialogueState.from_snapshot(payload.get("state"))
        except ValueError as e:
            raise ResumeError(
                "resume_invalid", f"the context token's state is unusable: {e}"
            ) from e
        return state, payload


def key_problem(key: str | None) -> str | None:
    """Why ``key`` cannot be a resume key (checked before models load), or None."""
    if key is not None and len(key) < MIN_KEY_CHARS:
        return (
            f"the resume key must be at least {MIN_KEY_CHARS} characters (got {len(key)}); "
            "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return None


def sealer_from_key(key: str | None, ttl_s: float = DEFAULT_TTL_S) -> ContextSealer | None:
    """The deployment's sealer, or None without a key (no snapshots, resumes refused).

    The key comes from ``ServerOptions.resume_key`` only; ``halfsec serve`` fills that
    from ``--resume-key`` or ``$HALFSEC_RESUME_KEY``, so a server embedded as a library
    never picks a key up from its environment by surprise."""
    problem = key_problem(key)
    if problem is not None:
        raise ValueError(problem)
    return None if key is None else ContextSealer(key.encode(), ttl_s)
