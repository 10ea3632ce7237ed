"""Referrals and corrections per (report, agency): the state machine of the ledger. Pure.

`ledger.py` beside it runs these steps as Lua scripts, one at a time, for atomicity; this module
says what each step does. Per agency:

    referring -> referred -> correcting -> corrected
    referring --------------> correcting after referral -> corrected
                              (retracted while the referral was sent)

- claim: an agency becomes `referring` (its referral is being sent), unless the report is
  retracted: then nothing is claimed, so a report retracted first is never referred.
- confirm referral: the referral was delivered; `referred`, or `correcting after referral` at
  once if the report was retracted while the referral was in flight.
- retract: marks the report (once: the first mark stays) and moves every `referred` agency to
  `correcting`; a `referring` one is left to the referral service (confirm referral).
- confirm correction: either correcting state `-> corrected`, which is final.

Each correction has one sender: the retraction service sends those `correcting`, the referral
service those `correcting after referral`. So where a notice is delivered exactly once (in
transactions) an agency never gets two corrections, even when both services run at once.
- amend: kept under its version (the first copy of a version stays), owed at once to every agency
  whose referral was delivered, to none once the report is retracted; the states are untouched.

Every step is idempotent (the real system sends each step again on a redelivery);
anything else leaves an agency as it is, with the reason (`Refused`).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from shared.contracts import Priority, Retractor, RetractReport


class AgencyState(StrEnum):
    REFERRING = "referring"
    REFERRED = "referred"
    CORRECTING = "correcting"
    CORRECTING_AFTER_REFERRAL = "correcting after referral"
    CORRECTED = "corrected"


class AgencyEvent(StrEnum):
    CLAIM = "claim"
    CONFIRM_REFERRAL = "confirm referral"
    RETRACT = "retract"
    CONFIRM_CORRECTION = "confirm correction"


@dataclass(frozen=True)
class Refused:
    reason: str


def move(state: AgencyState | None, event: AgencyEvent, retracted: bool
         ) -> AgencyState | Refused:
    """One agency's next state (`None`: not in the ledger) when `event` happens to its report,
    `retracted` being whether the report is marked (after a retract, before any other event)."""
    S, E = AgencyState, AgencyEvent
    match event, state:
        case E.CLAIM, None:
            return Refused("retracted before referral") if retracted else S.REFERRING
        case E.CLAIM, _:
            return Refused("claimed before")
        case E.CONFIRM_REFERRAL, S.REFERRING:
            return S.CORRECTING_AFTER_REFERRAL if retracted else S.REFERRED
        case E.CONFIRM_REFERRAL, _:
            return Refused("not being referred")
        case E.RETRACT, S.REFERRED:
            return S.CORRECTING
        case E.RETRACT, S.REFERRING:
            return Refused("referral in flight")
        case E.RETRACT, _:
            return Refused("not referred")
        case E.CONFIRM_CORRECTION, S.CORRECTING | S.CORRECTING_AFTER_REFERRAL:
            return S.CORRECTED
        case _:
            return Refused("not being corrected")


# What the ledger's commands answer (services/notification/ledger.py returns the same).

@dataclass(frozen=True)
class Claim:
    retracted: bool
    to_refer: list[str]
    # retracted while referred by this service, the correction not confirmed yet
    owed_correction: list[str]

    @property
    def withheld(self) -> bool:
        """Retracted before any agency was claimed: the report is never referred."""
        return self.retracted and not self.to_refer


@dataclass(frozen=True)
class Confirmed:
    owed_correction: list[str]  # retracted while the referral was in flight
    amendments: list["Amend"]  # every amendment after release, in version order


@dataclass(frozen=True)
class Retraction:
    first: bool
    to_correct: list[str]
    # Read in the same step for the corrections to carry; not part of the state machine.
    mark: "Retract | None" = field(default=None, compare=False)
    priority: Priority = field(default=Priority.NORMAL, compare=False)


@dataclass(frozen=True)
class Amended:
    version: int
    to_notify: list[str]
    withheld: bool = False  # the report was retracted: its agencies are told nothing more


# The commands, as the ledger takes them for one report.

@dataclass(frozen=True)
class ClaimAgencies:
    agencies: tuple[str, ...]
    priority: Priority = Priority.NORMAL  # the report's, kept from its first claim


@dataclass(frozen=True)
class ConfirmReferrals:
    agencies: tuple[str, ...]


@dataclass(frozen=True)
class Retract:
    """A retraction's mark: when (ISO 8601), by whom (esp, analyst, system), who, why."""

    at: str
    by: Retractor
    actor: str
    reason: str

    @classmethod
    def of(cls, command: RetractReport) -> "Retract":
        return cls(command.requested_at.isoformat(), command.requested_by, command.actor,
                   command.reason)


@dataclass(frozen=True)
class ConfirmCorrections:
    agencies: tuple[str, ...]


@dataclass(frozen=True)
class Amend:
    version: int
    amendment: str  # JSON


Command = ClaimAgencies | ConfirmReferrals | Retract | ConfirmCorrections | Amend
Effect = Claim | Confirmed | Retraction | Amended | None


@dataclass(frozen=True)
class Referrals:
    """One report's ledger: each agency's state, the retraction mark, the amendments."""

    agencies: Mapping[str, AgencyState] = field(default_factory=dict)
    retraction: Retract | None = None  # the first retraction's mark; never removed
    amendments: Mapping[int, str] = field(default_factory=dict)  # version -> JSON
    priority: Priority | None = None  # kept from the first claim, for the corrections

    @property
    def retracted(self) -> bool:
        return self.retraction is not None

    def _in(self, *states: AgencyState) -> list[str]:
        return sorted(a for a, s in self.agencies.items() if s in states)

    def _moved(self, event: AgencyEvent, agencies: tuple[str, ...] | None = None) -> "Referrals":
        states = dict(self.agencies)
        for agency in self.agencies if agencies is None else agencies:
            if isinstance(to := move(states.get(agency), event, self.retracted), AgencyState):
                states[agency] = to
        return replace(self, agencies=states)


def apply(ledger: Referrals, command: Command) -> tuple[Referrals, Effect]:
    """One ledger step for one report: its next state and what the step answers."""
    S, E = AgencyState, AgencyEvent
    match command:
        case ClaimAgencies(agencies, priority):
            after = ledger._moved(E.CLAIM, agencies)
            if after.priority is None:
                after = replace(after, priority=priority)
            return after, Claim(after.retracted, after._in(S.REFERRING),
                                after._in(S.CORRECTING_AFTER_REFERRAL))
        case ConfirmReferrals(agencies):
            after = ledger._moved(E.CONFIRM_REFERRAL, agencies)
            owed = [a for a in agencies
                    if after.agencies.get(a) is S.CORRECTING_AFTER_REFERRAL]
            return after, Confirmed(owed, [Amend(v, a) for v, a in sorted(
                after.amendments.items())])
        case Retract():
            first = ledger.retraction is None
            after = replace(ledger, retraction=command if first else ledger.retraction)
            after = after._moved(E.RETRACT)
            return after, Retraction(first, after._in(S.CORRECTING), after.retraction,
                                     Priority.NORMAL if after.priority is None
                                     else after.priority)
        case ConfirmCorrections(agencies):
            return ledger._moved(E.CONFIRM_CORRECTION, agencies), None
        case Amend(version, amendment):
            after = replace(ledger, amendments={version: amendment, **ledger.amendments})
            if ledger.retracted:
                return after, Amended(version, [], withheld=True)
            return after, Amended(version, ledger._in(S.REFERRED))
