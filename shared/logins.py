"""Password checks that an attacker can turn neither against the service that runs them nor
against the person whose name it guesses.

Key derivation (scrypt, PBKDF2) is slow on purpose, so every login check:
- runs in a thread, never on the event loop that also moves reports;
- waits for one of `concurrency` slots, and is refused at once ("busy": 503, with a Retry-After)
  when `queue` others are already waiting, so a flood of logins costs a bounded share of the
  machine;
- is made before anything else is asked: a right password is let in whatever failed before it,
  so guessing a name's password never locks its owner out (an anyone-can-lock-anyone-out
  limit, per name or per address, once did);
- when wrong, is counted against the (name, client address) pair, and once that pair has failed
  `failures` times within `window_s`, a further failure answers "slow down" (429 with a
  Retry-After) rather than "wrong password": the guesser, at its own address, is told, no one
  else. The client address is the connection's, or what a proxy of TIPLINE_FORWARDED_ALLOW_IPS
  says (shared/http.py), never a header the client chose;
- costs the same whether the name exists or not (the caller checks a decoy hash for an unknown
  name), so timing does not tell which names exist.
Failure counts live in the process: each copy of a service counts on its own.
"""

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from shared.settings import Settings


class LoginRefused(Exception):
    """The caller answers `status` with Retry-After: 429 after too many failures, 503 when busy
    (no check was made)."""

    def __init__(self, reason: str, retry_after_s: int, *, busy: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.status = 503 if busy else 429


@dataclass(frozen=True)
class Limits:
    concurrency: int = 2
    queue: int = 16
    failures: int = 10
    window_s: float = 60.0

    @classmethod
    def of(cls, settings: Settings) -> "Limits":
        return cls(concurrency=settings.tipline_login_concurrency,
                   failures=settings.tipline_login_failures)


class _Failures:
    """Recent failure times per key, for at most `keys` keys (the oldest forgotten first)."""

    def __init__(self, window_s: float, keys: int = 50_000) -> None:
        self._window_s, self._keys = window_s, keys
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._times.get(key, deque())
        while times and times[0] <= now - self._window_s:
            times.popleft()
        return times

    def add(self, key: str, now: float) -> int:
        """One more failure; how many there were within the window."""
        times = self._recent(key, now)
        times.append(now)
        self._times[key] = times
        self._times.move_to_end(key)
        while len(self._times) > self._keys:
            self._times.popitem(last=False)
        return len(times)

    def retry_after(self, key: str, now: float, allowed: int) -> int:
        """Seconds until this key is back within `allowed` failures."""
        times = self._recent(key, now)
        if len(times) <= allowed:
            return 0
        return max(1, int(times[-allowed - 1] + self._window_s - now) + 1)


class LoginGuard:
    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self._slots = asyncio.Semaphore(limits.concurrency)
        self._waiting = 0
        self._failures = _Failures(limits.window_s)
        self._running: dict[Hashable, asyncio.Future[bool]] = {}

    async def check(self, name: str, address: str, verify: Callable[[], bool],
                    same: Hashable | None = None) -> bool:
        """Run `verify` (a blocking password check): its answer, or LoginRefused (busy, or a
        failure past the pair's limit). Calls with the same `same` (a digest of the very
        credentials) while one runs share its answer: a client opening many connections at once
        costs one check."""
        if same is not None and (running := self._running.get(same)) is not None:
            ok = await asyncio.shield(running)
        else:
            if self._waiting >= self.limits.queue:
                raise LoginRefused("too many logins at once: try again shortly", 1, busy=True)
            task = asyncio.ensure_future(self._verify(verify))
            if same is not None:
                self._running[same] = task
            try:
                ok = await asyncio.shield(task)
            finally:
                if same is not None:
                    self._running.pop(same, None)
        if ok:
            return True
        pair, now = f"{name}\0{address}", time.monotonic()
        if self._failures.add(pair, now) > self.limits.failures:
            raise LoginRefused("too many failed logins: try again later",
                               self._failures.retry_after(pair, now, self.limits.failures))
        return False

    async def _verify(self, verify: Callable[[], bool]) -> bool:
        self._waiting += 1
        try:
            async with self._slots:
                return await asyncio.to_thread(verify)
        finally:
            self._waiting -= 1
