"""Run intake: uvicorn serving the HTTP API until SIGTERM."""

import uvicorn

from services.intake.main import create_app
from shared.settings import get_settings
from shared.telemetry import configure_logging

settings = get_settings()
configure_logging(settings, "intake")
uvicorn.run(
    create_app(settings),
    host=settings.tipline_http_host,
    port=settings.tipline_http_port,
    log_level="warning",
    timeout_graceful_shutdown=10,
)
