"""The whole system on Apache Kafka (KRaft) and Redis in containers, where a Docker engine runs.

Skipped, with the reason, where none does (these machines have the docker client, no engine).
The services run as local processes against the containers, as the embedded stack runs them.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.intake.esps import EspRegistry
from shared.settings import Settings
from shared.store import connect
from shared.topics import REPORTS_SUBMITTED
from tipline.provision import provision
from tipline.stack import Stack, free_port, services_on

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

KAFKA_IMAGE = "apache/kafka:3.9.1"
REDIS_IMAGE = "redis:7.4-alpine"
YEAR_MS = 365 * 24 * 3600 * 1000


def no_engine() -> str | None:
    """Why containers cannot run here, or None when they can."""
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception as exc:
        return (f"no Docker engine answers ({type(exc).__name__}); this test runs Apache Kafka "
                "and Redis in containers where Docker runs")
    return None


@pytest.fixture(scope="module")
def containers() -> Iterator[tuple[str, str]]:
    if reason := no_engine():
        pytest.skip(reason)
    from testcontainers.core.container import DockerContainer

    kafka_port, redis_port = free_port(), free_port()
    kafka = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(9092, kafka_port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{kafka_port}")
        .with_env("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                  "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    )
    redis = DockerContainer(REDIS_IMAGE).with_bind_ports(6379, redis_port)
    with kafka, redis:
        yield f"127.0.0.1:{kafka_port}", f"redis://127.0.0.1:{redis_port}/0"


@pytest.fixture(scope="module")
def on_kafka(
    containers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    kafka, redis = containers
    workdir = tmp_path_factory.mktemp("on-kafka")
    with pytest.MonkeyPatch.context() as env:
        # Real Kafka's sessions: seconds, not the embedded broker's one.
        env.setenv("KAFKA_SESSION_TIMEOUT_MS", "6000")
        env.setenv("KAFKA_HEARTBEAT_INTERVAL_MS", "500")
        env.setenv("TIPLINE_WORKDIR", str(workdir))
        settings = Settings(kafka_bootstrap_servers=kafka, redis_url=redis)
        asyncio.run(provision(settings, attempts=60, pause_s=1.0))  # the broker takes seconds
        with services_on(kafka, redis, workdir) as stack:
            yield stack


@pytest.fixture
async def http(on_kafka: Stack) -> AsyncIterator[httpx.AsyncClient]:
    redis = connect(Settings(redis_url=on_kafka.redis))
    login = ("esp-containers", await EspRegistry(redis).add("esp-containers"))
    await redis.aclose()
    async with httpx.AsyncClient(base_url=on_kafka.http, timeout=10, auth=login) as client:
        yield client


async def test_topics_keep_reports_a_year(on_kafka: Stack) -> None:
    # Real Kafka enforces retention (the embedded broker does not): read it back.
    admin = AIOKafkaAdminClient(bootstrap_servers=on_kafka.kafka)
    await admin.start()
    try:
        (described,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, REPORTS_SUBMITTED)])
        configs = {c[0]: c[1] for c in described.resources[0][4]}
    finally:
        await admin.close()
    assert int(configs["retention.ms"]) >= YEAR_MS
    assert configs["cleanup.policy"] == "delete"


async def test_a_report_is_referred_on_apache_kafka(http: httpx.AsyncClient) -> None:
    report = {
        "incident_type": "Child Sex Tourism",
        "incident_at": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
        "reporter_email": "reporter@esp.example",
        "location": {"country": "US", "us_state": "TX"},
    }
    answer = await http.post("/v1/reports", json={"report": report})
    assert answer.status_code == 202, answer.text
    report_id = answer.json()["report_id"]
    deadline = time.monotonic() + 90  # consumers join groups in seconds on real Kafka
    status: dict[str, object] = {}
    while time.monotonic() < deadline:
        status = (await http.get(f"/v1/reports/{report_id}")).json()
        if status.get("status") == "available_to_law_enforcement":
            break
        await asyncio.sleep(0.2)
    assert status.get("status") == "available_to_law_enforcement", json.dumps(status)[:2000]


