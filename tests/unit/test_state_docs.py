"""docs/architecture.md shows the state machines as tables made from the machines themselves: each
cell is what the transition function answers. Print them with
`python -m tests.unit.test_state_docs` after changing a machine."""

from pathlib import Path

from services.intake import lifecycle
from services.intake.lifecycle import Draft, DraftState
from services.intake.status import RANK
from services.notification import acknowledgements, referrals
from services.notification.acknowledgements import NoticeEvent, NoticeState
from services.notification.referrals import AgencyEvent, AgencyState
from services.supplementation import holds
from services.supplementation.holds import CaseEvent, CaseFile, CaseState
from shared.audiences import Status

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
NONE = "(none)"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def status_table() -> str:
    return table(["status", "rank"], [[s.value, str(RANK[s])] for s in Status])


def referral_table() -> str:
    columns = [(AgencyEvent.CLAIM, False), (AgencyEvent.CLAIM, True),
               (AgencyEvent.CONFIRM_REFERRAL, False), (AgencyEvent.CONFIRM_REFERRAL, True),
               (AgencyEvent.RETRACT, True), (AgencyEvent.CONFIRM_CORRECTION, True)]

    def cell(state: AgencyState | None, event: AgencyEvent, retracted: bool) -> str:
        to = referrals.move(state, event, retracted)
        return to.value if isinstance(to, AgencyState) else f"no: {to.reason}"

    return table(["agency", *(f"{e}" + (" (retracted)" if r and e in (
        AgencyEvent.CLAIM, AgencyEvent.CONFIRM_REFERRAL) else "") for e, r in columns)],
        [[s or NONE, *(cell(s, e, r) for e, r in columns)] for s in [None, *AgencyState]])


def draft_table() -> str:
    commands: list[tuple[str, lifecycle.Command]] = [
        ("open", lifecycle.Create(DraftState.OPEN)),
        ("submit (/v1)", lifecycle.Create(DraftState.FINISHED)),
        ("add or describe a file", lifecycle.AddFile("{}")),
        ("finish", lifecycle.Finish()),
        ("retract", lifecycle.Retract()),
        ("retract (strict)", lifecycle.Retract(strict=True)),
        ("abandon (deadline passed)", lifecycle.Abandon()),
        ("add information (public)", lifecycle.AddInformation()),
    ]
    windows = lifecycle.Windows(60.0, 60.0)

    def cell(state: DraftState | None, command: lifecycle.Command) -> str:
        draft = Draft(state, 0.0, 0.0) if state else None
        at = 61.0 if isinstance(command, lifecycle.Abandon) else 1.0
        after, answer = lifecycle.step(draft, command, at, windows)
        return after.state.value if answer.ok and after else f"no: {answer.outcome}"

    return table(["draft", *(name for name, _ in commands)],
                 [[s or NONE, *(cell(s, c) for _, c in commands)] for s in [None, *DraftState]])


def notice_table() -> str:
    def cell(state: NoticeState | None, event: NoticeEvent) -> str:
        to = acknowledgements.settle(state, event)
        return to.value if isinstance(to, NoticeState) else f"no: {to.reason}"

    return table(["notice", *NoticeEvent],
                 [[s or NONE, *(cell(s, e) for e in NoticeEvent)] for s in [None, *NoticeState]])


def case_table() -> str:
    rows = [(NONE, CaseFile()), ("held", CaseFile(CaseState.HELD)),
            ("held, report in", CaseFile(CaseState.HELD, True)),
            ("open", CaseFile(CaseState.OPEN)),
            ("releasing", CaseFile(CaseState.RELEASING, True)),
            ("released", CaseFile(CaseState.RELEASED, True)),
            ("closed", CaseFile(CaseState.CLOSED, True))]
    events = [e for e in CaseEvent if e is not CaseEvent.KEEP_AMENDMENT]

    def cell(case: CaseFile, event: CaseEvent) -> str:
        _, answer = holds.apply(case, event)
        if answer.version:
            return "next change after release"
        return f"no: {answer.says}" if answer.refused else answer.says

    header = [e.value.replace("keep supplement", "keep an addition") for e in events]
    return table(["case file", *header], [[name, *(cell(c, e) for e in events)]
                                          for name, c in rows])


TABLES = [status_table, referral_table, draft_table, notice_table, case_table]


def test_the_architecture_doc_shows_each_machine_as_it_is() -> None:
    doc = DOC.read_text()
    for make in TABLES:
        assert make() in doc, f"docs/architecture.md should show:\n\n{make()}\n"


def test_the_doc_names_every_state() -> None:
    section = DOC.read_text().split("## State machines", 1)[1].split("\n## ", 1)[0]
    for states in (Status, AgencyState, DraftState, NoticeState, CaseState):
        for state in states:
            assert f"| {state.value} |" in section, state


if __name__ == "__main__":
    print("\n\n".join(make() for make in TABLES))
