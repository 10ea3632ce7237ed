"""The five services as separate processes on a Redis Cluster (three embedded Valkey shards,
REDIS_CLUSTER=true, each service logged in as its own ACL user): reports from submission to
acknowledged correction, an abandoned /ispws draft, reports spread over the shards with each
report's keys on one slot; the retraction invariant's interleavings on the cluster; and a shard
killed and started again mid-stream loses no accepted report."""

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode

from services.intake.esps import EspRegistry
from services.notification.awaiting import AwaitingAcknowledgement
from services.notification.ledger import Ledger
from shared.contracts import AgencyNotice
from shared.settings import Settings
from shared.signing import Signer
from shared.store import connect
from tests.e2e.support import until
from tests.integration.agency_helpers import agency_ids, registered
from tests.integration.test_pipeline import VALID
from tests.integration.test_retraction_invariant import one_interleaving
from tests.ispws_support import field, report_xml
from tipline.agency import AgencyClient
from tipline.stack import Stack, create_topics, free_port, spawn_valkey, start_services

ABANDON_S = 2.0  # an unfinished /ispws draft is abandoned this soon
REPORTS = 6
INTERLEAVINGS = 200
DOWN_S = 2.0  # how long the killed shard stays away (the cluster marks a node failed after 15 s)


@pytest.fixture(scope="module")
def agencies() -> list[str]:
    return agency_ids(2)


@pytest.fixture(scope="module")
def system(
    servers: Stack, valkey_cluster: Stack, agencies: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("on-cluster")
    with pytest.MonkeyPatch.context() as env:
        routing, _ = registered(workdir, agencies)  # both agencies sign their acks
        env.setenv("TIPLINE_ROUTING_FILE", str(routing))
        env.setenv("TIPLINE_KEYS_DIR", str(workdir / "keys"))
        env.setenv("TIPLINE_ABANDON_AFTER_OPEN_S", str(ABANDON_S))
        env.setenv("TIPLINE_ABANDON_AFTER_CHANGE_S", str(ABANDON_S))
        env.setenv("TIPLINE_ABANDON_TICK_S", "0.2")
        # Each service logs in as its own ACL user, tools (the fixtures here) as the operator.
        stack = Stack(kafka=servers.kafka, redis=valkey_cluster.redis, redis_cluster=True,
                      redis_username=valkey_cluster.redis_username,
                      redis_password=valkey_cluster.redis_password,
                      service_env=valkey_cluster.service_env,
                      http=f"http://127.0.0.1:{free_port()}", workdir=workdir)
        create_topics(stack)
        try:
            start_services(stack)
            yield stack
        finally:
            stack.stop()


@pytest.fixture(scope="module")
def esp(system: Stack) -> tuple[str, str]:
    async def add() -> tuple[str, str]:
        redis = connect(system.settings())
        try:
            name = f"esp-cluster-{uuid.uuid4().hex[:6]}"
            return name, await EspRegistry(redis).add(name)
        finally:
            await redis.aclose()

    return asyncio.run(add())


@pytest.fixture
async def http(system: Stack, esp: tuple[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.http, timeout=10, auth=esp) as client:
        yield client


@pytest.fixture
async def cluster(system: Stack) -> AsyncIterator[RedisCluster]:
    redis = connect(system.settings())
    assert isinstance(redis, RedisCluster)
    await redis.initialize()
    yield redis
    await redis.aclose()


async def settle(http: httpx.AsyncClient, path: str, until: Any, timeout: float = 40) -> Any:
    """GET `path` until `until(answer)` holds (a 503 while a shard is away is just not yet)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        answer = (await http.get(path)).json()
        if until(answer) or asyncio.get_running_loop().time() > deadline:
            return answer
        await asyncio.sleep(0.1)


def shard_of(cluster: RedisCluster, report_id: str) -> ClusterNode:
    """The primary a report's keys live on."""
    node = cluster.get_node_from_key(f"tipline:{{{report_id}}}:report")
    assert node is not None, report_id  # every slot is served
    return node


def referred(status: dict[str, Any]) -> bool:
    return status.get("status") == "available_to_law_enforcement"  # as its ESP is told


async def test_reports_flow_end_to_end_over_every_shard(
    system: Stack, http: httpx.AsyncClient, cluster: RedisCluster, agencies: list[str]
) -> None:
    settings = system.settings()
    clients = {a: AgencyClient(settings, a, signer=Signer(system.workdir / "agency-keys" / a))
               for a in agencies}
    got: dict[str, list[AgencyNotice]] = {a: [] for a in agencies}
    tasks = [asyncio.create_task(clients[a].collect(got[a])) for a in agencies]
    try:
        for client in clients.values():
            await client.ready()
        report_ids = [(await http.post("/v1/reports", json={"report": VALID})).json()["report_id"]
                      for _ in range(REPORTS)]
        draft = field((await http.post("/ispws/submit", content=report_xml(),
                                       headers={"content-type": "text/xml"})).text, "reportId")
        # Where each went, as the operator sees it (the ledger, on the report's shard).
        ledger, outbox = Ledger(cluster), AwaitingAcknowledgement(cluster, 60)
        for report_id in report_ids:
            status = await settle(http, f"/v1/reports/{report_id}", referred)
            assert referred(status), status
            # (referral marks the ledger once its send is acknowledged; intake tells the ESP
            # from its own reading of the facts: either may come first)
            async def confirmed(report_id: str = report_id) -> bool:
                return await ledger.states(report_id) == dict.fromkeys(agencies, "referred")
            await until(confirmed, f"the ledger to confirm {report_id} for every agency")

        retracted = report_ids[0]
        assert (await http.post(f"/v1/reports/{retracted}/retract")).status_code == 202
        status = await settle(http, f"/v1/reports/{retracted}",
                              lambda s: s.get("status") == "retracted")
        assert status["status"] == "retracted"

        async def corrected_and_acked() -> bool:
            corrections = {n.notice_id for a in agencies for n in got[a]
                           if n.report_id == retracted and n.kind == "correction"}
            return (await ledger.states(retracted) == dict.fromkeys(agencies, "corrected")
                    and len(corrections) == len(agencies)
                    and await outbox.states(retracted) == dict.fromkeys(corrections, "acked"))

        deadline = asyncio.get_running_loop().time() + 60
        while not await corrected_and_acked():
            assert asyncio.get_running_loop().time() < deadline, "not corrected and acked"
            await asyncio.sleep(0.1)

        abandoned = await settle(http, f"/ispws/reports/{draft}",
                                 lambda s: s.get("state") == "abandoned")
        assert abandoned["state"] == "abandoned", abandoned
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks)

    # The cluster is really used: reports live on several shards, each report on one slot.
    owners = {shard_of(cluster, r).name for r in report_ids}
    assert len(owners) >= 2, owners
    sizes = [await cluster.dbsize(target_nodes=node) for node in cluster.get_primaries()]
    assert sum(1 for size in sizes if size) >= 2, sizes
    slot = cluster.keyslot(f"tipline:{{{retracted}}}")
    # Its timeline, case file, ledger, acknowledgement states and more, together.
    assert await cluster.cluster_countkeysinslot(slot) >= 8


async def test_the_retraction_invariant_holds_on_the_cluster(valkey_cluster: Stack) -> None:
    """The invariant test's interleavings (fewer), with the ledger's batches spread over shards."""
    redis = connect(Settings(redis_url=valkey_cluster.redis, redis_cluster=True,
                             redis_username=valkey_cluster.redis_username,
                             redis_password=SecretStr(valkey_cluster.redis_password)))
    rng = random.Random(20261129)
    try:
        # A cluster pipeline takes longer than one to a single server: wider start windows.
        orders = [await one_interleaving(redis, rng, start_within_s=0.03)
                  for _ in range(INTERLEAVINGS)]
    finally:
        await redis.aclose()
    assert 0 < sum(o["retracted_first"] for o in orders) < INTERLEAVINGS


async def test_a_shard_killed_and_started_again_loses_nothing_accepted(
    system: Stack, valkey_cluster: Stack, http: httpx.AsyncClient, cluster: RedisCluster
) -> None:
    victim = "valkey-2"
    accepted: list[str] = []

    async def submit(n: int) -> None:
        for _ in range(n):
            answer = await http.post("/v1/reports", json={"report": VALID})
            if answer.status_code == 202:
                accepted.append(answer.json()["report_id"])
            else:  # the shard holding this report (or a login, a due index) is away
                assert answer.status_code == 503, answer.text
            await asyncio.sleep(0.02)

    load = asyncio.create_task(submit(40))
    while len(accepted) < 10:
        assert not load.done()
        await asyncio.sleep(0.05)
    (child,) = [c for c in valkey_cluster.children if c.name == victim]
    child.process.kill()  # no shutdown: what it acknowledged is in its fsynced AOF
    await asyncio.to_thread(child.process.wait)
    valkey_cluster.children.remove(child)
    await asyncio.sleep(DOWN_S)
    port = await asyncio.to_thread(spawn_valkey, valkey_cluster, victim)  # same config, data
    await load

    on_victim = [r for r in accepted
                 if shard_of(cluster, r).port == port]
    assert on_victim, "no accepted report lives on the restarted shard"
    for report_id in accepted:
        status = await settle(http, f"/v1/reports/{report_id}", referred)
        assert referred(status), (report_id, status)

