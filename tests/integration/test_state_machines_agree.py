"""The Lua scripts agree with the pure state machines, against real Redis.

Hypothesis makes random sequences of commands; each goes both to the pure machine and through the
class the services call (Ledger, Timeline, Outbox, Drafts, CaseFiles), and after every step the
answers are the same and the state read back from Redis is the model's. One report (a unique
key prefix) an example, removed after it.
"""

import uuid
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from services.intake import lifecycle, status
from services.intake.drafts import Drafts, Pending
from services.intake.lifecycle import Create, Draft, DraftState
from services.intake.timeline import Timeline
from services.notification import notices, referrals
from services.notification.acknowledgements import NoticeEvent, NoticeState, Refused, settle
from services.notification.awaiting import AwaitingAcknowledgement
from services.notification.ledger import Ledger
from services.notification.referrals import (
    AgencyState,
    Amend,
    ClaimAgencies,
    ConfirmCorrections,
    ConfirmReferrals,
    Referrals,
    Retract,
)
from services.supplementation import holds
from services.supplementation.casefile import TRIAGE, CaseFiles, Kept
from services.supplementation.holds import CaseEvent, CaseFile, CaseState
from shared.audiences import Status
from shared.contracts import (
    Amendment,
    Fact,
    Priority,
    Report,
    ReportValidated,
    Supplement,
    TimelineFacts,
    now,
)
from tests.state_strategies import (
    WINDOWS,
    Sent,
    case_events,
    draft_runs,
    draft_times,
    facts,
    ledger_commands,
    notice_events,
)

agree = settings(max_examples=60, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


def a_report() -> str:
    return f"states-{uuid.uuid4().hex}"


async def read(redis: Redis, *commands: tuple[str, ...]) -> list[Any]:
    """Read the state back in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute())


# --- the ledger: referrals and corrections -----------------------------------------------------

async def through_ledger(ledger: Ledger, report_id: str, command: referrals.Command
                         ) -> referrals.Effect:
    match command:
        case ClaimAgencies():
            return (await ledger.claim({report_id: command}))[report_id]
        case ConfirmReferrals(agencies):
            return (await ledger.confirm_referrals({report_id: list(agencies)}))[report_id]
        case Retract():
            return (await ledger.retract({report_id: command}))[report_id]
        case ConfirmCorrections(agencies):
            await ledger.confirm_corrections({report_id: list(agencies)})
            return None
        case Amend():
            return (await ledger.amend({report_id: command}))[report_id]


async def ledger_read(redis: Redis, report_id: str) -> Referrals:
    states, mark, amendments, priority = Ledger._keys(report_id)
    states, mark, amendments, priority = await read(
        redis, ("HGETALL", states), ("HGETALL", mark), ("HGETALL", amendments),
        ("GET", priority))
    return Referrals(
        {a: AgencyState(s) for a, s in states.items()},
        Retract(mark["at"], mark["by"], mark["actor"], mark["reason"]) if mark else None,
        {int(v): a for v, a in amendments.items()},
        Priority[priority.upper()] if priority else None)


@agree
@given(st.lists(ledger_commands, min_size=1, max_size=12))
async def test_the_ledger_scripts_agree(redis: Redis, commands: list[referrals.Command]) -> None:
    ledger, report_id, model = Ledger(redis), a_report(), Referrals()
    try:
        for command in commands:
            model, expected = referrals.apply(model, command)
            assert await through_ledger(ledger, report_id, command) == expected, command
            assert await ledger_read(redis, report_id) == model, command
    finally:
        await redis.delete(*Ledger._keys(report_id))


# --- the timeline: a report's status -----------------------------------------------------------

@agree
@given(st.lists(st.lists(facts, min_size=1, max_size=3), min_size=1, max_size=6))
async def test_the_timeline_script_agrees(redis: Redis, batches: list[list[status.Record]]
                                          ) -> None:
    timeline, report_id, model = Timeline(redis), a_report(), status.ReportStatus()
    report, seen, entries = Timeline._keys(report_id)
    try:
        for batch in batches:
            added = 0
            for fact in batch:
                model, answer = status.record(model, fact)
                added += isinstance(answer, status.Recorded)
            assert await timeline.record_all(report_id, [
                Fact(f.event_id, "a fact", f.status) for f in batch]) == added
            fields, ids, length = await read(
                redis, ("HGETALL", report), ("SMEMBERS", seen), ("LLEN", entries))
            assert status.ReportStatus(
                status.Status(fields["status"]) if "status" in fields else None,
                int(fields.get("rank", 0)), frozenset(ids), length) == model
    finally:
        await redis.delete(report, seen, entries)


@agree
@given(st.lists(st.lists(facts, min_size=1, max_size=3), min_size=1, max_size=6))
async def test_a_fetched_batch_of_fact_records_agrees(redis: Redis,
                                                      batches: list[list[status.Record]]) -> None:
    """Intake records a fetched batch of other services' TimelineFacts in one script a report:
    the same as recording them one after another, each entry at its own record's time."""
    timeline, report_id, model = Timeline(redis), a_report(), status.ReportStatus()
    report, seen, entries = Timeline._keys(report_id)
    sent = now()
    records = [TimelineFacts(event_id=f"record-{n}", occurred_at=sent + timedelta(seconds=n),
                             facts={report_id: [Fact(f.event_id, "a fact", f.status)
                                                for f in batch]})
               for n, batch in enumerate(batches)]
    for batch in batches:
        for fact in batch:
            model, _ = status.record(model, fact)
    try:
        # In the order they were sent, whatever the order a fetch brings them in.
        await timeline.record_events(records[::-1])
        fields, ids, length = await read(
            redis, ("HGETALL", report), ("SMEMBERS", seen), ("LLEN", entries))
        assert status.ReportStatus(
            status.Status(fields["status"]) if "status" in fields else None,
            int(fields.get("rank", 0)), frozenset(ids), length) == model
        # each fact's entry carries the time of the record that first told it
        firsts: dict[str, str] = {}
        for record in records:
            for told in record.facts[report_id]:
                firsts.setdefault(told.event_id, record.occurred_at.isoformat())
        assert [e["at"] for e in await timeline.entries(report_id)] == list(firsts.values())
    finally:
        await redis.delete(report, seen, entries)


async def test_a_later_hop_fetched_first_reads_back_in_the_order_things_happened(
        redis: Redis) -> None:
    """Each service's facts share a partition, not one with other services': referral's record
    can be fetched a batch before validation's. The ESP's timeline still reads in order."""
    timeline, report_id = Timeline(redis), a_report()
    sent = now()
    told = [TimelineFacts(event_id=f"record-{what}", occurred_at=sent + timedelta(seconds=n),
                          facts={report_id: [Fact(f"fact-{what}", what, None)]})
            for n, what in enumerate(["validated", "supplemented", "referral delivered"])]
    # A record stamped without a zone (UTC, as every tipline clock) sorts among the others.
    told[1] = told[1].model_copy(update={"occurred_at": told[1].occurred_at.replace(tzinfo=None)})
    try:
        for record in reversed(told):  # three fetched batches, the latest hop's first
            await timeline.record_events([record])
        assert [e["what"] for e in await timeline.entries(report_id)] == [
            "validated", "supplemented", "referral delivered"]
    finally:
        await redis.delete(*Timeline._keys(report_id))


async def test_report_fields_go_with_the_facts_and_the_time_moves_only_with_a_new_fact(
        redis: Redis) -> None:
    """A supersession's links travel as report fields beside facts, set in the same step after
    the status the facts give; `updated_at` moves only when a fact is new."""
    timeline, report_id = Timeline(redis), a_report()
    first, later = now(), now() + timedelta(seconds=5)
    referred = Fact(f"referred-{report_id}", "referred", Status.REFERRED)
    try:
        assert await timeline.record_all(report_id, [
            Fact(f"validated-{report_id}", "validated", Status.VALIDATED), referred],
            at=first, fields={"supersedes": "an-older-report"}) == 2
        assert await timeline.fields(report_id) == {
            "status": Status.REFERRED, "rank": "4", "supersedes": "an-older-report",
            "updated_at": first.isoformat()}
        # The same fact again, with a field: the field is set, the time stays.
        assert await timeline.record_all(report_id, [referred], at=later,
                                         fields={"superseded_by": "a-newer-report"}) == 0
        assert await timeline.fields(report_id) == {
            "status": Status.REFERRED, "rank": "4", "supersedes": "an-older-report",
            "superseded_by": "a-newer-report", "updated_at": first.isoformat()}
    finally:
        await redis.delete(*Timeline._keys(report_id))


# --- acknowledgements --------------------------------------------------------------------------

@agree
@given(st.lists(notice_events, min_size=1, max_size=10))
async def test_the_ack_script_agrees(redis: Redis, events: list[tuple[str, NoticeEvent]]) -> None:
    outbox, report_id = AwaitingAcknowledgement(redis, ack_timeout_s=3600), a_report()
    model: dict[str, NoticeState] = {}
    try:
        for notice_id, event in events:
            before = model.get(notice_id)
            after = settle(before, event)
            if not isinstance(after, Refused):
                model[notice_id] = after
            state = model.get(notice_id, "none")
            if event is NoticeEvent.TRACK:
                notice = notices.correction_notice(report_id, "a1", Retract(
                    now().isoformat(), "esp", "esp-1", "x"), Priority.NORMAL).model_copy(
                    update={"notice_id": notice_id})
                await outbox.track([notices.encoded(notice, None)])
            elif event is NoticeEvent.ACKNOWLEDGE:
                assert await outbox.acknowledge(report_id, notice_id) == state
            else:
                moved = before is NoticeState.AWAITING
                assert await outbox.escalate(report_id, notice_id) == moved
            assert await outbox.states(report_id) == model
    finally:
        await outbox._due.remove(*(f"{report_id}|{n}" for n, _ in events))
        await redis.delete(*AwaitingAcknowledgement._keys(report_id))


# --- drafts ------------------------------------------------------------------------------------

async def draft_read(redis: Redis, report_id: str) -> Draft | None:
    draft, pending, files, described = Drafts.keys(report_id)
    draft, pending, files, described = await read(
        redis, ("HGETALL", draft), ("HKEYS", pending), ("LRANGE", files, "0", "-1"),
        ("SMEMBERS", described))
    if not draft:
        return None
    return Draft(DraftState(draft["state"]), float(draft["opened_at"]),
                 float(draft["changed_at"]), tuple(files), frozenset(described),
                 frozenset(pending))


OPEN = lifecycle.Create(DraftState.OPEN)


@agree
@given(draft_runs)
# Right at the deadline and just past it, as first opened and after a change moved it on.
@example([(OPEN, 0, "e0"), (lifecycle.Abandon(), 40, "e1"), (lifecycle.Finish(), 0, "e2")])
@example([(OPEN, 0, "e0"), (lifecycle.Finish(), 41, "e1"), (lifecycle.Abandon(), 0, "e2")])
@example([(OPEN, 0, "e0"), (lifecycle.AddFile("{}"), 30, "e1"), (lifecycle.Abandon(), 20, None),
          (lifecycle.Retract(), 0, "e2"), (lifecycle.Abandon(), 1, "e3")])
async def test_the_draft_step_script_agrees(
        redis: Redis, run: list[tuple[lifecycle.Command | Sent, int, str | None]]) -> None:
    drafts = Drafts(redis, after_open_s=WINDOWS.after_open_s,
                    after_change_s=WINDOWS.after_change_s)
    report_id, model = a_report(), None
    try:
        for (command, _, event_id), at in zip(run, draft_times(run), strict=True):
            if isinstance(command, Sent):
                model = model and lifecycle.sent(model, command.event_id)
                await drafts.sent(report_id, command.event_id)
            elif isinstance(command, Create):  # as the services create: always with its event
                model, expected = lifecycle.step(model, command, at, WINDOWS, event_id or "e0")
                assert await drafts.create(report_id, "esp-1", at, command.state,
                                           pending(event_id or "e0")) == expected.ok
            else:
                model, expected = lifecycle.step(model, command, at, WINDOWS, event_id)
                answer = await drafts.step(report_id, command, at,
                                           pending(event_id) if event_id else None)
                assert answer == expected, command
            assert await draft_read(redis, report_id) == model, command
    finally:
        await redis.delete(*Drafts.keys(report_id))


def pending(event_id: str) -> Pending:
    return Pending(event_id, "tipline.test", "{}", "a step")


# --- case files --------------------------------------------------------------------------------

async def through_case_files(cases: CaseFiles, report_id: str, event: CaseEvent
                             ) -> str | Kept | None:
    match event:
        case CaseEvent.ARRIVE | CaseEvent.ARRIVE_PUBLIC:
            public = event is CaseEvent.ARRIVE_PUBLIC
            arrival = ReportValidated(event_id="v", report_id=report_id, esp_id="esp-1",
                                      report=Report(), source="public" if public else "esp")
            return (await cases.arrive([(arrival, None)]))[0].state
        case CaseEvent.HOLD:
            return await cases.hold(report_id, "a look first", "analyst-1")
        case CaseEvent.CLOSE:
            return await cases.close(report_id, "nothing to act on", "analyst-1")
        case CaseEvent.BEGIN_RELEASE:
            return await cases.begin_release(report_id)
        case CaseEvent.FINISH_RELEASE:
            return await cases.finish_release(report_id)
        case CaseEvent.KEEP_SUPPLEMENT:
            return await cases.keep_supplement(report_id, Supplement(
                supplement_id="s1", kind="note", content="n", source="a source",
                verified=False, analyst_id="analyst-1", added_at=now()))
        case CaseEvent.KEEP_AMENDMENT:
            return await cases.keep_amendment(report_id, Amendment(
                amendment_id="m1", path="incident_type", value="x", reason="why",
                analyst_id="analyst-1", amended_at=now()))


@agree
@given(st.lists(case_events, min_size=1, max_size=10))
async def test_the_case_file_scripts_agree(redis: Redis, events: list[CaseEvent]) -> None:
    cases, report_id, model = CaseFiles(redis), a_report(), CaseFile()
    keys = CaseFiles._keys(report_id)
    case, supplements, amendments, after_release, *_ = keys
    try:
        for event in events:
            model, answer = holds.apply(model, event)
            got = await through_case_files(cases, report_id, event)
            if isinstance(got, Kept):
                assert (got.state, got.version) == (answer.says, answer.version), event
            else:
                assert got == answer.says, event
            state, arrived, kept, amended, changed = await read(
                redis, ("HGET", case, "state"), ("HEXISTS", case, "report"),
                ("LLEN", supplements), ("LLEN", amendments), ("LLEN", after_release))
            assert CaseFile(CaseState(state) if state else None, bool(arrived), kept,
                            amended, changed) == model
    finally:
        await redis.delete(*keys)
        await redis.zrem(TRIAGE, report_id)
