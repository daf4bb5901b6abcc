"""How a Python bench client plays one recording: credentials, patience, codec.

Its own module because the bench's options embed it and every client takes it, and
neither should have to import a transport to name it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClientOptions:
    token: str | None = None
    origin: str | None = None
    """Send this Origin header (tests of the server's allow-list); None like a non-browser."""
    pings: int = 8
    connect_timeout_s: float = 10.0
    max_tail_s: float = 10.0
    """After the recording, how long to wait for the reply before declaring the turn
    failed ("server never answered")."""
    no_speech_grace_s: float = 3.0
    """After the recording, how long to wait for the server to report any speech."""
    settle_s: float = 0.3
    """Silence kept flowing after the reply finished, so a late second turn is seen."""
    lead_ms: float = 20.0
    codec: str = "pcm16"
    """WebSocket audio encoding both ways: ``pcm16`` or ``opus`` (HSI1/HSO1 packets; the
    reply goes through the client's jitter buffer, see ``lab.clients.reply_player``)."""

    def handshake_headers(self) -> dict[str, str]:
        """The WebSocket upgrade's credentials: bearer token and, when set, Origin."""
        headers: dict[str, str] = {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.origin:
            headers["Origin"] = self.origin
        return headers
