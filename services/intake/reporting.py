"""Intake's reporting core: the steps of a report for every door (`/ispws`, CyberTipline-
compatible; `/v1`, JSON; the public form), with one id scheme, one ownership check and one view
of a report, in the domain's words.

Each step checks what can be answered at once (the report rules and the report's state; a
document's schema is the door's), is accepted durably (its state change and its event stored
together), and is answered once its event is published, or safe in the outbox when the broker is
away. It answers an outcome (services/intake/outcomes.py): accepted, or refused with its reason,
which each door says in its own words. Where reports are kept is `Reports`: Redis in the service
(services/intake/reports.py), memory in the unit tests (tests/intake_memory.py), both running the
draft's machine (services/intake/lifecycle.py).
"""

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from opentelemetry import trace
from opentelemetry.trace import Tracer
from pydantic import BaseModel

from services.intake.drafts import Pending, Record
from services.intake.files import FileStore, Received
from services.intake.ids import ReportIds, is_report_id
from services.intake.lifecycle import (
    AddFile,
    AddInformation,
    Command,
    DescribeFile,
    DraftState,
    Finish,
    Refusal,
    Retract,
    Step,
)
from services.intake.mapping import with_details
from services.intake.outcomes import (
    Added,
    Entry,
    FileAdded,
    FileDescribed,
    Finished,
    Opened,
    Reason,
    Refused,
    ReportView,
    RetractionRequested,
    RetractionView,
    Submitted,
    refused_by,
)
from services.intake.receipts import code_hash, code_matches
from services.intake.timeline import History, retraction_of
from shared import topics
from shared.audiences import Kind, esp_status, esp_timeline
from shared.clock import Clock
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

# Room for the headers and the envelope beside an event's JSON in one Kafka message.
MESSAGE_OVERHEAD = 16 * 1024


class Reports(Protocol):
    """Where the core keeps its reports."""

    async def record(self, report_id: str) -> Record | None: ...

    async def files(self, report_id: str) -> list[FileInfo]:
        """The report's files, each as last described."""

    async def history(self, report_id: str) -> History: ...

    async def create(self, report_id: str, esp_id: str, at: float, state: DraftState,
                     pending: Pending, fields: Mapping[str, str]) -> bool:
        """A new report's draft with its first event, accepted and sent; False when the id is
        taken."""

    async def take(self, report_id: str, command: Command, at: float, pending: Pending) -> Step:
        """The draft's answer to `command`; once accepted, `pending` is stored and sent."""

    async def complete(self, report_id: str, event_id: str) -> bool:
        """Send an earlier step's event still waiting (a retry completes it); False when
        none waits."""

    async def first_copy(self, report_id: str, sha256: str) -> str | None:
        """The file of this report that first had this content, if one did."""

    async def note_copy(self, report_id: str, sha256: str, file_id: str) -> None:
        """Note a file's content for `first_copy`: best effort, never raises."""


class Reservation(NamedTuple):
    """What a run under an Idempotency-Key (or a public form's token) gets: the report id its
    first run reserved, and the key's slot. Every run under one key makes one report."""

    reserved: str | None
    slot: str


NO_RESERVATION = Reservation(None, "")


@dataclass(frozen=True)
class Policy:
    strict_compat: bool  # TIPLINE_STRICT_COMPAT: as NCMEC, no retraction after finish
    max_message_bytes: int  # the largest record the pipeline takes

    @classmethod
    def of(cls, settings: Settings) -> "Policy":
        return cls(settings.tipline_strict_compat, settings.kafka_max_message_bytes)


def _epoch(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def submitted_id(report_id: str) -> str:
    return derived_id(report_id, "submitted")


def retract_id(report_id: str) -> str:
    return derived_id(report_id, "retract", "esp")


@dataclass
class Reporting:
    reports: Reports
    files: FileStore
    ids: ReportIds
    policy: Policy
    tracer: Tracer
    clock: Clock = time.time

    # --- reading -------------------------------------------------------------------------

    async def _owned(self, esp_id: str, report_id: str) -> Record | Refused:
        """The report when this ESP filed it; any other's does not exist, as no report."""
        record = await self.reports.record(report_id) if is_report_id(report_id) else None
        if record is None or record.esp_id != esp_id:
            return Refused(Reason.NO_SUCH_REPORT, f"no report {report_id[:40]}")
        return record

    async def _report(self, record: Record) -> Report:
        report = Report.model_validate_json(record.report)
        return report.model_copy(update={"files": await self.reports.files(record.report_id)})

    async def status(self, esp_id: str, report_id: str) -> ReportView | Refused:
        record = await self._owned(esp_id, report_id)
        if isinstance(record, Refused):
            return record
        history = await self.reports.history(report_id)
        entries = esp_timeline(history.entries)
        retraction = retraction_of(entries)
        is_open = record.state is DraftState.OPEN
        return ReportView(
            report_id=report_id, state=record.state,
            status=esp_status(history.status, is_open),
            updated_at=entries[-1]["at"] if entries else None, supersedes=record.supersedes,
            superseded_by=history.superseded_by, files=await self.reports.files(report_id),
            retraction=RetractionView.model_validate(retraction) if retraction else None,
            timeline=[Entry.model_validate(e) for e in entries],
            abandoned_after=_epoch(record.deadline).isoformat() if is_open else None)

    # --- the steps -----------------------------------------------------------------------

    def _pending(self, event_id: str, topic: str, event: BaseModel, what: Kind,
                 status: str | None = None, **detail: Any) -> Pending | Refused:
        value = event.model_dump_json()
        if len(value) + MESSAGE_OVERHEAD > self.policy.max_message_bytes:
            return Refused(Reason.TOO_LARGE, "the report is larger than the pipeline takes "
                           f"({self.policy.max_message_bytes} bytes)")
        return Pending(event_id, topic, value, what, status, detail)

    async def _take(self, report_id: str, command: Command, pending: Pending) -> Step:
        return await self.reports.take(report_id, command, self.clock(), pending)

    async def _supersedes(self, esp_id: str, supersedes: str | None) -> Refused | None:
        if supersedes is None or not isinstance(await self._owned(esp_id, supersedes), Refused):
            return None
        return Refused(Reason.NO_SUCH_REPORT,
                       f"the superseded report {supersedes[:40]} does not exist")

    async def _create(self, esp_id: str, state: DraftState,
                      make: Callable[[str, float], Pending | Refused], reservation: Reservation,
                      **fields: str) -> Submitted | Refused:
        """A new report in `state`, with the event `make(report_id, at)` accepted.

        Under a reservation, the report is made with the id drawn for it: when a run before
        this one made it already (under the same slot), that report is the answer, and its
        event, if still waiting, goes out now. (Were the reserved id taken by another intake
        copy's report, a new one is drawn and that promise is lost: the copies' random node
        numbers make it all but impossible.)"""
        at = self.clock()
        fields["idempotency"] = reservation.slot
        for attempt in range(16):  # another intake copy took this id: draw the next one
            reserved = reservation.reserved if attempt == 0 else None
            report_id = reserved or self.ids.next()
            pending = make(report_id, at)
            if isinstance(pending, Refused):
                return pending
            if await self.reports.create(report_id, esp_id, at, state, pending, fields):
                trace.get_current_span().set_attribute("report.id", report_id)
                return Submitted(report_id, at)
            if reserved and reservation.slot:
                made = await self.reports.record(report_id)
                if made is not None and (made.esp_id, made.idempotency) == (esp_id,
                                                                              reservation.slot):
                    await self.reports.complete(report_id, pending.event_id)
                    return Submitted(report_id, made.opened_at)
        raise RuntimeError("no free report id after 16 draws")

    async def submit(self, esp_id: str, report: Report, supersedes: str | None,
                     reservation: Reservation = NO_RESERVATION) -> Submitted | Refused:
        """/v1: a whole report, finished from the start."""
        if refused := await self._supersedes(esp_id, supersedes):
            return refused

        def make(report_id: str, at: float) -> Pending | Refused:
            event = ReportSubmitted(event_id=submitted_id(report_id), report_id=report_id,
                                    esp_id=esp_id, report=report, supersedes=supersedes)
            return self._pending(event.event_id, topics.REPORTS_SUBMITTED, event, Kind.SUBMITTED,
                                 "submitted", via="v1", supersedes=supersedes)

        with self.tracer.start_as_current_span("intake submit"):
            return await self._create(esp_id, DraftState.FINISHED, make, reservation,
                                      report=report.model_dump_json(),
                                      supersedes=supersedes or "", via="v1")

    async def file_public(self, report: Report, contact: ReporterContact | None, code: str,
                          reservation: Reservation) -> Submitted | Refused:
        """The public form: a whole report from the public, finished from the start, its
        reporter's contact details in its event only (never kept here once sent), and only the
        hash of its receipt `code` kept. Every run under one form (the reservation's slot: the
        form's token) makes one report."""
        def make(report_id: str, at: float) -> Pending | Refused:
            event = ReportSubmitted(event_id=submitted_id(report_id), report_id=report_id,
                                    esp_id=PUBLIC_FORM, report=report, source="public",
                                    contact=contact)
            return self._pending(event.event_id, topics.REPORTS_SUBMITTED, event, Kind.SUBMITTED,
                                 "submitted", via="public")

        with self.tracer.start_as_current_span("public submit"):
            return await self._create(PUBLIC_FORM, DraftState.FINISHED, make, reservation,
                                      report=report.model_dump_json(), via="public",
                                      source="public", receipt=code_hash(code))

    async def add_information(self, report_id: str, code: str, text: str,
                              form: str) -> Added | Refused:
        """A public reporter adds to their report with its receipt `code`; the same text from
        the same `form` (its token's nonce) again, a resend, is the same addition."""
        record = await self.reports.record(report_id) if is_report_id(report_id) else None
        if record is None or record.via != "public" or not code_matches(code, record.receipt):
            # The same answer whether the report exists or not: a number alone tells nothing.
            return Refused(Reason.NO_SUCH_REPORT)
        digest = hashlib.sha256(text.encode()).hexdigest()
        event = InformationAdded(event_id=derived_id(report_id, "added", form, digest),
                                 report_id=report_id, text=text)
        pending = self._pending(event.event_id, topics.REPORTS_ADDITIONS, event,
                                Kind.INFORMATION_ADDED)
        if isinstance(pending, Refused):
            return pending
        with self.tracer.start_as_current_span("public add", attributes={"report.id": report_id}):
            step = await self._take(report_id, AddInformation(), pending)
        return Added(report_id) if step.ok else refused_by(step.outcome, report_id)

    async def open(self, esp_id: str, report: Report, supersedes: str | None,
                   reservation: Reservation = NO_RESERVATION) -> Opened | Refused:
        """/ispws submit: a report opened, to be completed with files and finished."""
        if errors := check_submission(report):
            return Refused(Reason.INVALID, errors=errors)
        if refused := await self._supersedes(esp_id, supersedes):
            return refused

        def make(report_id: str, at: float) -> Pending | Refused:
            event = ReportDraftChanged(
                event_id=derived_id(report_id, "opened"), report_id=report_id, esp_id=esp_id,
                change="opened", opened_at=_epoch(at), supersedes=supersedes)
            return self._pending(event.event_id, topics.REPORTS_DRAFTS, event, Kind.OPENED,
                                 supersedes=supersedes, via="ispws")

        with self.tracer.start_as_current_span("ispws open"):
            made = await self._create(esp_id, DraftState.OPEN, make, reservation,
                                      report=report.model_dump_json(),
                                      supersedes=supersedes or "", via="ispws")
        return made if isinstance(made, Refused) else Opened(made.report_id)

    def _changed(self, record: Record, change: str, file: FileInfo) -> Pending | Refused:
        report_id = record.report_id
        event = ReportDraftChanged(
            event_id=derived_id(report_id, change, file.file_id), report_id=report_id,
            esp_id=record.esp_id, change=change,  # type: ignore[arg-type]
            opened_at=_epoch(record.opened_at), file=file)
        detail = file.model_dump(mode="json", exclude={"details"}, exclude_none=True)
        return self._pending(event.event_id, topics.REPORTS_DRAFTS, event, Kind(change),
                             **detail)

    async def may_upload(self, esp_id: str, report_id: str) -> Record | Refused:
        """Asked before a file is kept (and before it streams, when the form names the report
        first): the ESP's open report, or why it may not add a file to it."""
        record = await self._owned(esp_id, report_id)
        if isinstance(record, Refused) or AddFile.rule.allows(record.state):
            return record
        return refused_by(record.state, report_id)

    async def add_file(self, esp_id: str, report_id: str, received: Received
                       ) -> FileAdded | Refused:
        record = await self.may_upload(esp_id, report_id)
        if isinstance(record, Refused):
            return record
        stored = self.files.keep(received)  # content-addressed: the same bytes, one copy
        # The same content twice in one report: answered as usual, stored once, flagged.
        file = FileInfo(file_id=received.file_id, sha256=stored.sha256, md5=stored.md5,
                        size=stored.size, original_name=received.filename,
                        duplicate_of=await self.reports.first_copy(report_id, stored.sha256))
        pending = self._changed(record, "file uploaded", file)
        if isinstance(pending, Refused):
            return pending
        with self.tracer.start_as_current_span("ispws upload", attributes={"report.id": report_id}):
            step = await self._take(report_id, AddFile(file.model_dump_json()), pending)
        if not step.ok:
            return refused_by(step.outcome, report_id)
        await self.reports.note_copy(report_id, stored.sha256, file.file_id)
        return FileAdded(report_id, file.file_id, stored.md5)

    async def describe_file(self, esp_id: str, report_id: str, file_id: str,
                            details: dict[str, Any]) -> FileDescribed | Refused:
        """A file's details (a <fileDetails> as data), once a file."""
        record = await self._owned(esp_id, report_id)
        if isinstance(record, Refused):
            return record
        if not DescribeFile.rule.allows(record.state):
            return refused_by(record.state, report_id)
        file = next((f for f in await self.reports.files(report_id) if f.file_id == file_id), None)
        if file is None:
            return Refused(Reason.NO_SUCH_FILE, f"no file {file_id[:40]} in report {report_id}",
                           report_id)
        if errors := check_file_details(details):
            return Refused(Reason.INVALID, report_id=report_id, errors=errors)
        described = with_details(file, details)
        pending = self._changed(record, "file described", described)
        if isinstance(pending, Refused):
            return pending
        step = await self._take(report_id, DescribeFile(file_id, described.model_dump_json()),
                                pending)
        # Described before: if that call's event is still waiting, this retry completes it.
        if step.ok or (step.outcome == Refusal.DESCRIBED
                       and await self.reports.complete(report_id, pending.event_id)):
            return FileDescribed(report_id, file_id)
        if step.outcome == Refusal.DESCRIBED:
            return Refused(Reason.DESCRIBED, "file details were already sent for this file",
                           report_id, file_id)
        return refused_by(step.outcome, report_id)

    async def finish(self, esp_id: str, report_id: str) -> Finished | Refused:
        record = await self._owned(esp_id, report_id)
        if isinstance(record, Refused):
            return record
        report = await self._report(record)
        if record.state is DraftState.OPEN and (errors := check_batched(report)):
            return Refused(Reason.INVALID, report_id=report_id, errors=errors)
        event = ReportSubmitted(event_id=submitted_id(report_id), report_id=report_id,
                                esp_id=esp_id, report=report, supersedes=record.supersedes)
        file_ids = [f.file_id for f in report.files]
        pending = self._pending(event.event_id, topics.REPORTS_SUBMITTED, event, Kind.FINISHED,
                                "submitted", files=file_ids)
        if isinstance(pending, Refused):
            return pending
        with self.tracer.start_as_current_span("ispws finish", attributes={"report.id": report_id}):
            step = await self._take(report_id, Finish(), pending)
        # Finished by an earlier call whose answer was lost: its event may be waiting. (A /v1
        # report was submitted whole, never finished: its waiting event is not this one's.)
        if step.ok or (step.outcome == DraftState.FINISHED and record.via != "v1"
                       and await self.reports.complete(report_id, event.event_id)):
            return Finished(report_id, file_ids)
        return refused_by(step.outcome, report_id)

    async def retract(self, esp_id: str, report_id: str, reason: str | None
                      ) -> RetractionRequested | Refused:
        """Before finish the ESP cancels its report; after, its retraction has every agency
        that got the report corrected (unless strict, as NCMEC)."""
        record = await self._owned(esp_id, report_id)
        if isinstance(record, Refused):
            return record
        post_finish = record.state is DraftState.FINISHED
        why = reason or ("the report proved erroneous" if post_finish else "cancelled by the ESP")
        command = RetractReport(
            command_id=retract_id(report_id), report_id=report_id, requested_by="esp",
            actor=esp_id, reason=f"post-finish retraction: {why}" if post_finish else why,
        )
        pending = self._pending(command.command_id, topics.RETRACTIONS_REQUESTED, command,
                                Kind.RETRACTION_REQUESTED, by=esp_id, post_finish=post_finish,
                                reason=command.reason)
        if isinstance(pending, Refused):
            return pending
        span = {"report.id": report_id}
        with self.tracer.start_as_current_span("ispws retract", attributes=span):
            step = await self._take(report_id, Retract(strict=self.policy.strict_compat),
                                    pending)
        # Retracted by an earlier call whose answer was lost: its event may be waiting.
        if step.ok or (step.outcome == DraftState.RETRACTED
                       and await self.reports.complete(report_id, command.command_id)):
            return RetractionRequested(report_id, post_finish)
        return refused_by(step.outcome, report_id)
