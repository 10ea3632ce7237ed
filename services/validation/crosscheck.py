"""Checks across reports: the same content in several reports, and supersession links.

Facts land in both reports' timelines (sent to intake, which keeps them: shared/facts.py). The
same content in another ESP's report is a fact of its own kind, which no ESP is told
(shared/audiences.py).
"""


from shared.audiences import Kind
from shared.contracts import Fact, FileInfo, derived_id
from shared.facts import Recorder
from shared.store import Store


class CrossCheck:
    def __init__(self, redis: Store, timeline: Recorder) -> None:
        self._redis = redis
        self._timeline = timeline

    async def content_seen(self, report_id: str, esp_id: str, file: FileInfo) -> list[str]:
        """Flag this file's content on every other report holding it; returns those reports."""
        if not file.sha256:
            return []
        key = f"tipline:content:{file.sha256}"
        await self._redis.hsetnx(key, report_id, f"{esp_id}|{file.file_id}")
        seen = await self._redis.hgetall(key)
        others = {str(r): str(v) for r, v in seen.items() if str(r) != report_id}
        for other, value in others.items():
            other_esp, other_file = value.split("|", 1)
            kind = (Kind.DUPLICATE_CONTENT if other_esp == esp_id
                    else Kind.DUPLICATE_CONTENT_ELSEWHERE)
            await self._timeline.record(
                report_id, derived_id(report_id, "same content", file.sha256, other), kind,
                file_id=file.file_id, sha256=file.sha256, other_report=other,
            )
            await self._timeline.record(
                other, derived_id(other, "same content", file.sha256, report_id), kind,
                file_id=other_file, sha256=file.sha256, other_report=report_id,
            )
        return sorted(others)

    async def link_supersession(self, report_id: str, supersedes: str) -> None:
        """Link a resubmission and the report it replaces, both ways. Intake let the ESP name
        only a report of its own (and the event is sealed by intake)."""
        await self._timeline.record_many({
            report_id: [Fact(derived_id(report_id, "supersedes", supersedes), Kind.SUPERSEDES,
                             detail={"report": supersedes})],
            supersedes: [Fact(derived_id(supersedes, "superseded", report_id), Kind.SUPERSEDED,
                              detail={"by_report": report_id})],
        }, {supersedes: {"superseded_by": report_id}, report_id: {"supersedes": supersedes}})
