"""What one ``halfsec bench`` run is asked to do, and the error for a run that cannot start.

Kept apart from the run itself so the server launcher, the namespace mode and the
browser bench can all take a ``BenchOptions`` without importing the loop that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from halfsec.errors import HalfsecError
from halfsec.lab.clients.options import ClientOptions
from halfsec.measure.audible import AUDIBLE_DBFS
from halfsec.options_check import CommandFlags, OneOf, Range, Rule, check_fields, flags_of, positive


class BenchError(HalfsecError):
    """The bench cannot run at all (server does not start, bad URL, bad option)."""


_RULES: dict[str, Rule] = {
    "inject_delay_ms": Range(0, 60_000, unit="ms"),
    "audible_dbfs": Range(-120, 0, high_inclusive=False, unit="dBFS"),
    "max_input_s": positive("s"),
    "server_start_timeout_s": positive("s", at_most=86_400),
    "transport": OneOf(("websocket", "webrtc", "twilio")),
    "net_mode": OneOf(("relay", "namespace")),
    "client_kind": OneOf(("python", "browser")),
    "fault_every": Range(1, 1_000_000),
}
_KEYS = CommandFlags(
    "halfsec bench",
    "BenchOptions",
    {**flags_of("inject_delay_ms", "transport", "net_mode"), "client_kind": "--client"},
)


@dataclass
class BenchOptions:
    server: str | None = None
    """``ws://host:port/ws`` or ``http://host:port``; None: start a local server."""
    token: str | None = None
    config: Path | None = None
    overrides: list[str] = field(default_factory=list)
    inject_delay_ms: float = 0.0
    """Passed to the server the bench starts (the lab's self-test)."""
    save_audio: Path | None = None
    audible_dbfs: float = AUDIBLE_DBFS
    max_input_s: float = 120.0
    server_start_timeout_s: float = 180.0
    client: ClientOptions = field(default_factory=ClientOptions)
    transport: str = "websocket"
    """``websocket`` (codec from ``client.codec``), ``webrtc`` (Opus, aiortc client) or
    ``twilio`` (a phone call over Twilio Media Streams: mu-law at 8 kHz,
    ``lab.clients.twilio``)."""
    net: str | None = None
    """``--net`` profile/spec: a TCP relay for WebSocket, two UDP relays for WebRTC."""
    net_mode: str = "relay"
    """``relay``: the relays run on 127.0.0.1 in this process.  ``namespace``: client,
    relays and server sit in three network namespaces joined by veths
    (``lab.bench.namespace``; root only, needs ``net`` and no ``server``)."""
    client_kind: str = "python"
    """``python`` (this package's clients, ``lab.bench.run.run_items``) or ``browser``
    (headless Chromium playing the page at ``/``, ``lab.bench.browser.run_browser_items``)."""
    trace: bool = True
    """One ``client.turn`` span per turn, kept in memory for the run's store (and the
    server's spans too when the bench starts the server)."""
    faults: list[str] = field(default_factory=list)
    """``--fault`` specs for the server the bench starts (``halfsec serve --fault``)."""
    fault_seed: int = 0
    fault_every: int = 1
    pcap: Path | None = None
    """Namespace mode: capture the run with tcpdump in the middle namespace to this file
    and put the packet figures beside the relays' (``lab.bench.pcap``)."""
    """Arm the faults in one session of this many (``halfsec serve --fault-every``)."""
    otlp_endpoint: str | None = None
    """Also export the spans to this OTLP/HTTP collector (and point the server the bench
    starts at it), so one trace viewer shows client and server of every turn."""

    def __post_init__(self) -> None:
        check_fields(self, _RULES, _KEYS, BenchError)

    @property
    def codec(self) -> str:
        """The audio codec on the wire: the transport's own, or the WebSocket client's."""
        return {"webrtc": "opus", "twilio": "mulaw"}.get(self.transport, self.client.codec)
