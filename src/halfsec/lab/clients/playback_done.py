"""Tell the server when a turn's reply finished playing here (``playback.done``).

Only the client knows when its user heard the last sample of a reply: the network,
the client's own buffering and its playback queue sit between the server's send and
the ear.  The server's barge-in decision (is the agent still speaking?) trusts this
report over its own guess, so it is sent at the moment the client's playback timeline
reaches the end of that turn's reply audio -- as the browser page does when its last
buffer source of the turn ends -- and never for a turn whose playback was cut by an
interruption.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from halfsec.clock import now_ns
from halfsec.lab.clients.client_run import ClientRun
from halfsec.lab.clients.reply_player import ReplyPlayer
from halfsec.lab.clients.turn_state import TurnState
from halfsec.wire.protocol import playback_done_message


class PlaybackDoneReporter:
    """One ``playback.done`` per finished, uninterrupted turn, when its audio ends.

    ``reply_done(turn_id)`` is called when ``reply.done`` arrives: by then the server has
    sent all of that turn's audio (it goes before ``reply.done`` on the same socket).
    PCM replies are already on the timeline; Opus replies are placed as the jitter
    buffer plays them, so the report first waits for the player to drain."""

    def __init__(
        self,
        run: ClientRun,
        state: TurnState,
        send: Callable[[str], Awaitable[None]],
        player: ReplyPlayer | None = None,
    ) -> None:
        self.run = run
        self.state = state
        self.player = player
        self._send = send
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self.reported: list[int] = []
        """Turn ids reported, in order."""

    def reply_done(self, turn_id: int) -> None:
        if turn_id in self.state.interrupted or turn_id in self._tasks:
            return
        self._tasks[turn_id] = asyncio.create_task(self._report(turn_id))

    def _audio_end_ns(self, turn_id: int) -> int | None:
        """When the last sample of ``turn_id``'s reply leaves the client's speaker."""
        timeline = self.run.timeline
        if timeline is None:
            return None
        end = max((s + n for tid, s, n, _ in timeline.chunks if tid == turn_id), default=None)
        return None if end is None else timeline.t0_ns + round(end * 1e9 / timeline.rate)

    async def _report(self, turn_id: int) -> None:
        if self.player is not None:
            await self.player.drained()
        due = self._audio_end_ns(turn_id)
        if due is not None and due > now_ns():
            await asyncio.sleep((due - now_ns()) / 1e9)
        if turn_id in self.state.interrupted:
            return
        self.reported.append(turn_id)
        with contextlib.suppress(Exception):  # the connection may be closing; nothing to tell
            await self._send(playback_done_message(turn_id))

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
