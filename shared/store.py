"""Redis, connected once a process: one server, or a Redis Cluster (`REDIS_CLUSTER=true`).

Every key about a report carries the report's id as a hash tag (`tipline:{<id>}:...`), so all of
a report's keys share one cluster slot and a Lua script over them runs on one node. The few other
keys (ESP and analyst logins, the due indexes, idempotency keys, content hashes) are each used
alone. A script spans several reports only where they share a slot (`run_script`), and no
pipeline is a transaction, so the same code runs on a cluster, whose client splits a pipeline by
node.
"""

import asyncio
import hashlib
import ssl
from collections.abc import Sequence
from functools import cache
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode, ClusterPipeline
from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.exceptions import (
    ClusterError,
    ConnectionError,
    NoScriptError,
    RedisClusterException,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)

from shared.settings import Settings

Store = Redis | RedisCluster

# Redis, or one shard of a cluster, is away (down, restarting, loading, slots moving): waiting
# cures it. Anything else from Redis is a bug or a refused command.
# A cluster client that reaches no node at all raises a bare RedisClusterException (from the
# ConnectionError): with a shard restarting that is an outage too, not a bad record (the scaled
# chaos run dead-lettered a referral and intake answered 500 before it was counted here).
REDIS_UNAVAILABLE = (
    ConnectionError, TimeoutError, ClusterError, TryAgainError, SlotNotCoveredError,
    RedisClusterException,
)


async def _disconnect_free_connections(self: ClusterNode) -> None:
    """redis-py's ClusterNode.disconnect_free_connections (after a ConnectionError on a node)
    disconnects a snapshot of the node's free connections while leaving them free, so another
    task may take one and be connecting it when the disconnect lands: `'NoneType' object has no
    attribute 'writelines'`, or a ConnectionError that starts the same again. Under load, after
    a shard restart, that fed itself for over a minute (tests/chaos/test_chaos_scaled.py). Here
    the connections are taken out of the free queue while they are disconnected, then put back
    (they connect again on their next use); a task wanting one meanwhile gets a new one.
    No public API reaches a node's free queue: this replaces redis-py's own method, which reads
    the same `_free`, and goes when redis-py fixes the race."""
    taken = []
    while self._free:
        taken.append(self._free.popleft())
    try:
        await asyncio.gather(*(c.disconnect() for c in taken), return_exceptions=True)
    finally:
        self._free.extend(taken)


ClusterNode.disconnect_free_connections = _disconnect_free_connections  # type: ignore[method-assign]


def _lost(exc: AttributeError) -> ConnectionError:
    return ConnectionError(f"connection lost while in use ({exc})")


UNSENT_ATTEMPTS = 3


def _unsent(exc: AttributeError) -> bool:
    """Raised by the write itself (`writer.writelines`, the writer gone): nothing was sent. No
    exception type says so; the attribute's name does (AttributeError.name)."""
    return exc.name == "writelines"


class _ClusterPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True,
                      allow_redirections: bool = True) -> list[Any]:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except AttributeError as exc:
            raise _lost(exc) from exc


class Cluster(RedisCluster):
    """redis-py's cluster client, with one of its failures called by its name. When the client
    re-learns the cluster after a node failed (or a node answered CLUSTERDOWN), it disconnects
    every node's connections, those in use too, and the task using one fails with `'NoneType'
    object has no attribute 'writelines'` (the connection's writer gone): a connection lost, so
    Redis away (503, the batch again), not a bug (500, dead letters). Seen in the scaled chaos
    run (shard restarts), where one restart failed about half of intake's calls for a while.

    A single command that failed so was never written (the writer went while the connection was
    being checked before the write), so it is sent again, a few times: the healthy shards keep
    answering while one restarts. A pipeline is not (its commands to other nodes may have gone)."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        attempt = 1
        while True:
            try:
                return await super().execute_command(*args, **kwargs)
            except AttributeError as exc:
                if attempt == UNSENT_ATTEMPTS or not _unsent(exc):
                    raise _lost(exc) from exc
            await asyncio.sleep(0.01 * attempt)
            attempt += 1

    def pipeline(self, transaction: Any | None = None,
                 shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # which refuses it
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]  # as redis-py does


def connect(settings: Settings) -> Store:
    options: dict[str, Any] = {}
    if settings.redis_username:
        options["username"] = settings.redis_username
    if settings.redis_password:
        options["password"] = settings.redis_password.get_secret_value()
    if settings.redis_url.startswith("rediss://"):
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        if settings.redis_ssl_ca_file:
            options["ssl_ca_certs"] = str(settings.redis_ssl_ca_file)
    if settings.redis_cluster:
        # Up to 200 connections to each node (past them the cluster client fails at once);
        # the URL is one node, the client learns the others from it.
        return Cluster.from_url(
            settings.redis_url, decode_responses=True, health_check_interval=10,
            max_connections=200, **options,
        )
    # A busy process waits (up to 10 s) for a free connection; the plain pool fails at 100.
    pool = BlockingConnectionPool.from_url(
        settings.redis_url, decode_responses=True, health_check_interval=10,
        max_connections=200, timeout=10, **options,
    )
    return Redis.from_pool(pool)


# A script run for many calls at once: each call's keys and arguments, in turn, go through the
# script's own body (KEYS and ARGV are its parameters), and the calls' answers come back in a
# list (nil as false, which Redis answers as nil). ARGV: how many calls, then for each its key
# and argument counts and its arguments; KEYS: every call's keys, in order.
_MANY_HEAD = "local function one(KEYS, ARGV)\n"
_MANY_TAIL = """
end
local out, k, a = {}, 0, 1
for i = 1, tonumber(ARGV[1]) do
  local nk, na = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local keys, args = {unpack(KEYS, k + 1, k + nk)}, {unpack(ARGV, a + 3, a + 2 + na)}
  k, a = k + nk, a + 2 + na
  local answer = one(keys, args)
  if answer == nil then answer = false end  -- a hole would cut the list short
  out[i] = answer
end
return out
"""
MANY_AT_ONCE = 50  # calls in one run: Redis serves no one else while a script runs


@cache
def _many(script: str) -> tuple[str, str]:
    """The script that runs `script` for many calls at once, and its SHA1."""
    many = _MANY_HEAD + script + _MANY_TAIL
    return many, hashlib.sha1(many.encode()).hexdigest()


def _runs(redis: Store, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]) -> list[list[int]]:
    """The calls (by index) in runs of at most MANY_AT_ONCE, each on one cluster slot: all of a
    report's keys share one, so a run spans reports only where they share it (a single server
    is all one slot)."""
    by_slot: dict[int, list[int]] = {}
    cluster = isinstance(redis, RedisCluster)
    for i, (keys, _) in enumerate(calls):
        by_slot.setdefault(key_slot(keys[0].encode()) if cluster and keys else 0, []).append(i)
    return [run[at:at + MANY_AT_ONCE] for run in by_slot.values()
            for at in range(0, len(run), MANY_AT_ONCE)]


async def run_script(
    redis: Store, script: AsyncScript, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
) -> list[Any]:
    """The script once for each (keys, args), in one pipeline (one round trip a node); the
    answers in order. The calls go in runs, each one script call for many (a call to Redis costs
    the client about as much CPU whatever it carries: docs/load-testing.md); a run of one is the
    script itself. A server that lost its scripts (restarted, failed over) refuses a run with
    NOSCRIPT, which leaves it undone: the script is loaded again (on every primary of a cluster)
    and just those runs are made again. Any other error is raised."""
    many, many_sha = _many(script.script)
    answers: list[Any] = [None] * len(calls)
    todo = _runs(redis, calls)
    for attempt in range(2):
        async with redis.pipeline(transaction=False) as pipe:
            for run in todo:
                if len(run) == 1:
                    sha, (keys, args) = script.sha, calls[run[0]]
                else:
                    sha, keys, args = many_sha, [], [len(run)]
                    for i in run:
                        call_keys, call_args = calls[i]
                        keys += call_keys
                        args += [len(call_keys), len(call_args), *call_args]
                # As a raw command: the cluster pipeline refuses its evalsha() method because
                # it cannot load scripts itself, which is done here.
                pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
            results = await pipe.execute(raise_on_error=False)
        missing = []
        for run, result in zip(todo, results, strict=True):
            if isinstance(result, NoScriptError) and attempt == 0:
                missing.append(run)
            elif isinstance(result, Exception):
                raise result
            elif len(run) == 1:
                answers[run[0]] = result
            else:
                for i, answer in zip(run, result, strict=True):
                    answers[i] = answer
        if not missing:
            break
        for text in {script.script if len(run) == 1 else many for run in missing}:
            await redis.script_load(text)
        todo = missing
    return answers
