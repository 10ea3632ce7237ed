"""Intake's reporting core over reports kept in memory, for unit tests of its decisions.

`MemoryReports` is the core's `Reports` (services/intake/reporting.py) with each draft run by the
pure machine (services/intake/lifecycle.py), the one the Redis step script agrees with
(tests/integration/test_state_machines_agree.py). The broker is a list a report (`sent`); while
`broker_away`, an accepted step's event waits, as intake's outbox keeps it, until `sweep`.
Time is the test's (`Clock`).
"""

from collections.abc import Mapping
from dataclasses import dataclass

from services.intake import lifecycle
from services.intake.drafts import Pending, Record
from services.intake.lifecycle import Command, Create, Draft, DraftState, Step, Windows
from services.intake.status import rank
from services.intake.timeline import History
from shared.contracts import FileInfo

WINDOWS = Windows(after_open_s=24 * 3600.0, after_change_s=3600.0)


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class MemoryReports:
    def __init__(self, windows: Windows = WINDOWS) -> None:
        self.windows = windows
        self.drafts: dict[str, Draft] = {}
        self.kept: dict[str, dict[str, str]] = {}  # what each draft was created with
        self.waiting: dict[str, dict[str, Pending]] = {}  # accepted, not sent: by event id
        self.sent: dict[str, list[Pending]] = {}
        self.contents: dict[str, dict[str, str]] = {}
        self.broker_away = False

    async def record(self, report_id: str) -> Record | None:
        draft = self.drafts.get(report_id)
        if draft is None:
            return None
        kept = self.kept[report_id]
        return Record(report_id, kept["esp_id"], draft.state, draft.opened_at,
                      draft.deadline(self.windows), kept.get("report", "{}"),
                      kept.get("supersedes") or None, kept.get("via", ""),
                      kept.get("idempotency", ""), kept.get("receipt", ""))

    async def files(self, report_id: str) -> list[FileInfo]:
        latest: dict[str, FileInfo] = {}
        for entry in self.drafts[report_id].files if report_id in self.drafts else ():
            info = FileInfo.model_validate_json(entry)
            latest[info.file_id] = info
        return list(latest.values())

    async def history(self, report_id: str) -> History:
        status, entries = None, []
        for event in self.sent.get(report_id, []):
            entries.append({"at": "2027-01-15T08:00:00+00:00", "what": event.what,
                            **event.detail})
            if event.status and rank(event.status) >= rank(status):
                status = event.status
        return History(status, None, entries)

    async def create(self, report_id: str, esp_id: str, at: float, state: DraftState,
                     pending: Pending, fields: Mapping[str, str]) -> bool:
        step = await self.take(report_id, Create(state), at, pending)
        if step.ok:
            self.kept[report_id] = {"esp_id": esp_id, **fields}
        return step.ok

    async def take(self, report_id: str, command: Command, at: float, pending: Pending) -> Step:
        draft, step = lifecycle.step(self.drafts.get(report_id), command, at, self.windows,
                                     pending.event_id)
        if step.ok:
            assert draft is not None
            self.drafts[report_id] = draft
            self.waiting.setdefault(report_id, {})[pending.event_id] = pending
            await self.complete(report_id, pending.event_id)
        return step

    async def complete(self, report_id: str, event_id: str) -> bool:
        waiting = self.waiting.get(report_id, {})
        if event_id not in waiting:
            return False
        if not self.broker_away:
            self.sent.setdefault(report_id, []).append(waiting.pop(event_id))
            self.drafts[report_id] = lifecycle.sent(self.drafts[report_id], event_id)
        return True

    async def sweep(self) -> None:
        """The broker is back: what waits is sent."""
        self.broker_away = False
        for report_id, waiting in self.waiting.items():
            for event_id in list(waiting):
                await self.complete(report_id, event_id)

    async def first_copy(self, report_id: str, sha256: str) -> str | None:
        return self.contents.get(report_id, {}).get(sha256)

    async def note_copy(self, report_id: str, sha256: str, file_id: str) -> None:
        self.contents.setdefault(report_id, {}).setdefault(sha256, file_id)

    def events(self, report_id: str) -> list[str]:
        """What the pipeline got of a report, in order: each event's timeline kind."""
        return [e.what for e in self.sent.get(report_id, [])]

