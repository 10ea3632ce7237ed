"""shared/store.py's replacement of redis-py's ClusterNode.disconnect_free_connections: a task
that wants a connection while the free ones are being disconnected never gets one of them."""

import asyncio

from redis.asyncio.cluster import ClusterNode

import shared.store  # noqa: F401  (replaces the method)


class SlowToClose:
    def __init__(self) -> None:
        self.closing = False

    async def disconnect(self) -> None:
        self.closing = True
        await asyncio.sleep(0.05)
        self.closing = False


async def test_free_connections_are_not_handed_out_while_they_are_disconnected() -> None:
    node = ClusterNode("127.0.0.1", 1)
    free = [SlowToClose() for _ in range(3)]
    node._free.extend(free)  # type: ignore[arg-type]
    node._connections.extend(free)  # type: ignore[arg-type]
    closing = asyncio.create_task(node.disconnect_free_connections())
    await asyncio.sleep(0.01)
    assert all(c.closing for c in free)
    taken = node.acquire_connection()  # meanwhile: a new connection, not one being closed
    assert taken not in free
    await closing
    assert list(node._free) == free  # back, to connect again on their next use
    node._free.clear()  # not real connections: nothing for the node to close when it goes
    node._connections.clear()
