"""What the console tells Prometheus, per agency, so people are told without staring at a page.

Read from the store at each scrape (a few index counts), once the console has caught up with the
topics (a store being rebuilt would say too little). Every copy of the console exports the same
figures: the alert rules (deploy/prometheus/alerts.yaml) take the `max` over copies.
"""

from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.console.queries import Queries

BEHIND = Gauge("tipline_console_records_behind",
               "Records on the topics the console has not read yet (its own lag)")

# name, type, help: the per-agency figures (queries.Queries.alerts gives their values).
PER_AGENCY = (
    ("tipline_console_corrections_overdue", "gauge",
     "Corrections sent to the agency and unacknowledged after TIPLINE_ACK_TIMEOUT_S"),
    ("tipline_console_corrections_pending", "gauge",
     "Corrections sent to the agency and not acknowledged yet"),
    ("tipline_console_corrections_escalated", "gauge",
     "Corrections escalated (every re-send unacknowledged) and still unacknowledged"),
    ("tipline_console_referrals_unacknowledged", "gauge",
     "Referrals sent to the agency and unacknowledged after TIPLINE_ACK_TIMEOUT_S"),
    ("tipline_console_acks_refused", "counter",
     "Responses of the agency refused by the retraction service (dead-lettered, with a cause)"),
    ("tipline_console_acks_refused_since_last_ack", "gauge",
     "Responses of the agency refused since the last one accepted: its acks do not count"),
)
_FIELD = {"tipline_console_corrections_overdue": "overdue",
          "tipline_console_corrections_pending": "pending",
          "tipline_console_corrections_escalated": "escalated",
          "tipline_console_referrals_unacknowledged": "unacknowledged",
          "tipline_console_acks_refused": "refused",
          "tipline_console_acks_refused_since_last_ack": "refusing"}


class PerAgency(Collector):
    """The figures of every agency the store or the registry knows, at each scrape."""

    def __init__(self) -> None:
        # The store's read side and the agencies the registry knows; None until caught up.
        self.source: Callable[[], tuple[Queries, set[str]] | None] | None = None

    def collect(self) -> Iterator[Metric]:
        found = self.source() if self.source is not None else None
        if found is None:
            return
        queries, known = found
        figures = queries.alerts()
        for name, kind, text in PER_AGENCY:
            family: GaugeMetricFamily | CounterMetricFamily = (
                CounterMetricFamily(name, text, labels=["agency"]) if kind == "counter"
                else GaugeMetricFamily(name, text, labels=["agency"]))
            for agency in sorted(known | set(figures)):
                family.add_metric([agency], figures.get(agency, {}).get(_FIELD[name], 0))
            yield family


PER_AGENCY_COLLECTOR = PerAgency()
REGISTRY.register(PER_AGENCY_COLLECTOR)


def metric_names() -> set[str]:
    """Every series name the console exports (the alert rules and the dashboard use these)."""
    names = {f"{name}_total" if kind == "counter" else name for name, kind, _ in PER_AGENCY}
    return names | {"tipline_console_records_behind"}
