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


async def test_a_task_that_swallowed_its_cancel_is_cancelled_again() -> None:
    """Python 3.11's ``asyncio.wait_for`` swallows a cancel that lands once its inner
    future is done (it returns that result): the task runs on to its next ``await``, here
    one that nothing will ever end (stop 15's refuted early reply waited on a confirmation
    no final could give).  One cancel and an unbounded wait hung its stopper for ever."""
    started = asyncio.Event()
    never = asyncio.Event()

    async def swallows_one() -> None:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass  # what wait_for's race does: no error, the task goes on
        await never.wait()

    task = asyncio.create_task(swallows_one())
    await started.wait()
    try:
        assert await asyncio.wait_for(cancel_and_wait(task), 10) is True
        assert task.cancelled()
    finally:
        never.set()


async def test_a_task_that_will_not_stop_is_let_go_at_the_deadline() -> None:
    """Whoever stops a task (a session's push or close) never waits past the deadline,
    whatever the task does with its cancels; it hears False and the task is left running."""
    started, quit_ = asyncio.Event(), False

    async def deaf() -> None:
        started.set()
        while not quit_:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                pass

    task = asyncio.create_task(deaf())
    await started.wait()
    t0 = asyncio.get_running_loop().time()
    try:
        assert await asyncio.wait_for(cancel_and_wait(task, deadline_s=0.3), 10) is False
        assert 0.25 <= asyncio.get_running_loop().time() - t0 < 5.0
        assert not task.done()
    finally:
        quit_ = True
        await asyncio.wait_for(task, 5)
