"""Redis, connected once a process."""

import ssl

from redis.asyncio import BlockingConnectionPool, Redis

from shared.settings import Settings


def connect(settings: Settings) -> "Redis":
    # A busy process waits (up to 10 s) for a free connection; the plain pool fails at 100.
    options: dict[str, object] = {}
    if settings.redis_username:
        options["username"] = settings.redis_username
    if settings.redis_password:
        options["password"] = settings.redis_password.get_secret_value()
    if settings.redis_url.startswith("rediss://"):
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        if settings.redis_ssl_ca_file:
            options["ssl_ca_certs"] = str(settings.redis_ssl_ca_file)
    pool = BlockingConnectionPool.from_url(
        settings.redis_url, decode_responses=True, health_check_interval=10,
        max_connections=200, timeout=10, **options,
    )
    return Redis.from_pool(pool)
