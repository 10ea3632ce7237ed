"""Parsing and schema checks of /ispws documents: CPU work, off the event loop and apart.

Threads of their own, a few: six 2 MiB invalid documents once held the threads every blocking
call of intake shares (password checks among them) for minutes, and another ESP's first login
waited 345 s. At most `per_esp` documents of one ESP at once (429 past them) and a short queue
in all (503 past it), each with Retry-After: a flood is refused at once, never left to hang.
"""

import asyncio
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
QUEUE_PER_THREAD = 4  # documents waiting for a thread, beyond those running


class Busy(Exception):
    """Not taken now: the caller answers `status` with Retry-After."""

    def __init__(self, reason: str, status: int, retry_after_s: int = 1) -> None:
        super().__init__(reason)
        self.reason, self.status, self.retry_after_s = reason, status, retry_after_s


class DocumentPool:
    def __init__(self, threads: int, per_esp: int) -> None:
        self.per_esp = per_esp
        self.capacity = threads * (1 + QUEUE_PER_THREAD)
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="documents")
        self._of_esp: Counter[str] = Counter()

    async def run(self, esp_id: str, work: Callable[[], T]) -> T:
        """`work()` in one of the pool's threads, or Busy without running it."""
        if self._of_esp[esp_id] >= self.per_esp:
            raise Busy(f"{self.per_esp} documents of this ESP are being checked: send the "
                       "next when one is answered", 429)
        if self._of_esp.total() >= self.capacity:
            raise Busy("too many documents are being checked: try again shortly", 503)
        self._of_esp[esp_id] += 1
        done = asyncio.get_running_loop().run_in_executor(self._threads, work)
        # Counted until the thread is done, even if the request is gone before.
        done.add_done_callback(lambda _: self._release(esp_id))
        return await asyncio.shield(done)

    def _release(self, esp_id: str) -> None:
        self._of_esp[esp_id] -= 1
        if not self._of_esp[esp_id]:
            del self._of_esp[esp_id]

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
