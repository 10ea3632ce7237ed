"""Create every tipline topic before the services start: `python -m tipline.provision` (a job:
its own image, `topics`, holds it beside the shared package and no service).

Run once a deployment (compose's `topics` service, the Kubernetes Job) and again after an agency
is added to the routing file. Creating is idempotent: existing topics are left as they are
(change their settings with kafka-configs.sh, see docs/operations.md).
"""

import asyncio
import logging

from shared.agencies import load_agencies
from shared.kafka import ensure_topics
from shared.settings import Settings, get_settings
from shared.telemetry import configure_logging
from shared.topology import topic_names

log = logging.getLogger("tipline.provision")


async def provision(settings: Settings, attempts: int = 30, pause_s: float = 2.0) -> list[str]:
    # ensure_topics gives each its partitions and configs (shared.topology), from the settings.
    names = topic_names(load_agencies(settings.tipline_routing_file))
    for attempt in range(1, attempts + 1):
        try:
            return await ensure_topics(settings, names)
        except Exception as exc:  # the broker may still be electing its controller
            if attempt == attempts:
                raise
            log.warning("topics not created yet (attempt %s): %r", attempt, exc)
            await asyncio.sleep(pause_s)
    return []


def main() -> None:
    settings = get_settings()
    configure_logging(settings, "provision")
    created = asyncio.run(provision(settings))
    log.info("created %d topics: %s", len(created), ", ".join(created) or "none (all existed)")


if __name__ == "__main__":
    main()
