"""The time, for code that waits on it (leases, deadlines, files looked at once a second): passed
in, so a test moves it on instead of sleeping. Real by default."""

from collections.abc import Callable

# Seconds: `time.time` where the moment is kept (in Redis, in a record), `time.monotonic` where
# only the time between two readings in one process counts.
Clock = Callable[[], float]
