"""Apache Kafka for the tests, as `tipline up --kafka apache` runs it (tipline/kafkacluster.py):
SASL_SSL with SCRAM-SHA-512, a CA of its own, the StandardAuthorizer, every principal's SCRAM
login and ACLs from tipline/access.py's plan, and tipline's topics made.

- `apache`: one node for the whole session (a broker start costs seconds and ~300 MB);
- `apache_cluster`: three nodes (replication factor 3, min.insync.replicas 2), for broker
  failures: kill -9 a node, restart it, ask which node leads a partition; one for each module
  that asks.

Where Java or the broker's jars are missing the tests skip saying so (`make kafka` fetches the
jars), except under CI (CI=true, as .ci/run runs): there they fail.
"""

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr

from shared.settings import Settings
from tipline import kafkacluster, kafkajars
from tipline.access import ADMIN
from tipline.credentials import PASSWORDS_FILE
from tipline.kafkacluster import Cluster, start_apache
from tipline.stack import SECRETS_DIR, Stack, create_topics, wait_for_port


@dataclass
class ApacheKafka:
    stack: Stack  # its nodes are this stack's children (`kafka-1`...)
    cluster: Cluster

    @property
    def bootstrap(self) -> str:
        return self.cluster.bootstrap

    @property
    def passwords(self) -> dict[str, str]:
        """Every Kafka principal's password: the admin, each service, each agency."""
        import json

        kept = json.loads((self.stack.workdir / SECRETS_DIR / PASSWORDS_FILE).read_text())
        return dict(kept["kafka"])

    def admin(self, **overrides: Any) -> Settings:
        """Settings of the admin (a super user): topics, tools."""
        return self.stack.settings(**overrides)

    def settings_for(self, principal: str, **overrides: Any) -> Settings:
        """Settings of one principal (a service, `agency-<id>`), logged in as itself."""
        return self.stack.settings(**{
            "kafka_sasl_username": principal,
            "kafka_sasl_password": SecretStr(self.passwords[principal]), **overrides})

    def config_for(self, principal: str) -> dict[str, str | int | float | bool]:
        """librdkafka's settings of one principal (confluent-kafka clients)."""
        return self.cluster.client_config(principal, self.passwords[principal])

    def kill(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        """kill -9 one node (or stop it with `sig`: SIGTERM, a controlled shutdown)."""
        kafkacluster.kill(self.stack, node_id, sig)

    def restart(self, node_id: int, timeout: float = 60.0) -> None:
        """Start a killed node again (its ports and data), until it listens."""
        kafkacluster.spawn_node(self.stack, self.cluster, node_id)
        wait_for_port("127.0.0.1", self.cluster.node(node_id).client, timeout=timeout)

    def leader(self, topic: str, partition: int = 0) -> int:
        """The id of the node leading this partition now."""
        return self.leaders([topic])[(topic, partition)]

    def leaders(self, topics: list[str]) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the id of the node leading it now."""
        return kafkacluster.leaders(self.cluster, self.passwords[ADMIN], topics)

    def under_replicated(self) -> list[tuple[str, int]]:
        """Every (topic, partition) with a replica out of sync now."""
        return kafkacluster.under_replicated(self.cluster, self.passwords[ADMIN])


def require_apache_kafka() -> None:
    """Skip, saying why, where Java or the jars are missing; fail instead under CI."""
    reason = kafkajars.missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs the Apache Kafka tests: {reason}")
        pytest.skip(reason)


def start_or_skip(stack: Stack, brokers: int) -> ApacheKafka:
    require_apache_kafka()
    cluster, _ = start_apache(stack, brokers)
    create_topics(stack)
    return ApacheKafka(stack, cluster)


def _running(tmp_path_factory: pytest.TempPathFactory, name: str,
             brokers: int) -> Iterator[ApacheKafka]:
    stack = Stack(kafka="", redis="", http="", workdir=tmp_path_factory.mktemp(name))
    try:
        yield start_or_skip(stack, brokers)
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def apache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    """One Apache Kafka node for the session, secured as `tipline up --kafka apache` runs it."""
    yield from _running(tmp_path_factory, "apache", 1)


@pytest.fixture(scope="module")
def apache_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    """Three Apache Kafka nodes (replication factor 3, min.insync.replicas 2), for the tests of
    one module: three JVMs (over 1 GB, a fifth of a core idle) are not kept for the rest of the
    session on a small machine."""
    yield from _running(tmp_path_factory, "apache-cluster", 3)
