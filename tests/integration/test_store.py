"""Scripts pipelined for many reports survive a server that forgot them (restarted, failed over),
on one server and on the cluster; a command the cluster client never wrote is sent again."""

import uuid
from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from services.notification.ledger import Ledger
from services.notification.referrals import ClaimAgencies, Retract
from shared.settings import Settings
from shared.store import UNSENT_ATTEMPTS, connect
from tipline.stack import Stack


@pytest.mark.parametrize("cluster", [False, True], ids=["one server", "cluster"])
async def test_a_script_cache_emptied_under_a_batch_is_filled_again(
    cluster: bool, settings: Settings, request: pytest.FixtureRequest
) -> None:
    if cluster:
        shards: Stack = request.getfixturevalue("valkey_cluster")
        settings = settings.model_copy(update={
            "redis_url": shards.redis, "redis_cluster": True,
            "redis_username": shards.redis_username,
            "redis_password": SecretStr(shards.redis_password)})
    redis = connect(settings)
    try:
        ledger = Ledger(redis)
        reports = {f"store-{uuid.uuid4().hex[:8]}": ["a1"] for _ in range(12)}
        await ledger.claim({r: ClaimAgencies(tuple(a)) for r, a in reports.items()})  # loaded
        await redis.script_flush()  # on every primary of a cluster: as after a restart
        await ledger.confirm_referrals(reports)
        for report_id in reports:
            assert await ledger.states(report_id) == {"a1": "referred"}
    finally:
        await redis.aclose()


@pytest.mark.parametrize("cluster", [False, True], ids=["one server", "cluster"])
async def test_many_reports_in_one_script_call_each_get_their_own_answer(
    cluster: bool, settings: Settings, request: pytest.FixtureRequest
) -> None:
    """A batch's reports go to Redis as one script call where they share a slot (all of them on
    one server): each report is still claimed on its own state, and answered for itself."""
    if cluster:
        settings = cluster_settings(settings, request.getfixturevalue("valkey_cluster"))
    redis = connect(settings)
    try:
        ledger = Ledger(redis)
        reports = [f"many-{uuid.uuid4().hex[:8]}" for _ in range(30)]
        retracted = set(reports[::3])
        await ledger.retract({r: Retract("2026-01-01T00:00:00+00:00", "esp", "esp-1", "wrong")
                              for r in retracted})
        claims = await ledger.claim({r: ClaimAgencies((f"agency-of-{r}", "icac-tx"))
                                     for r in reports})
        assert list(claims) == reports
        for report_id, claim in claims.items():
            if report_id in retracted:
                assert claim.withheld, report_id
            else:
                assert sorted(claim.to_refer) == sorted([f"agency-of-{report_id}", "icac-tx"])
    finally:
        await redis.aclose()


def cluster_settings(settings: Settings, shards: Stack) -> Settings:
    return settings.model_copy(update={
        "redis_url": shards.redis, "redis_cluster": True,
        "redis_username": shards.redis_username,
        "redis_password": SecretStr(shards.redis_password)})


async def test_a_command_never_written_is_sent_again_and_a_lost_reply_is_not(
    settings: Settings, valkey_cluster: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the cluster client re-learns the cluster (a shard restarting) it disconnects
    connections in use. A command whose connection lost its writer before the write was never
    sent, so it is sent again; one that lost its reader after the write may have run, so it is
    a connection lost (Redis away), never run twice; and a command that keeps failing so is
    given up after a few tries."""
    redis = connect(cluster_settings(settings, valkey_cluster))
    real, failures = RedisCluster.execute_command, list[str]()

    async def flaky(self: RedisCluster, *args: Any, **kwargs: Any) -> Any:
        if failures:
            name = failures.pop(0)
            raise AttributeError(f"'NoneType' object has no attribute '{name}'", name=name)
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(RedisCluster, "execute_command", flaky)
    key = f"tipline:{{store-{uuid.uuid4().hex[:8]}}}:n"
    try:
        failures[:] = ["writelines", "writelines"]
        assert await redis.incr(key) == 1  # sent again, and once only
        failures[:] = ["read"]
        with pytest.raises(RedisConnectionError, match="lost while in use"):
            await redis.incr(key)
        failures[:] = ["writelines"] * UNSENT_ATTEMPTS
        with pytest.raises(RedisConnectionError, match="lost while in use"):
            await redis.incr(key)
        assert not failures
        assert await redis.get(key) == "1"
    finally:
        await redis.aclose()
