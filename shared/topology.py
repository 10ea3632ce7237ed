"""Which topics exist and how long Kafka keeps them: pure, so deploy files are generated from it.

Preservation: every tipline topic carries facts (reports, commands, notices, acknowledgements,
dead letters), and facts are never deleted, so every topic keeps its records at least a year and a
day, never bounded by size. A topic that only ever holds the latest state of a key may be
compacted instead; none of today's topics is one (report state lives in Redis, whose AOF is its
durability). Kafka's own __consumer_offsets is compacted by Kafka itself.
"""

from collections.abc import Iterable
from datetime import timedelta

from shared.topics import PIPELINE_TOPICS, agency_of_topic, agency_topic

PRESERVE = timedelta(days=366)
# Topics that hold only the latest value per key (safe to compact). Empty on purpose: see above.
COMPACTED: frozenset[str] = frozenset()


def topic_config(name: str, replication: int) -> dict[str, str]:
    if name in COMPACTED:
        config = {"cleanup.policy": "compact", "min.compaction.lag.ms": str(_ms(timedelta(days=7)))}
    else:
        config = {"cleanup.policy": "delete", "retention.ms": str(_ms(PRESERVE)),
                  "retention.bytes": "-1"}
    if replication >= 3:
        # An acknowledged write (acks=all) is on two brokers at least.
        config["min.insync.replicas"] = "2"
    return config


def partitions_of(name: str, partitions: int, agency_partitions: int) -> int:
    """An agency's notice topic gets `agency_partitions`; every other topic `partitions`."""
    return agency_partitions if agency_of_topic(name) else partitions


def topic_names(agency_ids: Iterable[str]) -> list[str]:
    """Every topic tipline needs: the pipeline's and one notice topic per agency."""
    return list(dict.fromkeys([*PIPELINE_TOPICS, *(agency_topic(a) for a in sorted(agency_ids))]))


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)
