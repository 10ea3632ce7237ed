"""The /ispws operations: open a report, add files and their details, finish, retract.

Each operation checks what NCMEC answers at once (schema, the rules module, the report's state),
records the fact in the timeline, publishes it, and returns only after the broker acknowledged the
event (acks=all). The report's state lives in shared/drafts.py; its draft (the document and the
files) in Redis beside it.
"""

import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from faststream.kafka import KafkaBroker
from opentelemetry.trace import Tracer
from redis.asyncio import Redis

from services.intake.answers import Answer, Code, Done
from services.intake.files import FileStore, Stored
from services.intake.mapping import report_from, with_details
from shared import topics
from shared.contracts import (
    FieldError,
    FileInfo,
    Report,
    ReportDraftChanged,
    ReportSubmitted,
    RetractReport,
    derived_id,
)
from shared.drafts import Drafts
from shared.ledger import Ledger
from shared.rules import check_batched, check_file_details, check_submission
from shared.settings import Settings
from shared.timeline import Timeline

# Why a step was refused, by the state the report was in.
REFUSED = {
    "missing": Code.REPORT_DOES_NOT_EXIST,
    "finished": Code.ALREADY_FINISHED,
    "retracted": Code.ALREADY_RETRACTED,
    "abandoned": Code.ABANDONED,
    "expired": Code.ABANDONED,
}


def _epoch(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


@dataclass
class Reporting:
    broker: KafkaBroker
    redis: Redis
    timeline: Timeline
    ledger: Ledger
    drafts: Drafts
    store: FileStore
    settings: Settings
    tracer: Tracer

    @staticmethod
    def _files_key(report_id: str) -> str:
        return f"tipline:{{{report_id}}}:files"

    # --- reading -------------------------------------------------------------------------

    async def owned(self, report_id: str, esp_id: str) -> dict[str, str]:
        """The report's draft when this ESP owns it; any other ESP's report does not exist."""
        if not (report_id.isascii() and report_id.isdigit()) or len(report_id) > 18:
            raise Answer(Code.REPORT_DOES_NOT_EXIST, f"no report {report_id[:40]}")
        draft = await self.drafts.get(report_id)
        owner = draft.get("esp_id") or (await self.timeline.fields(report_id)).get("esp_id")
        if owner != esp_id:
            raise Answer(Code.REPORT_DOES_NOT_EXIST, f"no report {report_id}")
        return draft

    async def files(self, report_id: str) -> list[FileInfo]:
        raw = await self.redis.lrange(self._files_key(report_id), 0, -1)
        latest: dict[str, FileInfo] = {}
        for entry in raw:  # later entries (with details) replace earlier ones, order kept
            info = FileInfo.model_validate_json(entry)
            latest[info.file_id] = info
        return list(latest.values())

    async def report(self, report_id: str, draft: dict[str, str]) -> Report:
        report = Report.model_validate_json(draft["report"])
        return report.model_copy(update={"files": await self.files(report_id)})

    def _refused(self, outcome: str, report_id: str) -> Answer:
        return Answer(REFUSED.get(outcome, Code.INVALID_REQUEST), report_id=report_id)

    # --- the steps -----------------------------------------------------------------------

    async def open(self, esp_id: str, data: dict[str, Any], supersedes: str | None) -> Answer:
        try:
            report = report_from(data)
        except ValueError as exc:
            raise Answer(Code.VALIDATION_FAILED, errors=[FieldError(
                path="incidentSummary/incidentDateTime", reason=f"is not a usable date: {exc}"
            )]) from None
        if errors := check_submission(report):
            raise Answer(Code.VALIDATION_FAILED, errors=errors)
        if supersedes is not None:
            try:
                await self.owned(supersedes, esp_id)
            except Answer:
                raise Answer(Code.REPORT_DOES_NOT_EXIST,
                              f"the superseded report {supersedes[:40]} does not exist") from None
        report_id = str(await self.redis.incr("tipline:report-seq"))
        at = time.time()
        with self.tracer.start_as_current_span("ispws open", attributes={"report.id": report_id}):
            event = ReportDraftChanged(
                event_id=derived_id(report_id, "opened"), report_id=report_id, esp_id=esp_id,
                change="opened", opened_at=_epoch(at), supersedes=supersedes,
            )
            # The event first: a draft that exists is always watched by the abandonment timer
            # (an event without a draft, if Redis fails next, is dropped by the timer).
            await self.broker.publish(event, topics.REPORTS_DRAFTS, key=report_id.encode())
            await self.drafts.open(report_id, esp_id, at, report=report.model_dump_json(),
                                   supersedes=supersedes or "")
            await self.timeline.set_fields(report_id, esp_id=esp_id)
            await self.timeline.record(report_id, event.event_id, "opened",
                                       supersedes=supersedes, via="ispws")
        return Answer(Code.SUCCESS, report_id=report_id)

    async def _change(self, report_id: str, esp_id: str, draft: dict[str, str],
                      change: str, file: FileInfo) -> None:
        event = ReportDraftChanged(
            event_id=derived_id(report_id, change, file.file_id), report_id=report_id,
            esp_id=esp_id, change=change,  # type: ignore[arg-type]
            opened_at=_epoch(float(draft["opened_at"])), file=file,
        )
        # Published before it counts anywhere: a step the broker did not take is not in the
        # report, so the ESP's retry is the only copy.
        await self.broker.publish(event, topics.REPORTS_DRAFTS, key=report_id.encode())
        await self.redis.rpush(self._files_key(report_id), file.model_dump_json())
        detail = file.model_dump(mode="json", exclude={"details"}, exclude_none=True)
        await self.timeline.record(report_id, event.event_id, change, **detail)

    async def add_file(self, esp_id: str, report_id: str, stored: Stored,
                       filename: str | None) -> Answer:
        draft = await self.owned(report_id, esp_id)
        if not draft:  # a /v1 report: submitted whole, finished from the start
            raise Answer(Code.ALREADY_FINISHED, report_id=report_id)
        step = await self.drafts.step(report_id, time.time(), touch=True)
        if step.outcome != "ok":
            raise self._refused(step.outcome, report_id)
        file_id = secrets.token_hex(16)
        # The same content twice in one report: answered as usual, stored once, flagged.
        first = await self.redis.hsetnx(f"tipline:{{{report_id}}}:contents", stored.sha256,
                                        file_id)
        duplicate_of = None if first else str(await self.redis.hget(
            f"tipline:{{{report_id}}}:contents", stored.sha256))
        file = FileInfo(file_id=file_id, sha256=stored.sha256, md5=stored.md5, size=stored.size,
                        original_name=filename, duplicate_of=duplicate_of)
        with self.tracer.start_as_current_span("ispws upload", attributes={"report.id": report_id}):
            try:
                await self._change(report_id, esp_id, draft, "file uploaded", file)
            except Exception:
                if first:
                    await self.redis.hdel(f"tipline:{{{report_id}}}:contents", stored.sha256)
                raise
        return Answer(Code.SUCCESS, report_id=report_id, file_id=file_id, hash=stored.md5)

    async def describe_file(self, esp_id: str, data: dict[str, Any]) -> Answer:
        report_id, file_id = str(data.get("reportId", "")), str(data.get("fileId", ""))
        draft = await self.owned(report_id, esp_id)
        if not draft:
            raise Answer(Code.ALREADY_FINISHED, report_id=report_id)
        file = next((f for f in await self.files(report_id) if f.file_id == file_id), None)
        if file is None:
            raise Answer(Code.FILE_DOES_NOT_EXIST, f"no file {file_id[:40]} in report {report_id}",
                         report_id=report_id)
        if errors := check_file_details(data):
            raise Answer(Code.VALIDATION_FAILED, errors=errors, report_id=report_id)
        step = await self.drafts.step(report_id, time.time(), touch=True)
        if step.outcome != "ok":
            raise self._refused(step.outcome, report_id)
        if not await self.redis.sadd(f"tipline:{{{report_id}}}:described", file_id):
            raise Answer(Code.INVALID_REQUEST, "file details were already sent for this file",
                         report_id=report_id, file_id=file_id, http_status=409)
        details = {k: v for k, v in data.items() if k not in ("reportId", "fileId")}
        described = with_details(file, details)
        try:
            await self._change(report_id, esp_id, draft, "file described", described)
        except Exception:
            await self.redis.srem(f"tipline:{{{report_id}}}:described", file_id)
            raise
        return Answer(Code.SUCCESS, report_id=report_id, file_id=file_id)

    async def finish(self, esp_id: str, report_id: str) -> Done:
        draft = await self.owned(report_id, esp_id)
        if not draft:  # a /v1 report: submitted whole, finished from the start
            raise Answer(Code.ALREADY_FINISHED, report_id=report_id)
        report = await self.report(report_id, draft)
        if draft.get("state") == "open" and (errors := check_batched(report)):
            raise Answer(Code.VALIDATION_FAILED, errors=errors, report_id=report_id)
        step = await self.drafts.step(report_id, time.time(), to="finished")
        if step.outcome != "ok":
            raise self._refused(step.outcome, report_id)
        supersedes = draft.get("supersedes") or None
        event = ReportSubmitted(
            event_id=derived_id(report_id, "submitted"), report_id=report_id, esp_id=esp_id,
            report=report, supersedes=supersedes,
        )
        file_ids = [f.file_id for f in report.files]
        with self.tracer.start_as_current_span("ispws finish", attributes={"report.id": report_id}):
            await self.timeline.record(report_id, event.event_id, "finished", status="submitted",
                                       files=file_ids)
            try:
                await self.broker.publish(event, topics.REPORTS_SUBMITTED, key=report_id.encode())
            except Exception:
                # Not accepted after all: the ESP may finish again.
                await self.drafts.step(report_id, time.time(), allowed=("finished",), to="open")
                raise
        return Done(report_id, file_ids)

    async def retract(self, esp_id: str, report_id: str, reason: str | None) -> Answer:
        draft = await self.owned(report_id, esp_id)
        if not draft:  # a /v1 report: it has no draft, it was submitted whole
            draft = {"state": "finished"}
            await self.drafts.open(report_id, esp_id, time.time())
            await self.drafts.step(report_id, time.time(), to="finished")
        before = draft.get("state", "missing")
        allowed = ("open",) if self.settings.tipline_strict_compat else ("open", "finished")
        step = await self.drafts.step(
            report_id, time.time(), allowed=allowed if before in allowed else (), to="retracted"
        )
        if step.outcome != "ok":
            raise self._refused(step.outcome, report_id)
        post_finish = before == "finished"
        why = reason or ("the report proved erroneous" if post_finish else "cancelled by the ESP")
        command = RetractReport(
            command_id=derived_id(report_id, "retract", "esp"), report_id=report_id,
            requested_by="esp", actor=esp_id,
            reason=f"post-finish retraction: {why}" if post_finish else why,
        )
        with self.tracer.start_as_current_span("ispws retract",
                                               attributes={"report.id": report_id}):
            await self.timeline.record(
                report_id, derived_id(report_id, "retraction requested"), "retraction requested",
                by=esp_id, post_finish=post_finish, reason=command.reason,
            )
            try:
                await self.broker.publish(command, topics.RETRACTIONS_REQUESTED,
                                          key=report_id.encode())
            except Exception:
                await self.drafts.step(report_id, time.time(), allowed=("retracted",), to=before)
                raise
        return Answer(Code.SUCCESS, "post-finish retraction accepted" if post_finish else "",
                      report_id=report_id)

    async def status(self, esp_id: str, report_id: str) -> dict[str, Any]:
        draft = await self.owned(report_id, esp_id)
        fields = await self.timeline.fields(report_id)
        out: dict[str, Any] = {
            "report_id": report_id,
            "state": draft.get("state", "finished"),
            "status": fields.get("status", "open" if draft.get("state") == "open" else "submitted"),
            "updated_at": fields.get("updated_at"),
            "supersedes": draft.get("supersedes") or None,
            "superseded_by": fields.get("superseded_by") or None,
            "files": [f.model_dump(mode="json", exclude_none=True)
                      for f in await self.files(report_id)],
            "agencies": await self.ledger.states(report_id),
            "retraction": await self.ledger.retraction(report_id),
            # Facts about other ESPs' reports are for analysts, not for this ESP.
            "timeline": [e for e in await self.timeline.entries(report_id)
                         if e.get("esp_visible", True)],
        }
        if draft.get("state") == "open":
            deadline = self.drafts.deadline(float(draft["opened_at"]), float(draft["changed_at"]))
            out["abandoned_after"] = _epoch(deadline).isoformat()
        return out


def report_json(data: Any) -> str:
    return json.dumps(data, default=str)
