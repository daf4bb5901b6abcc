"""The edge's side of the long path: pre-started origin sessions kept warm in a pool.

Why a pool of pre-started sessions and not one multiplexed socket: protocol v1 is one
conversation per WebSocket, and the origin (``halfsec serve``) keeps per-session state
(VAD, turn numbering, barge-in) keyed by the connection.  Multiplexing would need a new
framing on the origin and would put every user behind one TCP stream, so one lost
segment would stall all of them (head-of-line blocking across users).  A pool gives the
latency property that matters -- no connection setup on the long path when a user
starts talking -- without either cost: each link has already paid TCP, the WebSocket
upgrade, ``session.start`` and a clock sync *before* a client asks for it, and keeps
itself alive with pings while it waits.

A link is used for exactly one client conversation and then closed (never returned to
the pool): an origin session carries turn ids and conversation state, and reusing it
would leak one user's state into the next.  The pool refills in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from halfsec.edge.origin_link import (
    OriginLink,
    OriginOptions,
    OriginRefused,
    OriginUnavailable,
    open_link,
)

log = logging.getLogger("halfsec.edge")


class OriginPool:
    """Keeps ``pool_size`` warm links; ``acquire`` hands one out (or opens one now).

    Invariants, each of which an earlier version broke:

    * Every link the pool opened is, at any moment, in ``_warm``, handed out by
      ``acquire``, or being closed.  ``_warm`` is only ever mutated in place, and a link
      is added to it only after its open finished -- ``self._warm.append(await ...)``
      binds the list *before* the await, so a prune that rebinds ``_warm`` during the
      ~0.5 s open on an 80 ms RTT path (``/healthz`` prunes) would drop a live link into
      an orphaned list, where it kept pinging and held an origin session forever.  That
      was the "links die young, origin says 503" bug: nothing died, links leaked.
    * A dead link's origin session is closed (awaited) before a replacement is opened,
      so the edge never holds more origin sessions than ``pool_size`` + attached links.
    * Links that die young (within ``young_s`` of opening) and refusals back the refill
      off exponentially up to ``retry_max_s``: an origin that keeps killing or refusing
      sessions must not be hammered with new ones.
    """

    def __init__(self, options: OriginOptions) -> None:
        self.opt = options
        self._warm: list[OriginLink] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        self.opened = 0
        self.acquired_warm = 0
        self.acquired_cold = 0
        self.died_warm = 0
        """Warm links that closed while waiting in the pool (logged with the reason)."""
        self.refused = 0
        """Origin answered the upgrade with an HTTP error (503: its --max-sessions)."""
        self.last_started: dict[str, Any] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._young_deaths = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._refill(), name="edge-origin-pool")

    @property
    def warm(self) -> int:
        self._prune()
        return len(self._warm)

    def stats(self) -> dict[str, Any]:
        return {
            "opened": self.opened,
            "died_warm": self.died_warm,
            "refused": self.refused,
            "closing": len(self._closing),
        }

    def _prune(self) -> None:
        """Drop dead links from ``_warm`` (in place) and close their sessions."""
        dead = [link for link in self._warm if not link.alive]
        if not dead:
            return
        self._warm[:] = [link for link in self._warm if link.alive]
        for link in dead:
            self._retire(link)

    def _retire(self, link: OriginLink) -> None:
        age = link.age_s
        self.died_warm += 1
        if age < self.opt.young_s:
            self._young_deaths += 1
        log.warning(
            "origin pool: warm link to origin session %s died after %.1f s: %s",
            link.started.get("session_id"),
            age,
            link.closed_reason or "websocket closed",
        )
        task = asyncio.create_task(link.close(say_goodbye=True))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _on_warm_closed(self, reason: str) -> None:
        """A warm link's reader saw it close: wake the refill to close and replace it."""
        self._wake.set()

    async def _open(self) -> OriginLink:
        try:
            link = await open_link(self.opt)
        except OriginRefused as e:
            self.refused += 1
            self.last_error = str(e)
            raise
        except OriginUnavailable as e:
            self.last_error = str(e)
            raise
        self.opened += 1
        self.last_error = None
        self.last_started = link.started
        return link

    async def _drain_closing(self) -> None:
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=self.opt.connect_timeout_s)

    async def _refill(self) -> None:
        backoff = self.opt.retry_min_s
        while True:
            self._prune()
            # Close before replace: the origin counts a dying link's session until its
            # close arrives, and a replacement opened first could be the one it refuses.
            await self._drain_closing()
            if self._young_deaths:
                log.warning(
                    "origin pool: %d link(s) died young; waiting %.1f s before reopening",
                    self._young_deaths,
                    backoff,
                )
                self._young_deaths = 0
                await asyncio.sleep(backoff)
                backoff = min(self.opt.retry_max_s, backoff * 2)
                continue
            if len(self._warm) >= self.opt.pool_size:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            try:
                link = await self._open()
            except OriginUnavailable as e:
                log.warning("origin pool: %s (retrying in %.1f s)", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(self.opt.retry_max_s, backoff * 2)
                continue
            except Exception as e:  # the refill loop must outlive any one failure
                self.last_error = f"{type(e).__name__}: {e}"
                log.exception("origin pool: unexpected failure opening a link")
                await asyncio.sleep(backoff)
                backoff = min(self.opt.retry_max_s, backoff * 2)
                continue
            link.on_close = self._on_warm_closed
            self._warm.append(link)
            if link.alive and not self._young_deaths:
                backoff = self.opt.retry_min_s

    async def acquire(self) -> tuple[OriginLink, bool]:
        """A warm link if one is ready (no long-path round trip), else a fresh one.

        Returns ``(link, was_warm)``; raises ``OriginUnavailable`` (``OriginRefused`` when
        the origin answered with an HTTP error, e.g. 503 at its session limit).  A cold
        open is retried at most ``acquire_attempts`` times and never after a refusal: a
        full origin stays full for longer than a client should wait."""
        self._prune()
        self._wake.set()
        while self._warm:
            link = self._warm.pop(0)
            if link.alive:
                link.on_close = None
                self.acquired_warm += 1
                return link, True
            self._retire(link)
        self.acquired_cold += 1
        for attempt in range(1, self.opt.acquire_attempts + 1):
            try:
                return await self._open(), False
            except OriginRefused:
                raise
            except OriginUnavailable:
                if attempt >= self.opt.acquire_attempts:
                    raise
                await asyncio.sleep(self.opt.retry_min_s)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        links, self._warm[:] = list(self._warm), []
        for link in links:
            await link.close()
        await self._drain_closing()
