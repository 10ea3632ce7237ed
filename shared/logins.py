"""Password checks that an attacker cannot turn against the service that runs them.

Key derivation (scrypt, PBKDF2) is slow on purpose, so every login check:
- runs in a thread, never on the event loop that also moves reports;
- waits for one of `concurrency` slots, and is refused at once ("busy") when `queue` others are
  already waiting, so a flood of logins costs a bounded share of the machine;
- is refused without any work ("slow down", with a Retry-After) once a name or a client address
  has failed `per_name`/`per_address` times within `window_s`;
- costs the same whether the name exists or not (the caller checks a decoy hash for an unknown
  name), so timing does not tell which names exist.
Failure counts live in the process: each copy of a service limits on its own.
"""

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from shared.settings import Settings


class LoginRefused(Exception):
    """No check was made: the caller should answer 429 (or 503 when busy) with Retry-After."""

    def __init__(self, reason: str, retry_after_s: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Limits:
    concurrency: int = 2
    queue: int = 16
    per_name: int = 10
    per_address: int = 30
    window_s: float = 60.0

    @classmethod
    def of(cls, settings: Settings) -> "Limits":
        return cls(concurrency=settings.tipline_login_concurrency,
                   per_name=settings.tipline_login_failures_per_name,
                   per_address=settings.tipline_login_failures_per_address)


class _Failures:
    """Recent failure times per key, for at most `keys` keys (the oldest forgotten first)."""

    def __init__(self, limit: int, window_s: float, keys: int = 50_000) -> None:
        self._limit, self._window_s, self._keys = limit, window_s, keys
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._times.get(key, deque())
        while times and times[0] <= now - self._window_s:
            times.popleft()
        return times

    def retry_after(self, key: str, now: float) -> int:
        """Seconds until this key may try again; 0 when it may now."""
        times = self._recent(key, now)
        if len(times) < self._limit:
            return 0
        return max(1, int(times[0] + self._window_s - now) + 1)

    def add(self, key: str, now: float) -> None:
        times = self._recent(key, now)
        times.append(now)
        self._times[key] = times
        self._times.move_to_end(key)
        while len(self._times) > self._keys:
            self._times.popitem(last=False)


class LoginGuard:
    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self._slots = asyncio.Semaphore(limits.concurrency)
        self._waiting = 0
        self._by_name = _Failures(limits.per_name, limits.window_s)
        self._by_address = _Failures(limits.per_address, limits.window_s)
        self._running: dict[Hashable, asyncio.Future[bool]] = {}

    async def check(self, name: str, address: str, verify: Callable[[], bool],
                    same: Hashable | None = None) -> bool:
        """Run `verify` (a blocking password check) under the limits; its answer, or
        LoginRefused without running it. Calls with the same `same` (a digest of the very
        credentials) while one runs share its answer: a client opening many connections at once
        costs one check."""
        if same is not None and (running := self._running.get(same)) is not None:
            return await asyncio.shield(running)
        now = time.monotonic()
        wait = max(self._by_name.retry_after(name, now), self._by_address.retry_after(address, now))
        if wait:
            raise LoginRefused("too many failed logins: try again later", wait)
        if self._waiting >= self.limits.queue:
            raise LoginRefused("too many logins at once: try again shortly", 1)
        task = asyncio.ensure_future(self._verify(verify))
        if same is not None:
            self._running[same] = task
        try:
            ok = await asyncio.shield(task)
        finally:
            if same is not None:
                self._running.pop(same, None)
        if not ok:
            now = time.monotonic()
            self._by_name.add(name, now)
            self._by_address.add(address, now)
        return ok

    async def _verify(self, verify: Callable[[], bool]) -> bool:
        self._waiting += 1
        try:
            async with self._slots:
                return await asyncio.to_thread(verify)
        finally:
            self._waiting -= 1
