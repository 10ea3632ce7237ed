"""Redis, connected once a process."""

from redis.asyncio import BlockingConnectionPool, Redis

from shared.settings import Settings


def connect(settings: Settings) -> "Redis":
    # A busy process waits (up to 10 s) for a free connection; the plain pool fails at 100.
    pool = BlockingConnectionPool.from_url(
        settings.redis_url, decode_responses=True, health_check_interval=10,
        max_connections=200, timeout=10,
    )
    return Redis.from_pool(pool)
