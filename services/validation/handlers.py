"""Validation handlers: finished reports are validated or rejected, with reasons, a batch at a
time; the files of unfinished reports feed the checks across reports."""

from services.validation.crosscheck import CrossCheck
from services.validation.judge import judge
from shared import topics
from shared.batches import Publisher
from shared.contracts import (
    Fact,
    ReportDraftChanged,
    ReportSubmitted,
)
from shared.facts import Recorder
from shared.kafka import TiplineBroker


def register(broker: TiplineBroker, timeline: Recorder, crosscheck: CrossCheck) -> None:
    publish = Publisher(broker)

    @broker.consume(topics.REPORTS_SUBMITTED, group="validation", model=ReportSubmitted)
    async def on_reports_submitted(events: list[ReportSubmitted]) -> None:
        for event in events:
            if event.supersedes:
                await crosscheck.link_supersession(event.report_id, event.supersedes)
        verdicts = [judge(event) for event in events]
        await timeline.record_many(
            {v.report_id: [Fact(v.event_id, v.what, v.status, v.detail)] for v in verdicts})
        await publish.send((v.event, v.topic, v.report_id) for v in verdicts)

    # Files of unfinished reports only feed later cross-checks: nobody waits on them.
    @broker.consume(topics.REPORTS_DRAFTS, group="validation-drafts", model=ReportDraftChanged,
                    patient=True)
    async def on_report_drafts_changed(events: list[ReportDraftChanged]) -> None:
        for event in events:
            if event.change == "file uploaded" and event.file is not None:
                await crosscheck.content_seen(event.report_id, event.esp_id, event.file)
