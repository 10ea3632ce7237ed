"""The reference agency client: what an agency embeds to receive tipline's notices.

It consumes the agency's topic in its own consumer group, drops redelivered notices by notice_id
and commits only after the caller has taken a notice.
"""

import json
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from shared.contracts import AgencyNotice
from shared.settings import Settings
from shared.topics import agency_topic


class AgencyClient:
    def __init__(self, settings: Settings, agency_id: str, group_id: str | None = None) -> None:
        self.agency_id = agency_id
        self.seen: set[str] = set()
        self.duplicates = 0
        self.refused: list[tuple[Any, str]] = []
        self._consumer = AIOKafkaConsumer(
            agency_topic(agency_id),
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=group_id or f"agency-{agency_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            max_partition_fetch_bytes=settings.kafka_max_message_bytes,
        )

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def notices(self) -> AsyncIterator[AgencyNotice]:
        """Each notice once, in the order the agency's partitions hold them."""
        async for record in self._consumer:
            notice = self._parse(record.value)
            if notice is not None and notice.notice_id not in self.seen:
                self.seen.add(notice.notice_id)
                yield notice
            elif notice is not None:
                self.duplicates += 1
            await self._consumer.commit()

    def _parse(self, value: bytes | None) -> AgencyNotice | None:
        try:
            notice = AgencyNotice.model_validate(json.loads(value or b""))
        except (ValueError, ValidationError) as exc:
            self.refused.append((value, f"not a notice: {exc}"))
            return None
        if notice.agency_id != self.agency_id:
            self.refused.append((value, f"addressed to {notice.agency_id}"))
            return None
        return notice
