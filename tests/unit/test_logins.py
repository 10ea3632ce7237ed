"""The login guard: checks off the event loop, bounded, and failures rate-limited."""

import asyncio
import threading
import time

import pytest

from shared.logins import Limits, LoginGuard, LoginRefused


async def test_checks_run_off_the_event_loop_a_few_at_a_time() -> None:
    guard = LoginGuard(Limits(concurrency=2, queue=10))
    loop_thread, running, most = threading.get_ident(), [0], [0]
    lock = threading.Lock()

    def slow_check() -> bool:
        assert threading.get_ident() != loop_thread
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return True

    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    beat = asyncio.create_task(heartbeat())
    results = await asyncio.gather(*(guard.check(f"u{i}", "a", slow_check) for i in range(6)))
    beat.cancel()
    assert results == [True] * 6 and most[0] == 2
    assert ticks > 20  # the loop went on while the checks ran


async def test_failures_are_limited_per_name_and_per_address() -> None:
    guard = LoginGuard(Limits(per_name=3, per_address=5, window_s=60))
    calls = 0

    def wrong() -> bool:
        nonlocal calls
        calls += 1
        return False

    for _ in range(3):
        assert not await guard.check("alice", "10.0.0.1", wrong)
    with pytest.raises(LoginRefused) as refused:
        await guard.check("alice", "10.0.0.2", wrong)  # another address, the same name
    assert refused.value.retry_after_s > 0 and calls == 3  # refused without any work
    for name in ("bob", "carol"):
        assert not await guard.check(name, "10.0.0.1", wrong)
    with pytest.raises(LoginRefused):
        await guard.check("dave", "10.0.0.1", wrong)  # the address failed five times
    assert await guard.check("dave", "10.0.0.3", lambda: True)


async def test_a_flood_beyond_the_queue_is_refused_at_once() -> None:
    guard = LoginGuard(Limits(concurrency=1, queue=2))
    release = threading.Event()

    def blocked() -> bool:
        release.wait(5)
        return True

    first = [asyncio.create_task(guard.check(f"u{i}", f"a{i}", blocked)) for i in range(2)]
    await asyncio.sleep(0.05)
    with pytest.raises(LoginRefused, match="at once"):
        await guard.check("u9", "a9", blocked)
    release.set()
    assert await asyncio.gather(*first) == [True, True]


async def test_one_client_logging_in_on_many_connections_at_once_costs_one_check() -> None:
    guard = LoginGuard(Limits(concurrency=1, queue=2))
    calls = 0

    def check() -> bool:
        nonlocal calls
        calls += 1
        time.sleep(0.05)
        return True

    answers = await asyncio.gather(*(guard.check("esp", "a", check, same=b"digest")
                                     for _ in range(50)))
    assert answers == [True] * 50 and calls == 1  # none refused as "too many at once"
