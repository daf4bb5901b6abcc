"""WebRTC through the network lab for clients whose SDP the bench cannot touch directly.

The Python WebRTC client (``lab/clients/webrtc.py``) rewrites its own offer and answer so
that every media packet crosses a ``UdpRelay`` in each direction: relay A in front of
the server (the answer's candidate points at A), relay B in front of the client (the
offer's candidate points at B).  Neither peer learns the other's real port, so every
candidate pair ICE can form -- host or peer-reflexive -- crosses exactly one relay per
direction.

A browser builds and sends its offer itself, so here the rewriting happens on the way:
:class:`SignalingProxy` is a small HTTP server the bench runs; the page is loaded
*through* it (its ``fetch("/webrtc/offer")`` is same-origin, so it lands here, and a
``127.0.0.1`` origin stays a secure context that the server's Origin guard accepts)
and it forwards every request to the real server, rewriting the offer before and the
answer after with :class:`RtcRelays`.  Why a proxy and not a page hook driven over the
DevTools protocol: it needs no change to the page, works for any client that POSTs an
offer (namespace mode puts the Python client behind it too), and the forwarded
request is exactly what the page would have sent.

:class:`RtcRelays` is the same A/B scheme for both network modes: loopback relays
(``--net-mode relay``), or relays in the middle namespace of a ``NamespaceLab``
(``--net-mode namespace``).  A client whose ICE candidate is loopback (the Python
client pins 127.0.0.1) cannot be reached from outside its namespace, so there two
unimpaired forwarders in the client namespace bridge loopback and the veth.
"""

from __future__ import annotations

import ipaddress
import json
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiohttp import web

from halfsec.errors import HalfsecError
from halfsec.lab.netem.profile import NetSpec
from halfsec.lab.netem.relay_base import SocketFactory
from halfsec.lab.netem.sdp import SdpError, ipv4_host_candidate, only_candidate
from halfsec.lab.netem.udp_relay import UdpRelay

__all__ = ["RtcPathError", "RtcRelays", "SignalingProxy"]

_MAX_BODY = 256 * 1024


class RtcPathError(HalfsecError):
    """These relays cannot take this session (one offer per session)."""


class RtcRelays:
    """Relay A (server side) and B (client side) for one WebRTC session.

    ``a_host``/``b_host``: where A and B listen (the address the other peer is told);
    ``relay_socket``: how relay sockets are made (another namespace's factory, or
    ``None`` for this thread's).  ``bridge``: ``(client_host, client_socket)`` of a
    client namespace, used only when the client's candidate is loopback (see module
    docstring).  ``up`` is client->server on the wire; B's own "client" is the server,
    so B applies ``down`` to what it receives from its client and ``up`` back."""

    def __init__(
        self,
        up: NetSpec,
        down: NetSpec,
        *,
        a_host: str = "127.0.0.1",
        b_host: str = "127.0.0.1",
        relay_socket: SocketFactory | None = None,
        bridge: tuple[str, SocketFactory] | None = None,
        mode: str = "relay",
    ) -> None:
        self.up, self.down = up, down
        self.a_host, self.b_host = a_host, b_host
        self.relay_socket = relay_socket
        self.bridge = bridge
        self.mode = mode
        self.server_side: UdpRelay | None = None
        self.client_side: UdpRelay | None = None
        self.bridged = False
        self._bridge_factory: SocketFactory | None = None
        self._stack = AsyncExitStack()

    async def _start(self, relay: UdpRelay) -> UdpRelay:
        return await self._stack.enter_async_context(relay)

    async def rewrite_offer(self, sdp: str) -> str:
        """Start B in front of the client's candidate; the offer then names B."""
        if self.client_side is not None:
            raise RtcPathError("one offer per session: these relays are already in use")
        host, port = ipv4_host_candidate(sdp)
        target = (host, port)
        if self.bridge is not None and ipaddress.ip_address(host).is_loopback:
            bridge_host, factory = self.bridge
            fwd = await self._start(
                UdpRelay(listen=(bridge_host, 0), target=target, socket_factory=factory)
            )
            target, self.bridged, self._bridge_factory = (bridge_host, fwd.port), True, factory
        self.client_side = await self._start(
            UdpRelay(
                listen=(self.b_host, 0),
                target=target,
                up=self.down,
                down=self.up,
                socket_factory=self.relay_socket,
            )
        )
        return only_candidate(sdp, self.b_host, self.client_side.port)

    async def rewrite_answer(self, sdp: str) -> str:
        """Start A in front of the server's candidate; the answer then names A (or the
        client-namespace forwarder to A when the client lives on loopback)."""
        host, port = ipv4_host_candidate(sdp)
        self.server_side = await self._start(
            UdpRelay(
                listen=(self.a_host, 0),
                target=(host, port),
                up=self.up,
                down=self.down,
                socket_factory=self.relay_socket,
            )
        )
        if self.bridged:
            fwd = await self._start(
                UdpRelay(
                    listen=("127.0.0.1", 0),
                    target=(self.a_host, self.server_side.port),
                    socket_factory=self._bridge_factory,
                )
            )
            return only_candidate(sdp, "127.0.0.1", fwd.port)
        return only_candidate(sdp, self.a_host, self.server_side.port)

    def meta(self, arg: str | None) -> dict[str, Any] | None:
        """A record's ``net``, shaped like the Python WebRTC client's (plus ``mode``)."""
        if self.server_side is None or self.client_side is None:
            return None
        out: dict[str, Any] = {
            "arg": arg,
            "transport": "udp-relay",
            "mode": self.mode,
            "relay_server_side": self.server_side.counters(),
            "relay_client_side": self.client_side.counters(),
        }
        if self.bridged:
            out["bridged_loopback_client"] = True
        return out

    async def aclose(self) -> None:
        await self._stack.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class SignalingProxy:
    """``async with SignalingProxy(upstream, relays) as proxy``: serves ``proxy.url``.

    ``POST /webrtc/offer`` is forwarded to ``upstream`` with the offer rewritten by
    ``relays`` (none: unchanged) and the answer rewritten on the way back; every other
    ``GET`` (the page, its scripts, ``/healthz``) is forwarded as is.  Listens on
    127.0.0.1 of the calling thread's namespace."""

    def __init__(self, upstream: str, relays: RtcRelays | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.relays = relays
        self.app = web.Application(client_max_size=_MAX_BODY)
        self.app.router.add_post("/webrtc/offer", self._offer)
        self.app.router.add_get("/{tail:.*}", self._get)
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _get(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        try:
            async with self._http.get(self.upstream + request.path_qs) as r:
                body = await r.read()
                headers = {
                    k: v for k, v in r.headers.items() if k in ("Content-Type", "Cache-Control")
                }
                return web.Response(status=r.status, body=body, headers=headers)
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            return web.Response(status=502, text=f"upstream {self.upstream}: {e}")

    async def _offer(self, request: web.Request) -> web.Response:
        assert self._http is not None
        try:
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("sdp"), str):
                raise ValueError("expected a JSON object with an sdp string")
            if self.relays is not None:
                body["sdp"] = await self.relays.rewrite_offer(body["sdp"])
        except (ValueError, RtcPathError, SdpError) as e:
            return web.Response(status=400, text=f"signaling proxy: {e}")
        except OSError as e:  # a relay could not bind
            return web.Response(status=502, text=f"signaling proxy: {type(e).__name__}: {e}")
        try:
            async with self._http.post(self.upstream + "/webrtc/offer", json=body) as r:
                text = await r.text()
                if r.status != 200:
                    return web.Response(status=r.status, text=text)
            answer = json.loads(text)
            if self.relays is not None:
                answer["sdp"] = await self.relays.rewrite_answer(str(answer["sdp"]))
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            return web.Response(status=502, text=f"upstream {self.upstream}: {e}")
        except (ValueError, KeyError, RtcPathError, SdpError) as e:
            return web.Response(status=502, text=f"signaling proxy: bad answer: {e}")
        except Exception as e:  # the page shows only a status: say what failed, not "500"
            return web.Response(status=502, text=f"signaling proxy: {type(e).__name__}: {e}")
        return web.json_response(answer)
