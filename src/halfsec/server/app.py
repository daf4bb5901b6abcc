"""``halfsec serve``: the aiohttp application around engines loaded once.

Routes: the browser page at ``/``, ``/healthz``, Prometheus ``/metrics`` (``metrics.py``),
the WebSocket endpoint ``/ws`` (``websocket.py``), WebRTC signaling ``POST
/webrtc/offer`` (``webrtc.py``) and phone calls over Twilio Media Streams at ``/twilio``
(``twilio.py``).  Every transport turns a client into a ``connection.ClientConnection``
over the same ``SessionServices``, so one ``--max-sessions`` caps their sum and one
shutdown closes them all.  The server binds loopback unless a token protects it
(``check_bind``).

``inject_delay_ms`` holds every reply-audio packet back before it is handed to the
transport.  It exists so the latency lab can prove it measures what it claims: a known
delay injected here must show up, to the millisecond, in the client's voice-to-voice
numbers.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from halfsec.config import HalfsecConfig
from halfsec.runtime.engines import Engines
from halfsec.server.connection import ClientConnection, SessionServices
from halfsec.server.listen import listen
from halfsec.server.options import ServeError, ServerOptions, check_bind
from halfsec.server.page import add_routes as add_page_routes
from halfsec.server.twilio import TwilioEndpoint
from halfsec.server.webrtc import WebRtcEndpoint
from halfsec.server.websocket import WebSocketEndpoint
from halfsec.trace.setup import Tracing, configure_tracing
from halfsec.wire.protocol import PROTOCOL_VERSION

__all__ = ["ServeError", "ServerOptions", "VoiceServer", "check_bind", "start_server"]


class VoiceServer:
    """The aiohttp application around shared engines.  ``app`` is ready to run."""

    def __init__(
        self,
        engines: Engines,
        config: HalfsecConfig,
        options: ServerOptions | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.engines = engines
        self.config = config
        self.options = options or ServerOptions()
        # Tracing given by the caller is the caller's to shut down; one built from the
        # options is flushed and closed with the app (in a thread: a flush can wait on
        # an unreachable collector, the loop must not).
        self._own_tracing = tracing is None and self.options.trace
        self.tracing = tracing
        if self._own_tracing:
            self.tracing = configure_tracing(
                "halfsec-server",
                otlp_endpoint=self.options.otlp_endpoint,
                jsonl_path=self.options.trace_file,
            )
        self.services = SessionServices(engines, config, self.options, self.tracing)
        self.websocket = WebSocketEndpoint(self.services)
        self.webrtc = WebRtcEndpoint(self.services)
        self.twilio = TwilioEndpoint(self.services)
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/metrics", self.services.metrics.handle)
        self.app.router.add_get("/ws", self.websocket.handle)
        self.app.router.add_post("/webrtc/offer", self.webrtc.offer)
        self.app.router.add_get("/twilio", self.twilio.handle)
        add_page_routes(self.app)
        self.app.on_shutdown.append(self._on_shutdown)
        self.app.on_cleanup.append(self._close_tracing)

    @property
    def sessions(self) -> dict[str, ClientConnection]:
        """Open sessions of every transport, by session id."""
        return self.services.connections

    @property
    def session_count(self) -> int:
        """Open sessions of every transport (``--max-sessions`` caps the sum)."""
        return len(self.services.connections)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "protocol": PROTOCOL_VERSION,
                "sessions": self.session_count,
                "transports": ["websocket", "webrtc", "twilio"],
                "encodings": ["pcm16", "opus"],
                "max_sessions": self.options.max_sessions,
                "output_sample_rate": self.config.audio.output_rate,
                "domain": self.config.logic.domain,
                "stt": self.config.stt.engine,
                "tts": self.config.tts.engine,
                "inject_delay_ms": self.options.inject_delay_ms,
            }
        )

    async def _on_shutdown(self, app: web.Application) -> None:
        for conn in list(self.services.connections.values()):
            with contextlib.suppress(Exception):
                await conn.shutdown()

    async def _close_tracing(self, app: web.Application) -> None:
        if self._own_tracing and self.tracing is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.tracing.shutdown)


async def start_server(
    engines: Engines, config: HalfsecConfig, options: ServerOptions
) -> tuple[VoiceServer, web.AppRunner, int]:
    """Start listening; returns the server, its runner (``await runner.cleanup()``) and
    the bound port (useful with port 0)."""
    check_bind(options)
    server = VoiceServer(engines, config, options)
    runner, port = await listen(server.app, options.host, options.port)
    return server, runner, port
