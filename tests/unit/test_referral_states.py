"""The ledger's state machine (services/notification/referrals.py): the retraction invariant
as properties."""

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from services.notification.referrals import (
    AgencyEvent,
    AgencyState,
    Amend,
    Amended,
    Claim,
    ClaimAgencies,
    Command,
    Confirmed,
    ConfirmReferrals,
    Referrals,
    Refused,
    Retract,
    Retraction,
    apply,
    move,
)
from tests.state_strategies import AGENCIES, ledger_commands

ORDER = list(AgencyState)
MARK = Retract("2024-01-01T00:00:00+00:00", "esp", "esp-1", "proved wrong")
runs = st.lists(ledger_commands, max_size=12)


def referring(ledger: Referrals) -> set[str]:
    return {a for a, s in ledger.agencies.items() if s is AgencyState.REFERRING}


def states_along(commands: list[Command]) -> list[Referrals]:
    ledger, seen = Referrals(), [Referrals()]
    for command in commands:
        ledger, _ = apply(ledger, command)
        seen.append(ledger)
    return seen


def test_every_move_is_a_state_or_a_refusal() -> None:
    for state in [None, *AgencyState]:
        for event in AgencyEvent:
            for retracted in (False, True):
                assert isinstance(move(state, event, retracted), AgencyState | Refused)


@given(runs)
def test_an_agency_enters_the_ledger_only_by_a_referral(commands: list[Command]) -> None:
    """So a correction is owed only to an agency that got (or was being sent) the referral."""
    history = states_along(commands)
    for before, after in pairwise(history):
        for agency in after.agencies.keys() - before.agencies.keys():
            assert after.agencies[agency] is AgencyState.REFERRING


@given(runs)
def test_states_only_move_forward_and_corrected_is_final(commands: list[Command]) -> None:
    history = states_along(commands)
    for before, after in pairwise(history):
        for agency, state in before.agencies.items():
            assert ORDER.index(after.agencies[agency]) >= ORDER.index(state)
            if state is AgencyState.CORRECTED:
                assert after.agencies[agency] is AgencyState.CORRECTED


@given(runs, runs)
def test_once_retracted_never_referred_again(before: list[Command], after: list[Command]) -> None:
    """No agency is claimed after the mark; only those claimed before it are still referred."""
    ledger, _ = apply(states_along(before)[-1], MARK)
    marked = ledger
    for command in [ClaimAgencies(AGENCIES), *after]:
        ledger, effect = apply(ledger, command)
        assert ledger.agencies.keys() <= marked.agencies.keys()
        if isinstance(effect, Claim):
            assert effect.retracted
            assert {*effect.to_refer} <= referring(marked)


@given(runs)
def test_every_agency_that_got_the_referral_is_owed_its_correction_by_one_sender(
        commands: list[Command]) -> None:
    """After a retraction, and the referral service's confirmation of what it was sending,
    every agency is being corrected or corrected; each correcting one was answered as owed by
    the service its state names, and no agency was ever owed by both."""
    ledger, by_retraction, by_referral = Referrals(), set(), set()
    for command in [*commands, MARK, None]:
        if command is None:  # the referral service confirms the referrals it was sending
            command = ConfirmReferrals(tuple(sorted(referring(ledger))))
        ledger, effect = apply(ledger, command)
        if isinstance(effect, Retraction):
            by_retraction |= set(effect.to_correct)
        elif isinstance(effect, Confirmed | Claim):
            by_referral |= set(effect.owed_correction)
    states = ledger.agencies
    assert set(states.values()) <= {AgencyState.CORRECTING, AgencyState.CORRECTING_AFTER_REFERRAL,
                                    AgencyState.CORRECTED}
    assert {a for a, s in states.items() if s is AgencyState.CORRECTING} <= by_retraction
    assert {a for a, s in states.items()
            if s is AgencyState.CORRECTING_AFTER_REFERRAL} <= by_referral
    assert not by_retraction & by_referral


@given(runs, ledger_commands)
def test_each_step_is_idempotent(commands: list[Command], command: Command) -> None:
    """Redelivery sends a step again: the second has no further effect."""
    once, effect = apply(states_along(commands)[-1], command)
    twice, again = apply(once, command)
    assert twice == once
    if isinstance(effect, Retraction):
        assert again == Retraction(False, effect.to_correct)
    else:
        assert again == effect


@given(runs)
def test_the_first_retraction_mark_stays(commands: list[Command]) -> None:
    marks = [x.retraction for x in states_along(commands) if x.retracted]
    assert len(set(marks)) <= 1


@given(runs, st.sampled_from(['{"v": 9}']))
def test_an_amendment_is_owed_to_whoever_received_the_referral(commands: list[Command],
                                                               change: str) -> None:
    ledger = states_along(commands)[-1]
    after, effect = apply(ledger, Amend(9, change))
    assert after.agencies == ledger.agencies
    assert after.amendments == {**ledger.amendments, 9: change}
    if ledger.retracted:  # its agencies were told to disregard it: nothing more reaches them
        assert effect == Amended(9, [], withheld=True)
    else:
        assert effect == Amended(9, sorted(
            a for a, s in ledger.agencies.items() if s is not AgencyState.REFERRING))


@given(runs)
def test_the_first_copy_of_an_amendment_version_stays(commands: list[Command]) -> None:
    version = 7  # one the runs never use
    ledger, _ = apply(states_along(commands)[-1], Amend(version, '{"first": true}'))
    after, _ = apply(ledger, Amend(version, '{"first": false}'))
    assert after.amendments[version] == '{"first": true}'

