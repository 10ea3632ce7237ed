"""Stopping a background loop: shared.shutdown.cancel ends it even when a cancellation is lost."""

import asyncio

from shared.shutdown import cancel


async def test_a_loop_that_loses_a_cancellation_is_cancelled_again_until_it_ends() -> None:
    lost = 0

    async def retrying_loop() -> None:
        nonlocal lost
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if lost:  # the second one ends it
                    raise
                lost += 1  # as Python 3.11's wait_for can lose one that lands as it times out

    task = asyncio.create_task(retrying_loop())
    await asyncio.sleep(0.05)
    await asyncio.wait_for(cancel(task, again_after_s=0.05), 5)
    assert task.cancelled() and lost == 1


async def test_a_task_that_already_failed_is_reported_not_raised() -> None:
    async def failing() -> None:
        raise RuntimeError("Redis away")

    task = asyncio.create_task(failing())
    await asyncio.sleep(0)
    await cancel(task)
    assert isinstance(task.exception(), RuntimeError)
