"""Hypothesis strategies for the state machines' commands, and the runs that fold them: shared by
the property tests (tests/unit) and the Lua-agreement tests (tests/integration)."""

from dataclasses import dataclass

from hypothesis import strategies as st

from services.intake import lifecycle
from services.intake.lifecycle import DraftState
from services.intake.status import Record
from services.notification import referrals
from services.notification.acknowledgements import NoticeEvent
from services.supplementation.holds import CaseEvent
from shared.audiences import Status

AGENCIES = ("a1", "a2", "a3")
agencies = st.lists(st.sampled_from(AGENCIES), unique=True, max_size=len(AGENCIES)).map(tuple)

ledger_commands: st.SearchStrategy[referrals.Command] = st.one_of(
    st.builds(referrals.ClaimAgencies, agencies),
    st.builds(referrals.ConfirmReferrals, agencies),
    st.builds(referrals.Retract, st.sampled_from(["2024-01-01T00:00:00+00:00",
                                                  "2024-01-02T00:00:00+00:00"]),
              st.sampled_from(["esp", "analyst", "system"]), st.just("someone"),
              st.sampled_from(["proved wrong", "abandoned"])),
    st.builds(referrals.ConfirmCorrections, agencies),
    st.builds(referrals.Amend, st.integers(1, 3), st.sampled_from(['{"v": 1}', '{"v": 2}'])),
)

facts = st.builds(Record, st.sampled_from([f"e{i}" for i in range(6)]),
                  st.none() | st.sampled_from(list(Status)))

notice_events = st.tuples(st.sampled_from(["n1", "n2"]), st.sampled_from(list(NoticeEvent)))

case_events = st.sampled_from(list(CaseEvent))

# Drafts: small windows and time steps, so that steps expire and abandonment comes due.
WINDOWS = lifecycle.Windows(after_open_s=40.0, after_change_s=20.0)
START = 1_700_000_000


@dataclass(frozen=True)
class Sent:
    """The outbox published a pending event (not a step: `Drafts.sent`)."""

    event_id: str


files = st.sampled_from(['{"file_id": "f1"}', '{"file_id": "f2"}'])
creates = st.builds(lifecycle.Create, st.sampled_from([DraftState.OPEN, DraftState.FINISHED]))
draft_commands: st.SearchStrategy[lifecycle.Command | Sent] = st.one_of(
    creates,
    st.builds(lifecycle.AddFile, files),
    st.builds(lifecycle.DescribeFile, st.sampled_from(["f1", "f2"]), files),
    st.just(lifecycle.Finish()),
    st.builds(lifecycle.Retract, st.booleans()),
    st.just(lifecycle.Abandon()),
    st.just(lifecycle.AddInformation()),
    st.builds(Sent, st.sampled_from(["e1", "e2"])),
)
# Each: the command, seconds since the previous one, the event id it stores (None: none). Most
# runs start by creating the draft.
# Steps of whole tens often land exactly on a deadline (the windows are tens too).
_steps = st.lists(st.tuples(draft_commands, st.sampled_from([0, 1, 10, 20]),
                            st.sampled_from([None, "e1", "e2"])), max_size=14)
draft_runs = st.one_of(_steps, st.tuples(creates, _steps).map(
    lambda run: [(run[0], 0, "e0"), *run[1]]))


def draft_times(run: list[tuple[lifecycle.Command | Sent, int, str | None]]) -> list[float]:
    """When each command of a run happens."""
    at, times = float(START), []
    for _, after, _ in run:
        at += after
        times.append(at)
    return times
