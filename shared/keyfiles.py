"""Key files, watched: re-read when they change on disk (a rotation needs no restart), and written
whole (a reader sees the old file or the new one). Apart from shared/signing.py, so a service
that only seals (shared/seals.py) does not load the signing library (~9 MB a process)."""

import json
import os
import time
from pathlib import Path
from typing import Any

from shared.clock import Clock


class Watched:
    """A JSON file re-read when its modification time or size changes, looked at no more than
    once every `recheck_s` (every record is sealed or checked, and a stat each would cost CPU),
    so a rotated key is in use within a second."""

    def __init__(self, path: Path, recheck_s: float = 1.0,
                 clock: Clock = time.monotonic) -> None:
        self.path = path
        self.recheck_s = recheck_s
        self.clock = clock
        self._stamp: tuple[int, int] | None = None
        self._next = 0.0
        self.data: dict[str, Any] = {}

    def fresh(self) -> dict[str, Any]:
        now = self.clock()
        if now < self._next:
            return self.data
        self._next = now + self.recheck_s
        st = self.path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self.data = json.loads(self.path.read_text())
            self._stamp = stamp
        return self.data


def write_json(path: Path, data: dict[str, Any], mode: int) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
    os.replace(tmp, path)  # readers see the old file or the new one, never half
