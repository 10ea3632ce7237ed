"""Report ids: time-ordered 63-bit integers, never reused, even if Redis forgets everything.

The CyberTipline API's reportId is a long. An id is the milliseconds since 2026-01-01 (41 bits,
enough for 69 years), then this process's node number (10 bits, drawn at random at start) and a
sequence within the millisecond (12 bits). A Redis counter would start again at 1 after Redis lost
its data, and every id derived from a report id (event and notice ids) would then repeat: an
agency would drop a new report's referral as a duplicate. Time does not start again. Two intake
copies could draw the same node number: creating a report's draft refuses an id already taken
(`Drafts.create`), and the caller asks for the next one.
"""

import secrets
import time

EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
NODE_BITS, SEQUENCE_BITS = 10, 12
MAX_DIGITS = 19  # 2**63 - 1 has 19 digits


class ReportIds:
    def __init__(self, node: int | None = None) -> None:
        self.node = secrets.randbelow(1 << NODE_BITS) if node is None else node
        self._last = 0  # (milliseconds << SEQUENCE_BITS) | sequence of the last id

    def next(self, now_ms: int | None = None) -> str:
        ms = (time.time_ns() // 1_000_000 if now_ms is None else now_ms) - EPOCH_MS
        # Never below the last one: a clock stepped back, or 4096 ids in one millisecond,
        # borrow the next sequence number instead.
        self._last = max(ms << SEQUENCE_BITS, self._last + 1)
        ms, sequence = self._last >> SEQUENCE_BITS, self._last & ((1 << SEQUENCE_BITS) - 1)
        return str((ms << (NODE_BITS + SEQUENCE_BITS)) | (self.node << SEQUENCE_BITS) | sequence)


def is_report_id(text: str) -> bool:
    """Shaped like a report id (ASCII digits, a positive long); says nothing of existence."""
    return text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS and int(text) < 1 << 63
