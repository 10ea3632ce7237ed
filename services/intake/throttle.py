"""How many public forms intake takes: per client address, and from everyone together. Pure.

Token buckets: each address may send `per_address` forms and earns them back over `window_s`;
everyone together `overall` a minute. A refused form costs nothing but the check, so a flood from
one address is answered "try again later" at the door, before its body is read, while ESPs and
other people are served. Counts live in the process (each intake copy limits on its own) and at
most `addresses` addresses are remembered, the least recently seen forgotten first.
"""

import math
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class Bucket:
    tokens: float
    at: float  # when `tokens` was counted


@dataclass(frozen=True)
class Refused:
    retry_after_s: int
    everyone: bool  # the overall limit: nothing this address did


class Throttle:
    def __init__(self, per_address: int, window_s: float, overall_per_minute: int,
                 addresses: int = 100_000) -> None:
        self._per_address = per_address
        self._address_rate = per_address / window_s  # tokens a second
        self._overall = overall_per_minute
        self._overall_rate = overall_per_minute / 60.0
        self._addresses = addresses
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()
        self._everyone = Bucket(float(overall_per_minute), 0.0)

    def take(self, address: str, now: float) -> Refused | None:
        """One form from `address` at `now` (monotonic seconds): None when it may be sent,
        else how long to wait. A refused form takes nothing from either bucket."""
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = Bucket(float(self._per_address), now)
        self._buckets.move_to_end(address)
        while len(self._buckets) > self._addresses:
            self._buckets.popitem(last=False)
        _refill(bucket, now, self._per_address, self._address_rate)
        if bucket.tokens < 1:
            return Refused(_wait(bucket, self._address_rate), everyone=False)
        _refill(self._everyone, now, self._overall, self._overall_rate)
        if self._everyone.tokens < 1:
            return Refused(_wait(self._everyone, self._overall_rate), everyone=True)
        bucket.tokens -= 1
        self._everyone.tokens -= 1
        return None


def _refill(bucket: Bucket, now: float, capacity: int, rate: float) -> None:
    bucket.tokens = min(float(capacity), bucket.tokens + max(0.0, now - bucket.at) * rate)
    bucket.at = now


def _wait(bucket: Bucket, rate: float) -> int:
    """Whole seconds until the bucket holds one token again (at least one)."""
    return max(1, math.ceil((1 - bucket.tokens) / rate))
