"""The Prometheus metrics every service exports, declared once.

Each process is one service, but tests run several in one process: every metric carries the
service's name as a label so their numbers never mix.
"""

from prometheus_client import Counter, Gauge, Histogram

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
