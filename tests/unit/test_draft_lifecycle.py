"""The draft lifecycle (services/intake/lifecycle.py) as properties."""

from hypothesis import given
from hypothesis import strategies as st

from services.intake.lifecycle import (
    OK,
    Abandon,
    AddFile,
    Command,
    Create,
    DescribeFile,
    Draft,
    DraftState,
    Finish,
    Refusal,
    Retract,
    Step,
    sent,
    step,
)
from tests.state_strategies import WINDOWS, Sent, draft_runs, draft_times

Run = list[tuple[Command | Sent, int, str | None]]
FINAL = {DraftState.RETRACTED, DraftState.ABANDONED}


def steps_of(run: Run) -> list[tuple[Draft | None, Command, float, Draft | None, Step]]:
    """(draft before, command, time, draft after, answer) for every step of a run."""
    draft: Draft | None = None
    out = []
    for (command, _, pending), at in zip(run, draft_times(run), strict=True):
        if isinstance(command, Sent):
            draft = draft and sent(draft, command.event_id)
            continue
        before = draft
        draft, answer = step(draft, command, at, WINDOWS, pending)
        out.append((before, command, at, draft, answer))
    return out


@given(draft_runs)
def test_a_refused_step_changes_nothing(run: Run) -> None:
    for before, _, _, after, answer in steps_of(run):
        if not answer.ok:
            assert after == before


@given(draft_runs)
def test_retracted_and_abandoned_are_final_and_finished_never_abandoned(run: Run) -> None:
    for before, _, _, after, _ in steps_of(run):
        if before is None or after is None:
            continue
        if before.state in FINAL:
            assert after.state is before.state
        if before.state is DraftState.FINISHED:
            assert after.state in (DraftState.FINISHED, DraftState.RETRACTED)


@given(draft_runs)
def test_files_are_added_only_while_open_and_before_the_deadline(run: Run) -> None:
    for before, command, at, after, answer in steps_of(run):
        if answer.ok and isinstance(command, AddFile | DescribeFile):
            assert before is not None and after is not None
            assert before.state is DraftState.OPEN and at <= before.deadline(WINDOWS)
            assert len(after.files) == len(before.files) + 1


@given(draft_runs)
def test_abandoned_only_once_the_deadline_passed(run: Run) -> None:
    for before, command, at, _, answer in steps_of(run):
        if before is not None and before.state is DraftState.OPEN:
            deadline = before.deadline(WINDOWS)
            if isinstance(command, Abandon):
                assert answer.ok == (at > deadline)
            elif at > deadline and not isinstance(command, Create):
                assert answer.outcome == Refusal.EXPIRED  # left to the timer


@given(draft_runs)
def test_an_accepted_step_keeps_its_event_pending(run: Run) -> None:
    for (before, _, _, after, answer), (_, _, pending) in zip(
            steps_of(run), [r for r in run if not isinstance(r[0], Sent)], strict=True):
        if answer.ok and pending is not None:
            assert after is not None and pending in after.pending
        if before is not None and after is not None:
            assert before.pending <= after.pending


@given(draft_runs, st.sampled_from([Finish(), Retract(), Retract(strict=True), Abandon(),
                                    Create(DraftState.OPEN)]))
def test_a_retried_step_is_refused_with_what_it_led_to(run: Run, command: Command) -> None:
    """An ESP's retry of an accepted finish or retraction is answered from its pending event:
    the step itself is refused with the state the first one reached, and changes nothing."""
    history = steps_of(run)
    draft = history[-1][3] if history else None
    at = draft_times(run)[-1] + 200 if run else 0.0  # past any deadline: abandon may go
    once, first = step(draft, command, at, WINDOWS, "e9")
    if not first.ok:
        return
    twice, again = step(once, command, at, WINDOWS, "e9")
    assert twice == once
    assert once is not None
    assert again.outcome == (Refusal.TAKEN if isinstance(command, Create) else once.state)


@given(draft_runs)
def test_with_strict_compatibility_a_finished_report_is_not_retracted(run: Run) -> None:
    for before, command, _, _, answer in steps_of(run):
        if before is not None and before.state is DraftState.FINISHED and isinstance(
                command, Retract):
            assert answer.ok != command.strict
            assert answer.outcome in (OK, DraftState.FINISHED)
