"""``runtime.tasks.cancel_and_wait``: stopping a task never swallows a cancel aimed at the
caller (the turn task, the ladder and the session stop their sub-tasks through it)."""

from __future__ import annotations

import asyncio

import pytest

from halfsec.runtime.tasks import cancel_and_wait


async def _stubborn(started: asyncio.Event) -> None:
    """Takes a while to stop: its cleanup after a cancel still awaits."""
    started.set()
    try:
        await asyncio.sleep(10)
    finally:
        await asyncio.sleep(0.05)


async def test_a_cancel_of_the_caller_while_it_waits_is_not_swallowed() -> None:
    started = asyncio.Event()
    inner = asyncio.create_task(_stubborn(started))
    await started.wait()
    went_on = False

    async def caller() -> None:
        nonlocal went_on
        await cancel_and_wait(inner)
        went_on = True  # would run if the caller's own cancel were swallowed

    outer = asyncio.create_task(caller())
    await asyncio.sleep(0.01)  # the caller now waits for the inner task's cleanup
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert not went_on
    await asyncio.wait([inner])
    assert inner.cancelled()


async def test_the_task_is_stopped_and_its_failure_is_retrieved() -> None:
    async def fails_on_cancel() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise RuntimeError("broke while stopping") from None

    task = asyncio.create_task(fails_on_cancel())
    await asyncio.sleep(0)
    await cancel_and_wait(task)  # does not raise the task's own failure
    assert task.done() and not task.cancelled()
    assert isinstance(task.exception(), RuntimeError)
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    await cancel_and_wait(done)  # a finished task: nothing to do
