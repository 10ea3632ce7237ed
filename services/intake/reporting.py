"""Intake's reporting core: one id scheme, one ownership check, one status view, for both front
doors (`/ispws`, CyberTipline-compatible, and `/v1`, JSON).

Each step checks what NCMEC answers at once (schema and rules before this, the report's state
here), is accepted durably (state and event together, `services/intake/drafts.py`), and is
answered once its event is published, or safe in the outbox when the broker is away. Refusals
are `Answer`s with the CyberTipline response codes; the `/v1` adapter turns them into JSON.
"""

import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Tracer
from pydantic import BaseModel
from redis.exceptions import RedisError

from services.intake.abandonment import Abandonment
from services.intake.answers import Answer, Code, Done
from services.intake.drafts import Drafts, Pending
from services.intake.files import FileStore, Received
from services.intake.ids import ReportIds, is_report_id
from services.intake.lifecycle import (
    AddFile,
    AddInformation,
    Command,
    DescribeFile,
    DraftState,
    Finish,
    Mode,
    Refusal,
    Retract,
)
from services.intake.mapping import with_details
from services.intake.outbox import Outbox
from services.intake.timeline import Timeline, retraction_of
from shared import topics
from shared.audiences import Kind, esp_status, esp_timeline
from shared.contracts import (
    PUBLIC_FORM,
    FileInfo,
    InformationAdded,
    Report,
    ReportDraftChanged,
    ReporterContact,
    ReportSubmitted,
    RetractReport,
    derived_id,
)
from shared.rules import check_batched, check_file_details, check_submission
from shared.settings import Settings
from shared.store import REDIS_UNAVAILABLE, Store

# Why a step was refused, by the state the report was in.
REFUSED: dict[str, Code] = {
    Refusal.MISSING: Code.REPORT_DOES_NOT_EXIST,
    DraftState.FINISHED: Code.ALREADY_FINISHED,
    DraftState.RETRACTED: Code.ALREADY_RETRACTED,
    DraftState.ABANDONED: Code.ABANDONED,
    Refusal.EXPIRED: Code.ABANDONED,
}
# Room for the headers and the envelope beside an event's JSON in one Kafka message.
MESSAGE_OVERHEAD = 16 * 1024


def _epoch(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def submitted_id(report_id: str) -> str:
    return derived_id(report_id, "submitted")


def retract_id(report_id: str) -> str:
    return derived_id(report_id, "retract", "esp")


@dataclass
class Reporting:
    redis: Store
    timeline: Timeline
    drafts: Drafts
    outbox: Outbox
    abandonment: Abandonment
    ids: ReportIds
    store: FileStore
    settings: Settings
    tracer: Tracer

    # --- reading -------------------------------------------------------------------------

    async def owned(self, report_id: str, esp_id: str) -> dict[str, str]:
        """The report's draft when this ESP owns it; any other ESP's report does not exist."""
        if not is_report_id(report_id):
            raise Answer(Code.REPORT_DOES_NOT_EXIST, f"no report {report_id[:40]}")
        draft = await self.drafts.get(report_id)
        if draft.get("esp_id") != esp_id:
            raise Answer(Code.REPORT_DOES_NOT_EXIST, f"no report {report_id}")
        return draft

    async def files(self, report_id: str) -> list[FileInfo]:
        latest: dict[str, FileInfo] = {}
        for entry in await self.drafts.files(report_id):  # later entries (details) replace
            info = FileInfo.model_validate_json(entry)
            latest[info.file_id] = info
        return list(latest.values())

    async def report(self, report_id: str, draft: dict[str, str]) -> Report:
        report = Report.model_validate_json(draft["report"])
        return report.model_copy(update={"files": await self.files(report_id)})

    async def status(self, esp_id: str, report_id: str) -> dict[str, Any]:
        """What an ESP may see of its report (shared/audiences.py): its state, its status in
        NCMEC's words, its files, its retraction, and its timeline as it is told it."""
        draft = await self.owned(report_id, esp_id)
        fields = await self.timeline.fields(report_id)
        entries = esp_timeline(await self.timeline.entries(report_id))
        out: dict[str, Any] = {
            "report_id": report_id,
            "state": draft["state"],
            "status": esp_status(fields.get("status"), draft["state"] == DraftState.OPEN),
            "updated_at": entries[-1]["at"] if entries else None,
            "supersedes": draft.get("supersedes") or None,
            "superseded_by": fields.get("superseded_by") or None,
            "files": [f.model_dump(mode="json", exclude_none=True)
                      for f in await self.files(report_id)],
            "retraction": retraction_of(entries),
            "timeline": entries,
        }
        if draft["state"] == DraftState.OPEN:
            deadline = self.drafts.deadline(float(draft["opened_at"]), float(draft["changed_at"]))
            out["abandoned_after"] = _epoch(deadline).isoformat()
        return out

    # --- the steps -----------------------------------------------------------------------

    def _pending(self, event_id: str, topic: str, event: BaseModel, what: Kind,
                 status: str | None = None, **detail: Any) -> Pending:
        value = event.model_dump_json()
        if len(value) + MESSAGE_OVERHEAD > self.settings.kafka_max_message_bytes:
            raise Answer(Code.INVALID_REQUEST, "the report is larger than the pipeline takes "
                         f"({self.settings.kafka_max_message_bytes} bytes)", http_status=413)
        return Pending(event_id, topic, value, what, status, detail)

    async def _accept(self, report_id: str, pending: Pending, command: Command) -> None:
        """Take a command that stores `pending`, then deliver it; a refusal is an Answer."""
        outcome = "ok"

        async def run() -> bool:
            nonlocal outcome
            result = await self.drafts.step(report_id, command, time.time(), pending)
            outcome = result.outcome
            if result.ok and result.deadline and command.rule.mode is Mode.TOUCH:
                # Accepted now, whatever happens next; a deadline not moved on heals itself
                # (the sweep asks the draft, which knows the later one).
                with contextlib.suppress(RedisError, *REDIS_UNAVAILABLE):
                    await self.abandonment.watch(report_id, result.deadline)
            return result.ok

        if not await self.outbox.accept(report_id, pending, run):
            raise Answer(REFUSED.get(outcome, Code.INVALID_REQUEST), report_id=report_id)
        await self.outbox.deliver(report_id, pending)

    async def _supersedes(self, esp_id: str, supersedes: str | None) -> None:
        if supersedes is None:
            return
        try:
            await self.owned(supersedes, esp_id)
        except Answer:
            raise Answer(Code.REPORT_DOES_NOT_EXIST,
                         f"the superseded report {supersedes[:40]} does not exist") from None

    async def _create(self, esp_id: str, state: DraftState, make: Any,
                      reserved: str | None = None, **fields: str) -> str:
        """A new report in `state`, with the event `make(report_id, at)` accepted; its id.

        `reserved` is an id drawn earlier for this creation (an Idempotency-Key's): when a run
        before this one made it already (its `idempotency` field says so), that report is the
        answer, and its event, if still waiting, goes out now. (Were the reserved id taken by
        another intake copy's report, a new one is drawn and that promise is lost: the copies'
        random node numbers make it all but impossible.)"""
        at = time.time()
        for attempt in range(16):  # another intake copy took this id: draw the next one
            report_id = reserved if reserved and attempt == 0 else self.ids.next()
            pending = make(report_id, at)
            if state is DraftState.OPEN:  # watched first: an open report is never left unwatched
                await self.abandonment.watch(report_id, self.drafts.deadline(at, at))
            create = partial(self.drafts.create, report_id, esp_id, at, state, pending, **fields)
            if await self.outbox.accept(report_id, pending, create):
                trace.get_current_span().set_attribute("report.id", report_id)
                if state is DraftState.OPEN:
                    # And again once made: a creation that waited (its shard restarting) past
                    # that deadline may have been swept meanwhile, and the timer forgets a
                    # report it finds no draft of.
                    with contextlib.suppress(RedisError, *REDIS_UNAVAILABLE):
                        await self.abandonment.watch(report_id, self.drafts.deadline(at, at))
                await self.outbox.deliver(report_id, pending)
                return report_id
            if report_id == reserved and fields.get("idempotency"):
                draft = await self.drafts.get(report_id)
                if (draft.get("esp_id"), draft.get("idempotency")) == (
                        esp_id, fields["idempotency"]):
                    await self.outbox.deliver_pending(report_id, pending.event_id)
                    return report_id
        raise RuntimeError("no free report id after 16 draws")

    async def submit(self, esp_id: str, report: Report, supersedes: str | None,
                     reserved: str | None = None, idempotency: str = "") -> str:
        """/v1: a whole report, finished from the start; with `reserved` and `idempotency` (the
        Idempotency-Key's id and claim), every run under one key makes one report."""
        await self._supersedes(esp_id, supersedes)

        def make(report_id: str, at: float) -> Pending:
            event = ReportSubmitted(event_id=submitted_id(report_id), report_id=report_id,
                                    esp_id=esp_id, report=report, supersedes=supersedes)
            return self._pending(event.event_id, topics.REPORTS_SUBMITTED, event, Kind.SUBMITTED,
                                 "submitted", via="v1", supersedes=supersedes)

        with self.tracer.start_as_current_span("intake submit"):
            return await self._create(esp_id, DraftState.FINISHED, make, reserved,
                                      report=report.model_dump_json(),
                                      supersedes=supersedes or "", via="v1",
                                      idempotency=idempotency)

    async def file_public(self, report: Report, contact: ReporterContact | None, receipt: str,
                          reserved: str, slot: str) -> str:
        """The public form (services/intake/public.py): a whole report from the public, finished
        from the start, its reporter's contact details in its event only (never kept here once
        sent); `receipt` the hash of its code. Every run under one form (`slot`, the form's
        token) makes one report: `reserved`, as `submit`."""
        def make(report_id: str, at: float) -> Pending:
            event = ReportSubmitted(event_id=submitted_id(report_id), report_id=report_id,
                                    esp_id=PUBLIC_FORM, report=report, source="public",
                                    contact=contact)
            return self._pending(event.event_id, topics.REPORTS_SUBMITTED, event, Kind.SUBMITTED,
                                 "submitted", via="public")

        with self.tracer.start_as_current_span("public submit"):
            return await self._create(PUBLIC_FORM, DraftState.FINISHED, make, reserved,
                                      report=report.model_dump_json(), via="public",
                                      source="public", receipt=receipt, idempotency=slot)

    async def add_information(self, report_id: str, text: str, event_id: str) -> None:
        """A public reporter adds to their report (its receipt checked by the caller); the same
        `event_id` again (a resend) is the same addition."""
        event = InformationAdded(event_id=event_id, report_id=report_id, text=text)
        pending = self._pending(event_id, topics.REPORTS_ADDITIONS, event,
                                Kind.INFORMATION_ADDED)
        with self.tracer.start_as_current_span("public add", attributes={"report.id": report_id}):
            await self._accept(report_id, pending, AddInformation())

    async def open(self, esp_id: str, report: Report, supersedes: str | None,
                   reserved: str | None = None, idempotency: str = "") -> Answer:
        """/ispws submit: a report opened, to be completed with files and finished; with
        `reserved` and `idempotency` (as `submit`), every run under one key opens one report."""
        if errors := check_submission(report):
            raise Answer(Code.VALIDATION_FAILED, errors=errors)
        await self._supersedes(esp_id, supersedes)

        def make(report_id: str, at: float) -> Pending:
            event = ReportDraftChanged(
                event_id=derived_id(report_id, "opened"), report_id=report_id, esp_id=esp_id,
                change="opened", opened_at=_epoch(at), supersedes=supersedes)
            return self._pending(event.event_id, topics.REPORTS_DRAFTS, event, Kind.OPENED,
                                 supersedes=supersedes, via="ispws")

        with self.tracer.start_as_current_span("ispws open"):
            report_id = await self._create(esp_id, DraftState.OPEN, make, reserved,
                                           report=report.model_dump_json(),
                                           supersedes=supersedes or "", via="ispws",
                                           idempotency=idempotency)
        return Answer(Code.SUCCESS, report_id=report_id)

    def _changed(self, report_id: str, esp_id: str, draft: dict[str, str], change: str,
                 file: FileInfo) -> Pending:
        event = ReportDraftChanged(
            event_id=derived_id(report_id, change, file.file_id), report_id=report_id,
            esp_id=esp_id, change=change,  # type: ignore[arg-type]
            opened_at=_epoch(float(draft["opened_at"])), file=file)
        detail = file.model_dump(mode="json", exclude={"details"}, exclude_none=True)
        return self._pending(event.event_id, topics.REPORTS_DRAFTS, event, Kind(change),
                             **detail)

    async def may_upload(self, esp_id: str, report_id: str) -> dict[str, str]:
        """Checked before a file is kept (and before it streams, when the form names the report
        first): the ESP's open report, or the Answer refusing it."""
        draft = await self.owned(report_id, esp_id)
        if not AddFile.rule.allows(draft["state"]):
            raise Answer(REFUSED.get(draft["state"], Code.INVALID_REQUEST), report_id=report_id)
        return draft

    async def add_file(self, esp_id: str, report_id: str, received: Received) -> Answer:
        draft = await self.may_upload(esp_id, report_id)
        stored = self.store.keep(received)  # content-addressed: the same bytes, one copy
        file_id = received.file_id
        # The same content twice in one report: answered as usual, stored once, flagged.
        contents = f"tipline:{{{report_id}}}:contents"
        first = await self.redis.hget(contents, stored.sha256)
        file = FileInfo(file_id=file_id, sha256=stored.sha256, md5=stored.md5, size=stored.size,
                        original_name=received.filename,
                        duplicate_of=str(first) if first is not None else None)
        pending = self._changed(report_id, esp_id, draft, "file uploaded", file)
        with self.tracer.start_as_current_span("ispws upload", attributes={"report.id": report_id}):
            await self._accept(report_id, pending, AddFile(file.model_dump_json()))
        # Accepted: a 503 now would have the ESP send the file again. The note only flags a
        # later copy of the same content as a duplicate.
        with contextlib.suppress(RedisError, *REDIS_UNAVAILABLE):
            await self.redis.hsetnx(contents, stored.sha256, file_id)
        return Answer(Code.SUCCESS, report_id=report_id, file_id=file_id, hash=stored.md5)

    async def describe_file(self, esp_id: str, data: dict[str, Any]) -> Answer:
        report_id, file_id = str(data.get("reportId", "")), str(data.get("fileId", ""))
        draft = await self.owned(report_id, esp_id)
        if not DescribeFile.rule.allows(draft["state"]):
            raise Answer(REFUSED.get(draft["state"], Code.INVALID_REQUEST), report_id=report_id)
        file = next((f for f in await self.files(report_id) if f.file_id == file_id), None)
        if file is None:
            raise Answer(Code.FILE_DOES_NOT_EXIST, f"no file {file_id[:40]} in report {report_id}",
                         report_id=report_id)
        if errors := check_file_details(data):
            raise Answer(Code.VALIDATION_FAILED, errors=errors, report_id=report_id)
        described = with_details(file, {k: v for k, v in data.items()
                                        if k not in ("reportId", "fileId")})
        pending = self._changed(report_id, esp_id, draft, "file described", described)
        try:
            await self._accept(report_id, pending,
                               DescribeFile(file_id, described.model_dump_json()))
        except Answer as refused:
            if refused.code is not Code.INVALID_REQUEST:
                raise
            # Described before: if that call's event is still pending, this retry completes it.
            if await self.outbox.deliver_pending(report_id, pending.event_id) is None:
                raise Answer(Code.INVALID_REQUEST, "file details were already sent for this file",
                             report_id=report_id, file_id=file_id, http_status=409) from None
        return Answer(Code.SUCCESS, report_id=report_id, file_id=file_id)

    async def finish(self, esp_id: str, report_id: str) -> Done:
        draft = await self.owned(report_id, esp_id)
        report = await self.report(report_id, draft)
        if draft["state"] == DraftState.OPEN and (errors := check_batched(report)):
            raise Answer(Code.VALIDATION_FAILED, errors=errors, report_id=report_id)
        supersedes = draft.get("supersedes") or None
        event = ReportSubmitted(event_id=submitted_id(report_id), report_id=report_id,
                                esp_id=esp_id, report=report, supersedes=supersedes)
        file_ids = [f.file_id for f in report.files]
        pending = self._pending(event.event_id, topics.REPORTS_SUBMITTED, event, Kind.FINISHED,
                                "submitted", files=file_ids)
        with self.tracer.start_as_current_span("ispws finish", attributes={"report.id": report_id}):
            try:
                await self._accept(report_id, pending, Finish())
            except Answer as refused:
                # Finished by an earlier call whose answer was lost: its event may be pending.
                if (refused.code is not Code.ALREADY_FINISHED or draft.get("via") == "v1"
                        or await self.outbox.deliver_pending(report_id, event.event_id) is None):
                    raise
        return Done(report_id, file_ids)

    async def retract(self, esp_id: str, report_id: str, reason: str | None) -> Answer:
        draft = await self.owned(report_id, esp_id)
        post_finish = draft["state"] == DraftState.FINISHED
        why = reason or ("the report proved erroneous" if post_finish else "cancelled by the ESP")
        command = RetractReport(
            command_id=retract_id(report_id), report_id=report_id, requested_by="esp",
            actor=esp_id, reason=f"post-finish retraction: {why}" if post_finish else why,
        )
        pending = self._pending(command.command_id, topics.RETRACTIONS_REQUESTED, command,
                                Kind.RETRACTION_REQUESTED, by=esp_id, post_finish=post_finish,
                                reason=command.reason)
        span = {"report.id": report_id}
        with self.tracer.start_as_current_span("ispws retract", attributes=span):
            try:
                await self._accept(report_id, pending,
                                   Retract(strict=self.settings.tipline_strict_compat))
            except Answer as refused:
                if (refused.code is not Code.ALREADY_RETRACTED
                        or await self.outbox.deliver_pending(report_id, command.command_id)
                        is None):
                    raise
        return Answer(Code.SUCCESS, "post-finish retraction accepted" if post_finish else "",
                      report_id=report_id)

