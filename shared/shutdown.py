"""A deadline on stopping: a service that has not stopped cleanly in time exits anyway.

FastStream stops gracefully on SIGTERM, but a signal that lands while the app is still starting
(consumers joining their groups) can leave it waiting forever. At-least-once delivery makes a hard
exit safe: offsets are committed only after a handler's effects are durable, so anything in hand
is redelivered. Kubernetes does the same with SIGKILL after terminationGracePeriodSeconds.
"""

import logging
import os
import threading

from faststream import FastStream

log = logging.getLogger("tipline.shutdown")
EXIT_DEADLINE_PASSED = 70


def exit_within(app: FastStream, seconds: float) -> None:
    """After the app is asked to stop, give it `seconds`, then end the process."""
    ask_to_stop = app.exit

    def stop() -> None:
        ask_to_stop()
        timer = threading.Timer(seconds, _hard_exit, args=(seconds,))
        timer.daemon = True  # never keeps a cleanly stopped process alive
        timer.start()

    app.exit = stop  # type: ignore[method-assign]  # FastStream's signal handler calls app.exit()


def _hard_exit(seconds: float) -> None:
    log.error("did not stop within %.0f s of being asked; exiting now", seconds)
    logging.shutdown()
    os._exit(EXIT_DEADLINE_PASSED)
