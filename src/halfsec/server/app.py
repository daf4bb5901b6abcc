"""``halfsec serve``: the aiohttp application around engines loaded once.

Routes: the browser page at ``/``, ``/healthz``, ``/ready`` (``readiness.py``),
Prometheus ``/metrics`` (``metrics.py``), the WebSocket endpoint ``/ws``
(``websocket.py``), WebRTC signaling ``POST /webrtc/offer`` (``webrtc.py``) and phone
calls over Twilio Media Streams at ``/twilio`` (``twilio.py``).  Every transport turns a
client into a ``connection.ClientConnection`` over the same ``SessionServices``, so one
``--max-sessions`` caps their sum and one shutdown closes them all.  The server binds
loopback unless a token protects it (``check_bind``).

Admission by load happens here, once, in front of the three session routes: while the
server is saturated (``load_meter``) or draining, a new session is answered 503 ``busy``
with ``Retry-After`` before any transport parses what it sent.  A caller that presented
a wrong token or a refused browser Origin still gets its 401/403 from the transport
(the refusal that tells it what to fix).  Every response names the worker process that
answered (``X-Halfsec-Worker``: with ``--workers N`` a caller can tell them apart).

``inject_delay_ms`` holds every reply-audio packet back before it is handed to the
transport.  It exists so the latency lab can prove it measures what it claims: a known
delay injected here must show up, to the millisecond, in the client's voice-to-voice
numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from halfsec.config import HalfsecConfig
from halfsec.runtime.engines import Engines
from halfsec.runtime.turn_models import preload_turn_models
from halfsec.server.admission import presented_token, token_matches
from halfsec.server.connection import ClientConnection, SessionServices
from halfsec.server.listen import listen, listen_on
from halfsec.server.load_meter import LoadLimits, LoadMeter
from halfsec.server.options import ServeError, ServerOptions, check_bind
from halfsec.server.page import add_routes as add_page_routes
from halfsec.server.readiness import Readiness, busy_response
from halfsec.server.twilio import TwilioEndpoint
from halfsec.server.webrtc import WebRtcEndpoint
from halfsec.server.websocket import WebSocketEndpoint
from halfsec.stt.lane_load import LANE_LOAD
from halfsec.trace.setup import Tracing, configure_tracing
from halfsec.wire.protocol import PROTOCOL_VERSION

__all__ = ["ServeError", "ServerOptions", "VoiceServer", "check_bind", "start_server"]

log = logging.getLogger("halfsec.serve")

SESSION_ROUTES = {("GET", "/ws"), ("POST", "/webrtc/offer"), ("GET", "/twilio")}
"""Where a new session starts: the routes the load gate stands in front of."""

WORKER_HEADER = "X-Halfsec-Worker"


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
        # The first session would load the shared turn models on the loop: pay it now.
        preload_turn_models(config.turn, config.session.end_of_turn)
        self.services = SessionServices(engines, config, self.options, self.tracing)
        self.websocket = WebSocketEndpoint(self.services)
        self.webrtc = WebRtcEndpoint(self.services)
        self.twilio = TwilioEndpoint(self.services)
        metrics = self.services.metrics
        limits = LoadLimits.default(self.options.capacity, self.options.workers)
        self.load = LoadMeter(
            limits,
            metrics.active_turns,
            LANE_LOAD.waits_since,
            open_sessions=lambda: self.session_count,
        )
        self.readiness = Readiness(self.load, lambda: self.session_count, self.options.max_sessions)
        # Partials are the first thing to go: shed once half the capacity is in flight.
        LANE_LOAD.active_turns = metrics.active_turns
        LANE_LOAD.shed_above_turns = max(1, math.ceil(limits.turn_capacity / 2))
        self._bind_load_metrics()
        self.app = web.Application(middlewares=[self._load_gate])
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/ready", self.readiness.handle)
        self.app.router.add_get("/metrics", self.services.metrics.handle)
        self.app.router.add_get("/ws", self.websocket.handle)
        self.app.router.add_post("/webrtc/offer", self.webrtc.offer)
        self.app.router.add_get("/twilio", self.twilio.handle)
        add_page_routes(self.app)
        self.app.on_startup.append(self._start_meter)
        self.app.on_response_prepare.append(self._name_worker)
        self.app.on_shutdown.append(self._on_shutdown)
        self.app.on_cleanup.append(self._stop_meter)
        self.app.on_cleanup.append(self._close_tracing)

    @property
    def sessions(self) -> dict[str, ClientConnection]:
        """Open sessions of every transport, by session id."""
        return self.services.connections

    @property
    def session_count(self) -> int:
        """Open sessions of every transport (``--max-sessions`` caps the sum)."""
        return len(self.services.connections)

    @property
    def draining(self) -> bool:
        return self.readiness.draining

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Stop admitting sessions and wait up to ``timeout_s`` (``--drain-s``) for the
        open ones to end; True when they all did.  What is still open after it is closed
        by the app's shutdown."""
        self.readiness.draining = True
        limit = self.options.drain_s if timeout_s is None else timeout_s
        log.info("draining: %d session(s) open, waiting up to %g s", self.session_count, limit)
        deadline = time.monotonic() + limit
        # Polled: the registry of connections (connection.py) has no event to wait on.
        while self.session_count and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        return self.session_count == 0

    @web.middleware
    async def _load_gate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Refuse a new session with ``busy`` while saturated or draining (module
        docstring); everything else goes straight to its handler."""
        if (request.method, request.path) in SESSION_ROUTES and not self._credentials_refused(
            request
        ):
            busy = self.readiness.busy()
            if busy is not None:
                self.services.metrics.refusal(503)
                return busy_response(busy)
        return await handler(request)

    def _credentials_refused(self, request: web.Request) -> bool:
        """A token presented in the header or query that is wrong, or a refused Origin:
        the transport answers 401/403, which says what to fix (a token in a WebRTC body
        or a Twilio ``start`` is not read here: a busy server parses nothing)."""
        admission = self.options.admission
        given = presented_token(request)
        if given is not None and not token_matches(given, admission.token):
            return True
        return admission.origin_refusal(request) is not None

    async def _name_worker(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers[WORKER_HEADER] = str(self.readiness.pid)

    def _bind_load_metrics(self) -> None:
        m = self.services.metrics
        m.saturation.set_function(lambda: self.load.snapshot().saturation)
        m.loop_lag.set_function(lambda: self.load.snapshot().lag_p95_ms / 1e3)
        m.draining.set_function(lambda: float(self.readiness.draining))
        m.shed.set_function(lambda: float(LANE_LOAD.shed_total))

    async def _start_meter(self, app: web.Application) -> None:
        self.load.start()

    async def _stop_meter(self, app: web.Application) -> None:
        await self.load.stop()

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
    engines: Engines,
    config: HalfsecConfig,
    options: ServerOptions,
    sock: socket.socket | None = None,
) -> tuple[VoiceServer, web.AppRunner, int]:
    """Start listening; returns the server, its runner (``await runner.cleanup()``) and
    the bound port (useful with port 0).  ``sock``: a listening socket to accept on
    instead of binding ``options.host:port`` (a worker of ``--workers N``)."""
    check_bind(options)
    server = VoiceServer(engines, config, options)
    if sock is None:
        runner, port = await listen(server.app, options.host, options.port)
    else:
        runner, port = await listen_on(server.app, sock)
    return server, runner, port
