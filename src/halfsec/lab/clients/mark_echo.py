"""Twilio's part for ``mark`` s: send each back when the caller has heard the audio before it.

A bidirectional Media Stream plays the server's ``media`` from a buffer, in order; a
``mark`` the server sends names the point after everything sent so far, and Twilio sends
it back when its playback reaches that point.  A ``clear`` drops the buffered audio and
sends every pending mark back at once.  The lab's phone client does exactly that on its
playback timeline (reply audio placed where it arrived, back to back), so the server
learns the playback end the way it would from a real call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from halfsec.clock import now_ns
from halfsec.lab.clients.client_run import ClientRun


class MarkEcho:
    """Pending marks and the tasks that send them back when their audio has played."""

    def __init__(self, run: ClientRun, send: Callable[[str], Awaitable[None]]) -> None:
        self.run = run
        self._send = send
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._due: dict[str, int] = {}
        self.echoed: list[tuple[str, int]] = []
        """(name, when sent back) of every mark, in order."""

    def mark(self, name: str) -> None:
        """A mark arrived: it stands after all the audio placed so far."""
        timeline = self.run.timeline
        due = timeline.playing_until_ns if timeline is not None else now_ns()
        self._due[name] = due
        self._pending[name] = asyncio.create_task(self._echo_at(name, due))

    def clear(self) -> None:
        """Playback was cleared: every pending mark goes back now, in the order sent."""
        names = list(self._pending)
        for task in self._pending.values():
            task.cancel()
        self._pending.clear()
        for name in names:
            self._due[name] = 0
            self._pending[name] = asyncio.create_task(self._echo_at(name, 0))

    async def _echo_at(self, name: str, due_ns: int) -> None:
        wait = (due_ns - now_ns()) / 1e9
        if wait > 0:
            await asyncio.sleep(wait)
        self._pending.pop(name, None)
        self._due.pop(name, None)
        self.echoed.append((name, now_ns()))
        with contextlib.suppress(Exception):  # the call may be ending; nothing to tell
            await self._send(name)

    async def settle(self) -> None:
        """Let the marks whose audio has already played go back (before a ``stop``: the
        caller heard that audio, so the server should learn it did)."""
        t = now_ns()
        due = [task for name, task in self._pending.items() if self._due.get(name, t) <= t]
        for task in due:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def close(self) -> None:
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
