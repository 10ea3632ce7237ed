"""Referral handlers: a batch of supplemented reports at a time, referred by the notification
flow (services/notification/flow.py: claim, send, confirm); changes after release arrive as
AmendReport commands."""

from services.notification.flow import NotificationFlow, Recipients
from shared import topics
from shared.batches import in_rounds
from shared.contracts import AmendReport, ReportReferred, ReportSupplemented
from shared.kafka import TiplineBroker

# One subscriber (and consumer group) a priority class: a bulk backlog never delays an urgent
# referral, because they are not in the same queue. They share the process's event loop, so a
# bulk batch is small: its CPU work (~0.3 ms a referral) holds an urgent one up ~15 ms at most;
# a batch of 500 held it 140 ms, until the whole backlog of the e2e test was referred first.
BULK_BATCH = 50
SUPPLEMENTED = {
    topics.REPORTS_SUPPLEMENTED_URGENT: "referral-urgent",
    topics.REPORTS_SUPPLEMENTED: "referral",
    topics.REPORTS_SUPPLEMENTED_BULK: "referral-bulk",
}


def register(broker: TiplineBroker, flow: NotificationFlow) -> None:
    # In a transaction, a referral is recorded as delivered when its ReportReferred is read
    # back committed: the commit is the delivery, and a crash after it leaves the record to read.
    confirm_now = not broker.transactional

    async def on_reports_supplemented(events: list[ReportSupplemented]) -> None:
        for events_now in in_rounds(events, key=lambda e: e.report_id):
            await flow.refer(events_now, confirm_now)

    if not confirm_now:
        @broker.consume(topics.REPORTS_REFERRED, group="referral-confirm", model=ReportReferred)
        async def on_reports_referred(events: list[ReportReferred]) -> None:
            for events_now in in_rounds(events, key=lambda e: e.report_id):
                await flow.confirm({e.report_id: Recipients(e.agencies, e.priority)
                                    for e in events_now})

    @broker.consume(topics.AMENDMENTS_REQUESTED, group="referral-amendments",
                    model=AmendReport, patient=True)
    async def on_amend_reports(commands: list[AmendReport]) -> None:
        for commands_now in in_rounds(commands, key=lambda c: c.report_id):
            await flow.amend(commands_now)

    for topic, group in SUPPLEMENTED.items():
        bulk = topic == topics.REPORTS_SUPPLEMENTED_BULK
        broker.consume(topic, group=group, model=ReportSupplemented, patient=bulk,
                       max_records=BULK_BATCH if bulk else None)(on_reports_supplemented)
