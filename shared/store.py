"""Redis, connected once a process."""

from redis.asyncio import Redis

from shared.settings import Settings


def connect(settings: Settings) -> "Redis":
    return Redis.from_url(settings.redis_url, decode_responses=True, health_check_interval=10)
