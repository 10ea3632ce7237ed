"""Running a service process: settings, logging, then the FastStream app until SIGTERM.

FastStream stops consuming on SIGTERM/SIGINT, lets the message in hand finish (its offset is
committed by the delivery middleware) and closes the broker.
"""

import asyncio
from collections.abc import Callable

from faststream import FastStream

from shared.settings import Settings, get_settings
from shared.telemetry import configure_logging


def run(create_app: Callable[[Settings], FastStream]) -> None:
    settings = get_settings()
    configure_logging(settings)
    asyncio.run(create_app(settings).run())
