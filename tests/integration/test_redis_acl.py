"""Least privilege in Redis: the ACL users a deployment gets (the very file `tipline deploy
secrets` writes, made from the ownership table tipline/ownership.py) loaded into a real Valkey,
one server and a three-shard Redis Cluster (whose users `tipline up` makes the same way).

For each service's user, as a compromised service would try: every key of another owner is
refused (NOPERM), reading and writing; a key it may only read is refused a write; a key it owns
works, through the service's own store code too (Lua scripts included, loaded again after the
server forgot them); nothing that administers the server runs; a script cannot reach further
than its caller. Without a login nothing runs, and a script's writes survive a restart."""

import base64
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from services.console.sessions import Sessions
from services.intake.esps import EspRegistry, basic_credentials
from services.intake.timeline import Timeline
from services.notification.ledger import Ledger
from services.notification.referrals import ClaimAgencies
from services.supplementation.casefile import CaseFiles, Routing
from services.validation.crosscheck import CrossCheck
from shared import topics
from shared.analysts import AnalystDirectory
from shared.contracts import FileInfo
from shared.settings import Settings
from shared.store import Store, connect
from tests.conftest import users_cluster
from tests.tls_support import LOOPBACK, valkey
from tipline import credentials, ownership
from tipline.access import REDIS_OPERATOR, REDIS_RULES
from tipline.stack import Stack, free_port, redis_users, spawn_valkey, write_valkey_config

ADMINISTERING = (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("CONFIG", "SET",
                 "appendonly", "no"), ("KEYS", "*"), ("ACL", "LIST"), ("ACL", "SETUSER", "x"),
                 ("SCRIPT", "FLUSH"), ("BGREWRITEAOF",), ("CLIENT", "LIST"),
                 ("CLUSTER", "RESET"), ("SHUTDOWN", "NOSAVE"))


class Server:
    """A Valkey with the generated ACL users: clients as any of them."""

    def __init__(self, url: str, cluster: bool, passwords: dict[str, str]) -> None:
        self.url, self.cluster, self.passwords = url, cluster, passwords

    def login(self, user: str | None, password: str | None = None, *,
              one_node: bool = False) -> Store:
        """A client as `user`; `one_node`: a plain one to a single node, even of a cluster (as an
        attacker's own client, for commands of no key)."""
        given = password if password is not None else self.passwords.get(user or "")
        return connect(Settings(
            redis_url=self.url, redis_cluster=self.cluster and not one_node, redis_username=user,
            redis_password=SecretStr(given) if given else None))


@pytest.fixture(scope="module")
def one_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Valkey with the ACL file `tipline deploy secrets` writes."""
    out = tmp_path_factory.mktemp("acl")
    written = credentials.write_all(out / "secrets")
    (acl,) = [p for p in written if p.name == "redis.acl"]
    passwords = credentials.ensure_passwords(out / "secrets", [])["redis"]
    assert oct(acl.stat().st_mode & 0o777) == "0o644"  # hashes only: the redis uid reads it
    assert not any(p in acl.read_text() for p in passwords.values())
    stack = Stack(kafka="", redis="", http="", workdir=out)
    try:
        port = valkey(stack, f'aclfile "{acl}"')
        yield Server(f"redis://{LOOPBACK}:{port}/0", False, passwords)
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A cluster of this module's own, with `tipline up`'s users: the probes write every owner's
    keys, some under fixed names (tipline:abandonment:deadlines) and of another type than their
    owner's, which no other test may then find."""
    yield from users_cluster(tmp_path_factory.mktemp("acl-cluster"))


@pytest.fixture(params=["one server", "cluster"])
def server(request: pytest.FixtureRequest) -> Server:
    if request.param == "one server":
        return request.getfixturevalue("one_server")
    shards: Stack = request.getfixturevalue("own_cluster")
    passwords = {s: env["REDIS_PASSWORD"] for s, env in shards.service_env.items()}
    return Server(shards.redis, True, {**passwords, REDIS_OPERATOR: shards.redis_password})


@pytest.fixture
async def users(server: Server) -> AsyncIterator[dict[str, Store]]:
    clients = {user: server.login(user) for user in REDIS_RULES}
    yield clients
    for client in clients.values():
        await client.aclose()


def a_key(pattern: str, tag: str) -> str:
    """A key the pattern names: `tipline:{*}:draft` -> `tipline:{acl-1a2b}:draft`."""
    return pattern.replace("*", tag)


EVERY_PATTERN = sorted({ownership.pattern(k) for h in ownership.OWNERS for k in h.keys})


@pytest.mark.parametrize("service", topics.SERVICES)
async def test_a_services_user_touches_only_the_keys_the_ownership_table_gives_it(
    server: Server, users: dict[str, Store], service: str,
) -> None:
    me, operator = users[service], users[REDIS_OPERATOR]
    writes, reads = ownership.access(service)
    tag = f"acl-{uuid.uuid4().hex[:8]}"
    for pattern in writes:
        key = a_key(pattern, tag)
        await me.hset(key, "probe", "mine")
        assert await me.hget(key, "probe") == "mine"
    for pattern in reads:
        key = a_key(pattern, tag)
        await operator.hset(key, "probe", "its owner's")
        assert await me.hget(key, "probe") == "its owner's"
        with pytest.raises(NoPermissionError):
            await me.hset(key, "probe", "forged")
    others = [p for p in EVERY_PATTERN if p not in writes and p not in reads]
    assert others, "every service is refused someone's keys"
    for pattern in others:
        key = a_key(pattern, tag)
        await operator.hset(key, "probe", "not yours")
        with pytest.raises(NoPermissionError):
            await me.hget(key, "probe")
        with pytest.raises(NoPermissionError):
            await me.hset(key, "probe", "forged")
        assert await operator.hget(key, "probe") == "not yours"
    with pytest.raises(NoPermissionError):  # keys outside tipline's
        await me.set(f"someone-else:{tag}", "x")

    by_hand = server.login(service, one_node=True)
    try:
        for command in ADMINISTERING:
            with pytest.raises(NoPermissionError):
                await by_hand.execute_command(*command)
    finally:
        await by_hand.aclose()


async def test_the_issues_findings_are_refused(users: dict[str, Store]) -> None:
    """Issue 26, item 5: the console read report drafts and ESP password hashes; intake could
    make a staff login and write the notification ledger."""
    tag = f"acl-{uuid.uuid4().hex[:8]}"
    await users[REDIS_OPERATOR].hset(f"tipline:{{{tag}}}:draft", "report", "synthetic content")
    await EspRegistry(users[REDIS_OPERATOR]).add(f"esp-{tag}")
    with pytest.raises(NoPermissionError):
        await users["console"].hgetall(f"tipline:{{{tag}}}:draft")
    with pytest.raises(NoPermissionError):
        await users["console"].hgetall("tipline:esps")
    with pytest.raises(NoPermissionError):
        await AnalystDirectory(users["intake"]).add(f"staff-{tag}", "synthetic-password-1")
    with pytest.raises(NoPermissionError):
        await users["intake"].hset(f"tipline:{{{tag}}}:ledger", "icac-tx", "referred")
    assert not await users[REDIS_OPERATOR].hexists("tipline:analysts", f"staff-{tag}")


async def test_a_script_runs_with_no_more_rights_than_its_caller(users: dict[str, Store]) -> None:
    """EVALSHA checks the keys a script declares and each command it runs inside."""
    intake = users["intake"]
    tag = f"acl-{uuid.uuid4().hex[:8]}"
    declared = await intake.script_load("return redis.call('HSET', KEYS[1], 'evil', '1')")
    with pytest.raises(NoPermissionError):
        await intake.evalsha(declared, 1, "tipline:analysts")
    # Not declared: the key is checked where the script touches it (before a cluster node asks
    # whether the key is its own).
    hidden = await intake.script_load(
        "return redis.call('HSET', 'tipline:{" + tag + "}:ledger', 'evil', '1')")
    with pytest.raises(ResponseError, match=r"(?i)no permissions"):
        await intake.evalsha(hidden, 0)  # "User intake has no permissions to ..."
    assert not await users[REDIS_OPERATOR].exists(f"tipline:{{{tag}}}:ledger")
    with pytest.raises(NoPermissionError):
        await intake.execute_command("EVAL", "return 1", 0)  # only scripts by their sha


class NoFacts:
    """A recorder of timeline facts for CrossCheck, when no other report holds the content."""

    async def record(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("no fact expected")

    async def record_many(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("no fact expected")


async def intake_code(redis: Store, operator: Store, tag: str) -> None:
    await Timeline(redis).record(tag, f"{tag}-e1", "submitted", status="submitted")
    assert [e["what"] for e in await Timeline(redis).entries(tag)] == ["submitted"]
    password = await EspRegistry(operator).add(f"esp-{tag}")
    header = "Basic " + base64.b64encode(f"esp-{tag}:{password}".encode()).decode()
    assert basic_credentials(header) == (f"esp-{tag}", password)
    assert await EspRegistry(redis).authenticate(header, "127.0.0.1") == f"esp-{tag}"


async def validation_code(redis: Store, operator: Store, tag: str) -> None:
    file = FileInfo(file_id=f"{tag}-f", original_name="a.png", size=1, sha256=uuid.uuid4().hex * 2)
    assert await CrossCheck(redis, NoFacts()).content_seen(tag, "esp", file) == []


async def supplementation_code(redis: Store, operator: Store, tag: str) -> None:
    routing = Routing(agencies=["icac-tx"], basis="synthetic", rules_version="1",
                      priority="normal")
    assert await CaseFiles(redis).route_once({tag: routing}) == {tag: routing}
    await AnalystDirectory(operator).add(f"analyst-{tag}", "synthetic-password-1")
    assert await AnalystDirectory(redis).verify(f"analyst-{tag}", "synthetic-password-1",
                                                "127.0.0.1")


async def notification_code(redis: Store, operator: Store, tag: str) -> None:
    claims = await Ledger(redis).claim({tag: ClaimAgencies(("icac-tx",))})
    assert claims[tag].to_refer == ["icac-tx"]
    await operator.script_flush()  # as after a restart: the scripts are loaded again
    await Ledger(redis).confirm_referrals({tag: ["icac-tx"]})
    assert await Ledger(redis).states(tag) == {"icac-tx": "referred"}


async def console_code(redis: Store, operator: Store, tag: str) -> None:
    await AnalystDirectory(operator).add(f"staff-{tag}", "synthetic-password-1", "operator")
    directory = AnalystDirectory(redis)
    assert await directory.role(f"staff-{tag}") == "operator"
    assert await directory.verify(f"staff-{tag}", "synthetic-password-1", "127.0.0.1")
    signed_in = Sessions(redis, directory, b"s" * 32, 60)  # its own key: the sign-outs
    cookie = await signed_in.open(f"staff-{tag}", "operator", time.time())
    session = await signed_in.current(cookie, time.time())
    assert session is not None
    await signed_in.close(session, time.time())
    assert await signed_in.current(cookie, time.time()) is None


OWN_CODE: dict[str, Callable[[Store, Store, str], Awaitable[None]]] = {
    "intake": intake_code, "validation": validation_code,
    "supplementation": supplementation_code, "referral": notification_code,
    "retraction": notification_code, "console": console_code,
}


@pytest.mark.parametrize("service", topics.SERVICES)
async def test_a_services_own_store_code_runs_as_its_user(
    users: dict[str, Store], service: str,
) -> None:
    await OWN_CODE[service](users[service], users[REDIS_OPERATOR], f"acl-{uuid.uuid4().hex[:8]}")


async def test_nothing_runs_without_a_login_and_each_user_has_its_own_password(
    server: Server,
) -> None:
    anonymous = server.login(None, one_node=True)  # (a cluster client could not even start)
    try:
        with pytest.raises(AuthenticationError):  # NOAUTH
            await anonymous.get("tipline:analysts")
        with pytest.raises((AuthenticationError, ResponseError)):  # the default user is off
            await anonymous.execute_command("AUTH", "default", "anything")
    finally:
        await anonymous.aclose()
    for user, password in (("intake", "not-the-password"),
                           ("validation", server.passwords["intake"])):
        client = server.login(user, password, one_node=True)
        try:
            with pytest.raises((AuthenticationError, ResponseError)):
                await client.ping()
        finally:
            await client.aclose()
    operator = server.login(REDIS_OPERATOR)
    try:
        assert await operator.execute_command("ACL", "WHOAMI") == REDIS_OPERATOR
    finally:
        await operator.aclose()
    assert set(REDIS_RULES) == set(server.passwords)


async def test_a_scripts_writes_survive_a_restart(tmp_path: Path) -> None:
    """A script's writes reach the append-only file as a transaction, which the server replays
    as its default user, checking the transaction against that user's rights: with a default
    user of fewer rights they were dropped at the restart (Valkey logged "NOPERM ... EXEC" and
    a shard killed in test_redis_cluster.py came back without its reports)."""
    stack = Stack(kafka="", redis="", http="", workdir=tmp_path)
    try:
        redis_users(stack)  # the users `tipline up` gives its Valkey, made by redis_acl()
        write_valkey_config(stack, "valkey", free_port(), "appendfsync always")
        settings = Settings(
            redis_url=f"redis://{LOOPBACK}:{spawn_valkey(stack, 'valkey')}/0",
            redis_username="referral",
            redis_password=SecretStr(stack.service_env["referral"]["REDIS_PASSWORD"]))
        reports = [f"acl-{uuid.uuid4().hex[:8]}" for _ in range(5)]
        redis = connect(settings)
        try:  # one script a report: the claim and the priority, two keys, several writes
            await Ledger(redis).claim({r: ClaimAgencies(("icac-tx", "icac-ca"))
                                       for r in reports})
            before = {r: await Ledger(redis).states(r) for r in reports}
        finally:
            await redis.aclose()
        assert all(states == {"icac-tx": "referring", "icac-ca": "referring"}
                   for states in before.values())
        (child,) = [c for c in stack.children if c.name == "valkey"]
        child.process.kill()  # no shutdown: only the append-only file brings the data back
        child.process.wait()
        stack.children.remove(child)
        spawn_valkey(stack, "valkey")
        redis = connect(settings)
        try:
            assert {r: await Ledger(redis).states(r) for r in reports} == before
        finally:
            await redis.aclose()
    finally:
        stack.stop()


def test_the_probes_name_keys_of_every_owner() -> None:
    """The keys tried above are the owners' real ones (so the refusals above can fail)."""
    assert a_key(ownership.pattern("{r}:draft"), "7") == "tipline:{7}:draft"
    assert a_key(ownership.pattern("tipline:content:…"), "ab") == "tipline:content:ab"
    assert "tipline:esps" in EVERY_PATTERN and "tipline:{*}:ledger" in EVERY_PATTERN
