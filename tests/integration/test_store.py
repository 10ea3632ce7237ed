"""Scripts pipelined for many reports survive a server that forgot them (restarted, failed over),
on one server and on the cluster."""

import uuid

import pytest
from pydantic import SecretStr

from services.notification.ledger import Ledger
from shared.contracts import Priority
from shared.settings import Settings
from shared.store import connect
from tipline.stack import Stack


@pytest.mark.parametrize("cluster", [False, True], ids=["one server", "cluster"])
async def test_a_script_cache_emptied_under_a_batch_is_filled_again(
    cluster: bool, settings: Settings, request: pytest.FixtureRequest
) -> None:
    if cluster:
        shards: Stack = request.getfixturevalue("valkey_cluster")
        settings = settings.model_copy(update={
            "redis_url": shards.redis, "redis_cluster": True,
            "redis_password": SecretStr(shards.redis_password)})
    redis = connect(settings)
    try:
        ledger = Ledger(redis)
        reports = {f"store-{uuid.uuid4().hex[:8]}": ["a1"] for _ in range(12)}
        await ledger.claim({r: (a, Priority.NORMAL) for r, a in reports.items()})  # scripts loaded
        await redis.script_flush()  # on every primary of a cluster: as after a restart
        await ledger.confirm_referrals(reports)
        for report_id in reports:
            assert await ledger.states(report_id) == {"a1": "referred"}
    finally:
        await redis.aclose()
