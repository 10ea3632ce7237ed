"""Parsing and schema checks of /ispws documents: CPU work, off the event loop and apart.

Threads of their own, a few: six 2 MiB invalid documents once held the threads every blocking
call of intake shares (password checks among them) for minutes, and another ESP's first login
waited 345 s. One ESP's documents take `per_esp` threads at most, the rest of its documents
waiting their turn, so one ESP cannot hold every thread. What waits is counted in bytes (the
work a document costs, and the memory it holds, grow with its size): past MIB_PER_ESP of one
ESP's documents (429) or MIB_IN_ALL of everyone's (503), a document is refused at once with
Retry-After. Small documents queue freely; a flood is told to wait, never left to hang.
"""

import asyncio
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
MIB_PER_ESP = 16  # one ESP's documents being checked or waiting their turn (4 of the largest)
MIB_IN_ALL = 64


class Busy(Exception):
    """Not taken now: the caller answers `status` with Retry-After."""

    def __init__(self, reason: str, status: int, retry_after_s: int = 1) -> None:
        super().__init__(reason)
        self.reason, self.status, self.retry_after_s = reason, status, retry_after_s


class DocumentPool:
    def __init__(self, threads: int, per_esp: int) -> None:
        self.per_esp = per_esp
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="documents")
        self._bytes: Counter[str] = Counter()  # in hand, by ESP
        self._turns: dict[str, asyncio.Semaphore] = {}

    async def run(self, esp_id: str, size: int, work: Callable[[], T]) -> T:
        """`work()` (a document of `size` bytes) in one of the pool's threads, once this ESP's
        turn comes; or Busy at once."""
        size = max(size, 1)  # an empty one is in hand too
        if self._bytes[esp_id] + size > MIB_PER_ESP * 2**20:
            raise Busy(f"this ESP's documents being checked pass {MIB_PER_ESP} MiB: send the "
                       "next when one is answered", 429)
        if self._bytes.total() + size > MIB_IN_ALL * 2**20:
            raise Busy("too many documents are being checked: try again shortly", 503)
        self._bytes[esp_id] += size
        turn = self._turns.setdefault(esp_id, asyncio.Semaphore(self.per_esp))
        try:
            await turn.acquire()
        except BaseException:  # the request went away while waiting
            self._release(esp_id, size)
            raise
        done = asyncio.get_running_loop().run_in_executor(self._threads, work)

        def finished(_: object) -> None:  # counted until the thread is done, request or not
            turn.release()
            self._release(esp_id, size)

        done.add_done_callback(finished)
        return await asyncio.shield(done)

    def _release(self, esp_id: str, size: int) -> None:
        self._bytes[esp_id] -= size
        if not self._bytes[esp_id]:
            del self._bytes[esp_id]
            del self._turns[esp_id]

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
