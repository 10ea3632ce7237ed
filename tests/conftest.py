"""Real servers for the tests: the embedded broker and Valkey, unless URLs are given.

Set KAFKA_BOOTSTRAP_SERVERS / REDIS_URL to run the same tests against real Kafka and Redis.
"""

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as examples
from redis.asyncio import Redis

from shared.settings import Settings
from shared.signing import ensure_keys
from tipline.stack import Stack, redis_users, start_servers, start_valkey_cluster

# Apache Kafka fixtures (`apache`, `apache_cluster`), for any test that asks for them.
pytest_plugins = ["tests.apache_support"]

# Property tests: 50 examples each in `make test`, so the unit tests stay under 30 s; a
# thorough run asks for more: HYPOTHESIS_PROFILE=thorough.
examples.register_profile("make-test", max_examples=50)
examples.register_profile("thorough", max_examples=1000)
examples.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "make-test"))


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(
        kafka=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", ""),
        redis=os.environ.get("REDIS_URL", ""),
        http="",
        workdir=tmp_path_factory.mktemp("servers"),
    )
    try:
        # No logins, so tests may build their own clients from settings.redis_url; the logins
        # are tested on their own (tests/integration/test_redis_security.py, test_redis_acl.py).
        start_servers(stack, redis_logins=False)
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A Redis Cluster of three embedded Valkey primaries on loopback (always its own, whatever
    REDIS_URL says), with the ACL users of a deployment (`.redis_username` / `.redis_password`:
    the operator's; `.service_env`: each service's own), each fsyncing its append-only file on
    every write so a killed shard keeps everything it acknowledged. `.redis` is its first node."""
    yield from users_cluster(tmp_path_factory.mktemp("valkey-cluster"))


def users_cluster(workdir: Path) -> Iterator[Stack]:
    """`valkey_cluster`'s cluster, in `workdir`, until the generator is closed."""
    stack = Stack(kafka="", redis="", http="", workdir=workdir)
    try:
        redis_users(stack)
        start_valkey_cluster(stack, 3, "appendfsync always")
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def settings(servers: Stack) -> Settings:
    keys = servers.workdir / "keys"
    ensure_keys(keys)  # notice signing and each service's seal key
    return Settings(kafka_bootstrap_servers=servers.kafka, redis_url=servers.redis,
                    tipline_retry_backoff_s=0.05, tipline_keys_dir=keys)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
