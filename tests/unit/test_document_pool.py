"""The pool /ispws documents are checked in: one ESP's limit, everyone's queue, and a document
counted until its thread is done with it, even when its request is gone."""

import asyncio
import threading

import pytest

from services.intake.pool import QUEUE_PER_THREAD, Busy, DocumentPool


async def test_past_an_esps_limit_429_past_the_queue_503_then_room_again() -> None:
    pool = DocumentPool(threads=1, per_esp=2)
    release = threading.Event()
    try:
        held = [asyncio.ensure_future(pool.run(f"esp-{i // 2}", release.wait))
                for i in range(pool.capacity)]
        await asyncio.sleep(0)  # all taken
        with pytest.raises(Busy) as esp_limit:
            await pool.run("esp-0", lambda: True)
        assert (esp_limit.value.status, esp_limit.value.retry_after_s) == (429, 1)
        with pytest.raises(Busy) as full:
            await pool.run("esp-new", lambda: True)
        assert full.value.status == 503 and pool.capacity == 1 + QUEUE_PER_THREAD
        release.set()
        assert all(await asyncio.gather(*held))
        assert await pool.run("esp-0", lambda: "checked") == "checked"
    finally:
        release.set()
        pool.close()


async def test_a_document_whose_request_is_gone_counts_until_its_thread_is_done() -> None:
    pool = DocumentPool(threads=1, per_esp=1)
    release = threading.Event()
    try:
        request = asyncio.ensure_future(pool.run("esp", release.wait))
        await asyncio.sleep(0)
        request.cancel()  # the client went away; the thread still works on its document
        with pytest.raises(Busy):
            await pool.run("esp", lambda: True)
        release.set()
        for _ in range(500):  # the thread's end frees the ESP's place
            try:
                assert await pool.run("esp", lambda: True)
                break
            except Busy:
                await asyncio.sleep(0.01)
        else:
            raise AssertionError("the ESP's place was never freed")
    finally:
        release.set()
        pool.close()
