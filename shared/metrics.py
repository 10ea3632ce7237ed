"""The Prometheus metrics every service exports, declared once.

Each process is one service, but tests run several in one process: every metric carries the
service's name as a label so their numbers never mix.
"""

import bisect
import gc
import itertools
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

EVENTS_IN = Counter(
    "tipline_events_in", "Messages a service consumed (each delivery, redeliveries too)",
    ["service", "topic"],
)
EVENTS_OUT = Counter(
    "tipline_events_out", "Messages a service published and the broker acknowledged",
    ["service", "topic"],
)
ERRORS = Counter(
    "tipline_handler_errors",
    "Handler failures: kind=poison (dead-lettered) or transient (retried without committing)",
    ["service", "topic", "kind"],
)
DEAD_LETTERS = Counter(
    "tipline_dead_letters", "Messages sent to the dead-letter topic, by the topic they came from",
    ["service", "topic"],
)
REFUSED = Counter(
    "tipline_records_refused",
    "Records a reader would not show (no valid seal or signature): logged and counted; the "
    "console writes no dead letters",
    ["service", "topic"],
)
HANDLER_SECONDS = Histogram(
    "tipline_handler_seconds", "Time a handler took with a message, whatever the outcome",
    ["service", "topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CONSUMER_LAG = Gauge(
    "tipline_consumer_lag",
    "Messages not yet committed by a consumer group: high-water mark minus committed offset",
    ["service", "group", "topic", "partition"],
)
RESTING = Gauge(
    "tipline_resting",
    "1 while a consumer rests: nothing came for KAFKA_REST_AFTER_S, so its partitions are "
    "paused and resumed for one fetch every KAFKA_REST_MS; 0 while it fetches",
    ["service", "group"],
)
CORRECTIONS_PENDING = Gauge(
    "tipline_corrections_pending_ack",
    "Correction notices delivered to agencies and not yet acknowledged by them",
    ["service"],
)


def corrections_pending(service: str, count: int) -> None:
    """Set by whoever tracks agency acknowledgements (the retraction service)."""
    CORRECTIONS_PENDING.labels(service).set(count)

HTTP_REQUESTS = Counter(
    "tipline_http_requests", "HTTP requests answered, by route template and status",
    ["service", "method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "tipline_http_request_seconds", "Time to answer an HTTP request, by route template",
    ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
GC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class GarbageCollection(Collector):
    """`tipline_gc_pause_seconds`: how long the process stood still in Python's garbage
    collector, by generation collected (a pause delays whatever is in hand). Counted in plain
    lists inside the collector's callback: a metric's lock there could be one the interrupted
    code already holds (prometheus_client's locks are not re-entrant)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.counts = [[0] * (len(GC_BUCKETS) + 1) for _ in range(3)]
        self.sums = [0.0] * 3
        self.started = 0.0

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        took = time.perf_counter() - self.started
        self.counts[info["generation"]][bisect.bisect_left(GC_BUCKETS, took)] += 1
        self.sums[info["generation"]] += took

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "tipline_gc_pause_seconds",
            "Time the process stood still in Python's garbage collector, by generation",
            labels=["service", "generation"])
        for generation, counts in enumerate(self.counts):
            upto = list(itertools.accumulate(counts))
            family.add_metric(
                [self.service, str(generation)],
                [*((floatToGoString(b), n) for b, n in zip(GC_BUCKETS, upto, strict=False)),
                 ("+Inf", upto[-1])],
                self.sums[generation])
        yield family


_timed: list[GarbageCollection] = []


def time_garbage_collection(service: str) -> None:
    """Export this process's collection pauses (once a process)."""
    if not _timed:
        _timed.append(GarbageCollection(service))
        REGISTRY.register(_timed[0])
        gc.callbacks.append(_timed[0].on_gc)
