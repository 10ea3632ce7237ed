"""The pool /ispws documents are checked in: one ESP's documents one at a time (the others
wait their turn, so another ESP finds a thread free), refusals past one ESP's share of bytes
(429) and everyone's (503), and a document counted until its thread is done with it."""

import asyncio
import threading

import pytest

from services.intake.pool import MIB_IN_ALL, MIB_PER_ESP, Busy, DocumentPool

MIB = 2**20


async def test_an_esps_documents_wait_their_turn_and_another_esp_finds_a_thread() -> None:
    pool = DocumentPool(threads=2, per_esp=1)
    release = threading.Event()
    try:
        flood = [asyncio.ensure_future(pool.run("flooder", 3 * MIB, release.wait))
                 for _ in range(3)]
        await asyncio.sleep(0.05)
        # The flooder holds one thread; its other documents wait: the second thread is free.
        other = await asyncio.wait_for(pool.run("another", 1024, lambda: "checked"), 5)
        assert other == "checked" and not any(f.done() for f in flood)
        release.set()
        assert await asyncio.gather(*flood) == [True] * 3
    finally:
        release.set()
        pool.close()


async def test_past_an_esps_share_429_past_everyones_503_small_ones_queue_freely() -> None:
    pool = DocumentPool(threads=1, per_esp=1)
    release = threading.Event()
    try:
        small = [asyncio.ensure_future(pool.run("busy-esp", 2048, release.wait))
                 for _ in range(200)]  # a burst of small documents just waits its turn
        per_esp = MIB_PER_ESP // 4
        held = [asyncio.ensure_future(pool.run(f"esp-{i // per_esp}", 4 * MIB, release.wait))
                for i in range(MIB_IN_ALL // 4 - 1)]
        await asyncio.sleep(0)
        with pytest.raises(Busy) as share:
            await pool.run("esp-0", 4 * MIB, lambda: True)
        assert (share.value.status, share.value.retry_after_s) == (429, 1)
        with pytest.raises(Busy) as full:
            await pool.run("esp-new", 4 * MIB, lambda: True)
        assert full.value.status == 503
        release.set()
        assert all(await asyncio.wait_for(asyncio.gather(*small, *held), 10))
        assert await pool.run("esp-0", 4 * MIB, lambda: "checked") == "checked"
    finally:
        release.set()
        pool.close()


async def test_a_document_whose_request_is_gone_counts_until_its_thread_is_done() -> None:
    pool = DocumentPool(threads=1, per_esp=1)
    release = threading.Event()
    try:
        gone = asyncio.ensure_future(pool.run("esp", 4 * MIB, release.wait))
        await asyncio.sleep(0.05)  # in the thread now
        gone.cancel()  # the client went away; the thread still works on its document
        waiting = [asyncio.ensure_future(pool.run("esp", 4 * MIB, lambda: True))
                   for _ in range(MIB_PER_ESP // 4 - 1)]
        await asyncio.sleep(0)
        with pytest.raises(Busy):  # the gone one still counts
            await pool.run("esp", 4 * MIB, lambda: True)
        release.set()  # its thread done, the others get their turn
        assert await asyncio.wait_for(asyncio.gather(*waiting), 5) == [True] * len(waiting)
    finally:
        release.set()
        pool.close()
