"""The smaller state machines as properties: a report's status (services/intake/status.py), a
notice's acknowledgement (services/notification/acknowledgements.py), a case file's hold
(supplementation/holds.py)."""

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from services.intake.status import RANK, Record, Recorded, ReportStatus, record
from services.notification.acknowledgements import (
    NoticeEvent,
    NoticeState,
    Refused,
    escalates,
    settle,
)
from services.supplementation.holds import CaseEvent, CaseFile, CaseState
from services.supplementation.holds import apply as case_apply
from shared.audiences import Status
from tests.state_strategies import case_events, facts, notice_events


def statuses(run: list[Record]) -> list[ReportStatus]:
    report, out = ReportStatus(), [ReportStatus()]
    for fact in run:
        report, _ = record(report, fact)
        out.append(report)
    return out


@given(st.lists(facts, max_size=12))
def test_the_status_rank_never_goes_backwards(run: list[Record]) -> None:
    for before, after in pairwise(statuses(run)):
        assert after.rank >= before.rank
        assert after.rank == (RANK[after.status] if after.status else 0)


@given(st.lists(facts, max_size=12))
def test_the_status_is_the_highest_ranked_of_the_facts_recorded(run: list[Record]) -> None:
    first = {f.event_id: f for f in reversed(run)}  # a fact counts once, as first recorded
    ranks = [RANK[f.status] for f in first.values() if f.status]
    assert statuses(run)[-1].rank == max(ranks, default=0)


@given(st.lists(facts, max_size=12), facts)
def test_recording_a_fact_again_changes_nothing(run: list[Record], fact: Record) -> None:
    once, _ = record(statuses(run)[-1], fact)
    twice, again = record(once, fact)
    assert twice == once
    assert not isinstance(again, Recorded)


def test_every_status_has_a_rank() -> None:
    assert set(RANK) == set(Status)


@given(st.lists(notice_events, max_size=10))
def test_a_notice_settles_once_and_stays_settled(run: list[tuple[str, NoticeEvent]]) -> None:
    states: dict[str, NoticeState] = {}
    for notice, event in run:
        before = states.get(notice)
        after = settle(before, event)
        if isinstance(after, Refused):
            continue  # stays as it was
        assert before is None or before is NoticeState.AWAITING
        assert (after is NoticeState.AWAITING) == (event is NoticeEvent.TRACK)
        states[notice] = after


def test_escalated_after_max_resends() -> None:
    assert [escalates(n, 3) for n in range(1, 6)] == [False, False, False, True, True]


def cases(run: list[CaseEvent]) -> list[tuple[CaseFile, CaseEvent, CaseFile]]:
    case, out = CaseFile(), []
    for event in run:
        after, _ = case_apply(case, event)
        out.append((case, event, after))
        case = after
    return out


@given(st.lists(case_events, max_size=12))
def test_a_released_case_stays_released(run: list[CaseEvent]) -> None:
    for before, _, after in cases(run):
        if before.state is CaseState.RELEASED:
            assert after.state is CaseState.RELEASED


@given(st.lists(case_events, max_size=12))
def test_additions_ride_in_the_referral_until_it_begins_then_are_versioned(
        run: list[CaseEvent]) -> None:
    for before, event, after in cases(run):
        kept = (after.supplements + after.amendments) - (before.supplements + before.amendments)
        changed = after.after_release - before.after_release
        if event in (CaseEvent.KEEP_SUPPLEMENT, CaseEvent.KEEP_AMENDMENT):
            assert kept == (before.state not in (CaseState.RELEASING, CaseState.RELEASED))
            assert changed == (before.state is CaseState.RELEASED)  # refused while releasing
        else:
            assert kept == changed == 0


@given(st.lists(case_events, max_size=12))
def test_a_report_arriving_again_changes_nothing(run: list[CaseEvent]) -> None:
    case = cases(run)[-1][2] if run else CaseFile()
    once, first = case_apply(case, CaseEvent.ARRIVE)
    assert case_apply(once, CaseEvent.ARRIVE) == (once, first)


@given(st.lists(case_events, max_size=12))
def test_an_unheld_report_is_released_on_arrival(run: list[CaseEvent]) -> None:
    for before, event, after in cases(run):
        if event is CaseEvent.ARRIVE:
            held = before.state in (CaseState.HELD, CaseState.RELEASING, CaseState.CLOSED)
            assert after.state is (before.state if held else CaseState.RELEASED)


@given(st.lists(case_events, max_size=12))
def test_a_public_report_is_released_only_by_an_analyst(run: list[CaseEvent]) -> None:
    """Arriving first, a report from the public is held; released only by an analyst's release,
    never by arriving (again)."""
    for before, event, after in cases([CaseEvent.ARRIVE_PUBLIC, *run]):
        if after.state is CaseState.RELEASED and before.state is not CaseState.RELEASED:
            assert event is CaseEvent.FINISH_RELEASE


@given(st.lists(case_events, max_size=12))
def test_a_closed_case_stays_closed_and_keeps_what_is_added(run: list[CaseEvent]) -> None:
    for before, event, after in cases(run):
        if before.state is CaseState.CLOSED:
            assert after.state is CaseState.CLOSED
            assert after.after_release == before.after_release  # never sent anywhere
        if after.state is CaseState.CLOSED and before.state is not CaseState.CLOSED:
            assert (before.state, event) == (CaseState.HELD, CaseEvent.CLOSE)
