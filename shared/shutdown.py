"""A deadline on stopping: a service that has not stopped cleanly in time exits anyway.

FastStream stops gracefully on SIGTERM, but a signal that lands while the app is still starting
(consumers joining their groups) can leave it waiting forever; uvicorn (intake) waits for its
app's shutdown without any limit. At-least-once delivery makes a hard exit safe: offsets are
committed only after a handler's effects are durable, and what intake accepted is in its outbox,
so anything in hand is redelivered or re-sent. Kubernetes does the same with SIGKILL after
terminationGracePeriodSeconds. Before exiting, the process logs where each of its tasks waits,
so the hang can be found.
"""

import asyncio
import logging
import os
import threading
from types import FrameType
from typing import Any

import uvicorn
from faststream import FastStream

log = logging.getLogger("tipline.shutdown")
EXIT_DEADLINE_PASSED = 70


def exit_within(app: FastStream, seconds: float) -> None:
    """After the app is asked to stop, give it `seconds`, then end the process."""
    ask_to_stop = app.exit

    def stop() -> None:
        ask_to_stop()
        start_deadline(seconds)

    app.exit = stop  # type: ignore[method-assign]  # FastStream's signal handler calls app.exit()


async def cancel(*tasks: "asyncio.Task[Any]", again_after_s: float = 1.0) -> None:
    """Cancel `tasks` and wait until they have ended, cancelling again every second: in Python
    3.11 a cancellation that lands as a `wait_for` or timeout runs out can be swallowed
    (gh-86296), and a loop that retries after a TimeoutError then runs on forever. Seen as a
    service whose shutdown hook never returned."""
    for task in tasks:
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=again_after_s)
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s ended with %r", task.get_name(), task.exception())


class Server(uvicorn.Server):
    """uvicorn's server with the same deadline once a signal asks it to stop."""

    def __init__(self, config: uvicorn.Config, exit_within: float) -> None:
        super().__init__(config)
        self.exit_within = exit_within

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        start_deadline(self.exit_within)


_started = threading.Event()


def start_deadline(seconds: float) -> None:
    """Once a process: end it `seconds` from now unless it has stopped by then. Called where
    the signal is handled, on the event loop's thread."""
    if _started.is_set():
        return
    _started.set()
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    timer = threading.Timer(seconds, _hard_exit, args=(seconds, loop))
    timer.daemon = True  # never keeps a cleanly stopped process alive
    timer.start()


def _hard_exit(seconds: float, loop: asyncio.AbstractEventLoop | None) -> None:
    log.error("did not stop within %.0f s of being asked; exiting now. Still waiting:\n%s",
              seconds, waiting(loop))
    logging.shutdown()
    os._exit(EXIT_DEADLINE_PASSED)


def waiting(loop: asyncio.AbstractEventLoop | None) -> str:
    """Each unfinished task of `loop` and the chain of calls it waits in (read from the timer's
    thread: the loop is stuck or slow, and a snapshot slightly off still shows the hang)."""
    if loop is None:
        return "(no event loop)"
    try:
        tasks = list(asyncio.all_tasks(loop))
    except RuntimeError as exc:  # the loop changed its tasks while we read them
        return f"(tasks unreadable: {exc})"
    return "\n".join(f"{task.get_name()}: {' > '.join(awaiting(task.get_coro()))}"
                     for task in tasks)


def awaiting(coro: Any) -> list[str]:
    """`function (file:line)` of each coroutine in the chain, outermost first."""
    chain: list[str] = []
    while (frame := _frame(coro)) is not None and len(chain) < 40:
        code = frame.f_code
        chain.append(f"{code.co_name} ({code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno})")
        inner = (getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
                 or getattr(coro, "ag_await", None))
        if inner is not None and _frame(inner) is None:
            # A step of an async generator (contextlib's __aexit__ awaiting a lifespan) shows
            # no frame: the running generator among the caller's locals is the next link.
            inner = next((gen for value in frame.f_locals.values()
                          if getattr(gen := getattr(value, "gen", value), "ag_running", False)),
                         inner)
        coro = inner
    return chain


def _frame(coro: Any) -> FrameType | None:
    return (getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            or getattr(coro, "ag_frame", None))
