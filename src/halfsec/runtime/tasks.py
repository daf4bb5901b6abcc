"""Stopping a task: without swallowing a cancel aimed at the one who stops it, again if
the task swallowed the first, and never for longer than a deadline."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

STOP_DEADLINE_S = 1.0
"""How long a stopper waits for a cancelled task before it gives up on it.  A turn's work
stops in well under a millisecond when it honours its cancel; one still running after a
second will not stop (it awaits something that may never come), and whoever waits for it
(a session's ``push``, its ``close``, a barge-in) must not wait with it: the session of a
client that is gone has to end whatever its turn is doing."""
RECANCEL_S = 0.05
"""A task still running this long after its cancel is cancelled again (see
``cancel_and_wait``); a task that honours its cancel never waits for this."""


async def cancel_and_wait(task: asyncio.Future[Any], deadline_s: float = STOP_DEADLINE_S) -> bool:
    """Cancel ``task`` and wait until it has finished, whatever it ended with; True when
    it did, False when it still ran ``deadline_s`` later (it is left cancelled, running).

    Why not ``task.cancel()`` then ``await task`` under ``suppress(CancelledError)``:
    the ``CancelledError`` of a cancel aimed at the *caller* while it waits looks the same
    and is swallowed too, and the caller runs on as if nobody had asked it to stop (a
    turn task stopping its losing reply attempt or a refuted early reply would go on
    with its reply while the session's ``close`` waits for it).  ``asyncio.wait`` raises
    only the caller's own cancellation, never the awaited task's outcome.

    Why cancel again: a task can swallow a cancel without any ``except`` of its own.
    Python 3.11's ``asyncio.wait_for`` returns the result of an inner future that was
    already done when the cancel landed, instead of raising; the task then runs on to its
    next ``await``.  Stop 15 caught this in the server (docs/reliability.md): a refuted
    early reply, cancelled as its next audio chunk came in, went on to wait for a
    confirmation that could no longer come, its turn task waited for it, and the
    session's ``push``, waiting for the turn task, never returned: the receive loop
    stopped, and the session outlived its client by minutes.  A second cancel lands on
    that next ``await``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not task.done():
        left = end - loop.time()
        if left <= 0:
            log.warning("%r did not stop within %g s of its cancel; left running", task, deadline_s)
            return False
        task.cancel()
        await asyncio.wait([task], timeout=min(RECANCEL_S, left))
    if not task.cancelled():
        task.exception()  # retrieved: how a task being stopped failed is not news
    return True
