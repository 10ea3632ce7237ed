"""The reference agency client: what an agency embeds to receive tipline's notices.

It consumes the agency's topic in its own consumer group and, for each notice:
- verifies tipline's Ed25519 signature against the published keyring, and refuses (loudly: an
  ERROR log line and the `refused` list) a notice that is unsigned, altered or from a retired key;
- drops a redelivered or re-sent notice by its notice_id (and acknowledges it again, in case the
  first ack was lost), even across a restart: the notices it took are kept in a small SQLite
  file under its data dir (`Received`);
- refuses a referral of a report it already holds a correction for: an old referral replayed
  after the report was retracted is never handed over as new;
- acknowledges it on tipline.agency.acks once the caller has taken it (or leaves that to the
  caller: `auto_ack=False`, then `ack(notice)`), and commits only then; acks and outcomes are
  signed with the agency's own key when given one (`signer`), whose public half the agency
  registered in tipline's registry (`verify_keys`).
"""

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import ValidationError

from shared.contracts import AgencyNotice, AgencyResponse, Outcome
from shared.kafka import kafka_client_options
from shared.settings import Settings
from shared.signing import PUBLIC_FILE, BadSignature, Signer, Verifier
from shared.topics import AGENCY_ACKS, agency_topic

log = logging.getLogger("tipline.agency")


def public_keyring(settings: Settings) -> Path:
    path = settings.tipline_keys_dir / PUBLIC_FILE
    if not path.exists():
        raise FileNotFoundError(f"no tipline public keys at {path}: set TIPLINE_KEYS_DIR")
    return path


class Received:
    """The notices an agency has taken: their ids, and which reports it holds a correction for.
    Kept in `<data_dir>/notices.sqlite3` (mode 0600: it names reports), or in memory without a
    data dir. A notice is written once the caller has taken it, before its offset is committed,
    so one taken is never handed over again, restart or not."""

    FILE = "notices.sqlite3"

    def __init__(self, data_dir: Path | None) -> None:
        if data_dir is None:
            path = ":memory:"
        else:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = str(data_dir / self.FILE)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # made private first
        self._db = sqlite3.connect(path)
        self._db.execute("CREATE TABLE IF NOT EXISTS notices (notice_id TEXT PRIMARY KEY, "
                         "report_id TEXT NOT NULL, kind TEXT NOT NULL, taken_at TEXT NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS by_report ON notices (report_id, kind)")
        self._db.commit()

    def __contains__(self, notice_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM notices WHERE notice_id = ?",
                                (notice_id,)).fetchone() is not None

    def corrected(self, report_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM notices WHERE report_id = ? AND kind = ?",
                                (report_id, "correction")).fetchone() is not None

    def add(self, notice: AgencyNotice) -> None:
        with self._db:  # a transaction, committed (on disk) when it ends
            self._db.execute("INSERT OR IGNORE INTO notices VALUES (?, ?, ?, ?)", (
                notice.notice_id, notice.report_id, notice.kind,
                datetime.now(UTC).isoformat()))

    def close(self) -> None:
        self._db.close()


class AgencyClient:
    def __init__(
        self,
        settings: Settings,
        agency_id: str,
        group_id: str | None = None,
        *,
        verifier: Verifier | None = None,
        auto_ack: bool = True,
        signer: Signer | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.agency_id = agency_id
        self.auto_ack = auto_ack
        self.signer = signer  # signs acks and outcomes with the agency's own registered key
        self.verifier = verifier or Verifier(public_keyring(settings))
        self.seen = Received(data_dir)  # in memory without a data dir
        self.duplicates = 0
        self.refused: list[tuple[Any, str]] = []
        self._consumer = AIOKafkaConsumer(
            agency_topic(agency_id),
            **kafka_client_options(settings),
            group_id=group_id or f"agency-{agency_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            # A notice of a transaction its sender never committed (killed mid-batch) is never
            # handed over: the copy that replaces the sender sends it again, once.
            isolation_level="read_committed",
            max_partition_fetch_bytes=settings.kafka_max_message_bytes,
        )
        self._producer = AIOKafkaProducer(
            **kafka_client_options(settings), acks="all",
            linger_ms=settings.kafka_linger_ms,
        )

    async def start(self) -> None:
        await self._producer.start()
        await self._consumer.start()

    @contextlib.asynccontextmanager
    async def sending_only(self) -> AsyncIterator[None]:
        """Acks and outcomes only: the producer, without joining the consumer group."""
        await self._producer.start()
        try:
            yield
        finally:
            await self._producer.stop()

    async def ready(self, timeout: float = 30.0) -> None:
        """Wait until this client has joined its group and holds its partitions."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._consumer.assignment():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"agency {self.agency_id}: no partitions after {timeout}s")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await self._consumer.stop()
        await self._producer.stop()
        self.seen.close()

    async def collect(self, into: list[AgencyNotice]) -> None:
        """Start, append each notice to `into` until cancelled, then stop."""
        await self.start()
        try:
            async for notice in self.notices():
                into.append(notice)
        finally:
            await self.stop()

    async def notices(self) -> AsyncIterator[AgencyNotice]:
        """Each genuine notice once, in the order the agency's partitions hold them."""
        async for record in self._consumer:
            notice = self._accept(record.value)
            if notice is not None and notice.notice_id in self.seen:
                self.duplicates += 1
                if self.auto_ack:
                    await self.ack(notice)
            elif notice is not None and notice.kind == "referral" and self.seen.corrected(
                    notice.report_id):
                # Genuine, and stale: the report was retracted since (a replay, or a referral
                # that lost its way). Handing it over would revive what was withdrawn.
                self._refuse(record.value, f"a referral of report {notice.report_id}, which "
                                           "this agency holds a correction for (retracted)")
            elif notice is not None:
                yield notice
                self.seen.add(notice)  # taken: never handed over again
                if self.auto_ack:
                    await self.ack(notice)
            await self._consumer.commit()

    async def ack(self, notice: AgencyNotice) -> None:
        await self.acknowledge(notice.report_id, notice.notice_id)

    async def acknowledge(self, report_id: str, notice_id: str) -> None:
        await self._respond(AgencyResponse(
            response_id=str(uuid.uuid4()), agency_id=self.agency_id, report_id=report_id,
            kind="ack", notice_id=notice_id, text=None,
        ))

    async def outcome(self, report_id: str, outcome: Outcome, text: str | None = None) -> None:
        """Tell tipline what became of a referral; it shows in the report's timeline."""
        await self._respond(AgencyResponse(
            response_id=str(uuid.uuid4()), agency_id=self.agency_id, report_id=report_id,
            kind="outcome", outcome=outcome, text=text,
        ))

    async def _respond(self, response: AgencyResponse) -> None:
        document = response.model_dump(mode="json")
        if self.signer is not None:
            document = self.signer.sign(document)
        await self._producer.send_and_wait(
            AGENCY_ACKS, json.dumps(document).encode(), key=response.report_id.encode()
        )

    def _accept(self, value: bytes | None) -> AgencyNotice | None:
        try:
            document = json.loads(value or b"")
            key_id = self.verifier.verify(document)
            notice = AgencyNotice.model_validate(document)
        except BadSignature as exc:
            self._refuse(value, f"bad signature: {exc}")
            return None
        except (ValueError, ValidationError, AttributeError) as exc:
            self._refuse(value, f"not a notice: {exc}")
            return None
        if notice.agency_id != self.agency_id:
            self._refuse(value, f"addressed to {notice.agency_id}")
            return None
        log.debug("notice %s verified with key %s", notice.notice_id, key_id)
        return notice

    def _refuse(self, value: bytes | None, reason: str) -> None:
        self.refused.append((value, reason))
        log.error("REFUSED a notice on %s: %s", agency_topic(self.agency_id), reason)
