"""Topics and their retention: every fact is kept at least a year."""

from datetime import timedelta

from shared.topics import PIPELINE_TOPICS
from shared.topology import COMPACTED, partitions_of, topic_config, topic_names

YEAR_MS = int(timedelta(days=365).total_seconds() * 1000)


def test_every_topic_keeps_its_records_at_least_a_year() -> None:
    names = topic_names(["icac-tx", "uk-nca"])
    assert names[: len(PIPELINE_TOPICS)] == list(PIPELINE_TOPICS)
    assert names[-2:] == ["tipline.agency.icac-tx", "tipline.agency.uk-nca"]
    for name in names:
        # An agency's notice topic is its own feed; the acks topic all agencies write is not.
        agency = name.startswith("tipline.agency.") and name != "tipline.agency.acks"
        assert partitions_of(name, 12, 2) == (2 if agency else 12)
        config = topic_config(name, replication=3)
        if name in COMPACTED:
            assert config["cleanup.policy"] == "compact"
        else:
            assert config["cleanup.policy"] == "delete"
            assert int(config["retention.ms"]) >= YEAR_MS
            assert config["retention.bytes"] == "-1"  # never cut by size
        assert config["min.insync.replicas"] == "2"


def test_compacted_topics_are_real_topics() -> None:
    assert set(COMPACTED) <= set(PIPELINE_TOPICS)


def test_a_single_broker_asks_for_no_in_sync_minimum() -> None:
    assert "min.insync.replicas" not in topic_config("tipline.reports.submitted", 1)
