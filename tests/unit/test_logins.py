"""The login guard: checks off the event loop, bounded, a right password always let in, and
failures slowed per name and address."""

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

    beats_during_checks = 0

    async def heartbeat() -> None:
        nonlocal beats_during_checks
        while True:
            beats_during_checks += running[0] > 0
            await asyncio.sleep(0.005)

    beat = asyncio.create_task(heartbeat())
    results = await asyncio.gather(*(guard.check(f"u{i}", "a", slow_check) for i in range(6)))
    beat.cancel()
    assert results == [True] * 6 and most[0] == 2
    assert beats_during_checks > 0  # the loop went on while a check ran


async def test_a_right_password_gets_in_whatever_failed_before_it() -> None:
    """Eleven wrong guesses at alice's password, from her own address too: each is checked,
    the eleventh is told to slow down, and alice's right password still gets in."""
    guard = LoginGuard(Limits(failures=10, window_s=60))
    calls = 0

    def wrong() -> bool:
        nonlocal calls
        calls += 1
        return False

    for _ in range(10):
        assert not await guard.check("alice", "10.0.0.1", wrong)
    with pytest.raises(LoginRefused) as slow_down:
        await guard.check("alice", "10.0.0.1", wrong)
    assert (slow_down.value.status, calls) == (429, 11)  # checked first, then refused
    assert 0 < slow_down.value.retry_after_s <= 61
    assert await guard.check("alice", "10.0.0.1", lambda: True)
    # Failures count per name and address: another address, or another name, is not slowed.
    assert not await guard.check("alice", "10.0.0.2", wrong)
    assert not await guard.check("bob", "10.0.0.1", wrong)


async def test_a_flood_beyond_the_queue_is_refused_at_once() -> None:
    guard = LoginGuard(Limits(concurrency=1, queue=2))
    release = threading.Event()

    def blocked() -> bool:
        release.wait(5)
        return True

    first = [asyncio.create_task(guard.check(f"u{i}", f"a{i}", blocked)) for i in range(2)]
    await asyncio.sleep(0.05)
    with pytest.raises(LoginRefused, match="at once") as busy:
        await guard.check("u9", "a9", blocked)
    assert busy.value.status == 503  # busy: nothing checked, try again
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
