"""Which Redis client the settings make (no server needed: clients connect on first use)."""

import pytest
from pydantic import SecretStr, ValidationError
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import SSLConnection

from shared.settings import Settings
from shared.store import connect


async def test_redis_cluster_setting_makes_a_cluster_client_with_the_same_options() -> None:
    settings = Settings(redis_url="rediss://node-1.example:6379/0", redis_cluster=True,
                        redis_username="referral", redis_password=SecretStr("synthetic"))
    client = connect(settings)
    assert isinstance(client, RedisCluster)
    options = client.get_connection_kwargs()
    assert (options["username"], options["password"]) == ("referral", "synthetic")
    assert options["connection_class"] is SSLConnection and options["decode_responses"] is True
    await client.aclose()
    plain = connect(settings.model_copy(update={"redis_cluster": False}))
    assert isinstance(plain, Redis)
    await plain.aclose()


def test_a_cluster_has_database_zero_only() -> None:
    with pytest.raises(ValidationError, match="REDIS_URL"):
        Settings(redis_url="redis://node-1.example:6379/3", redis_cluster=True)
    assert Settings(redis_url="redis://node-1.example:6379", redis_cluster=True).redis_cluster
