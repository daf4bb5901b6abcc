"""Stopping a task without swallowing a cancel aimed at the one who stops it."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has finished, whatever it ended with.

    Why not ``task.cancel()`` then ``await task`` under ``suppress(CancelledError)``:
    the ``CancelledError`` of a cancel aimed at the *caller* while it waits looks the same
    and is swallowed too, and the caller runs on as if nobody had asked it to stop (a
    turn task stopping its losing reply attempt or a refuted early reply would go on
    with its reply while the session's ``close`` waits for it).  ``asyncio.wait`` raises
    only the caller's own cancellation, never the awaited task's outcome."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved: how a task being stopped failed is not news
