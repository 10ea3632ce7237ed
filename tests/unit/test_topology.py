"""Topics and their retention: every fact is kept at least a year."""

from datetime import timedelta

from shared.topics import PIPELINE_TOPICS
from shared.topology import COMPACTED, topic_config, topic_specs

YEAR_MS = int(timedelta(days=365).total_seconds() * 1000)


def test_every_topic_keeps_its_records_at_least_a_year() -> None:
    specs = topic_specs(["icac-tx", "uk-nca"], partitions=12, replication=3, agency_partitions=2)
    names = [s.name for s in specs]
    assert names[: len(PIPELINE_TOPICS)] == list(PIPELINE_TOPICS)
    assert names[-2:] == ["tipline.agency.icac-tx", "tipline.agency.uk-nca"]
    for spec in specs:
        # An agency's notice topic is its own feed; the acks topic all agencies write is not.
        agency = spec.name.startswith("tipline.agency.") and spec.name != "tipline.agency.acks"
        assert spec.partitions == (2 if agency else 12) and spec.replication == 3
        if spec.name in COMPACTED:
            assert spec.config["cleanup.policy"] == "compact"
        else:
            assert spec.config["cleanup.policy"] == "delete"
            assert int(spec.config["retention.ms"]) >= YEAR_MS
            assert spec.config["retention.bytes"] == "-1"  # never cut by size
        assert spec.config["min.insync.replicas"] == "2"


def test_compacted_topics_are_real_topics() -> None:
    assert set(COMPACTED) <= set(PIPELINE_TOPICS)


def test_a_single_broker_asks_for_no_in_sync_minimum() -> None:
    assert "min.insync.replicas" not in topic_config("tipline.reports.submitted", 1)
