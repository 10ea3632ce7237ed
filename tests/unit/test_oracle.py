"""The chaos oracle (pure): each counter stays 0 when agencies got what the stream says, and
each one counts when they did not."""

from typing import Any

import pytest

from tipline.generate import Mix, events
from tipline.oracle import Notice, expectations, judge

A, B, C = "icac-ca", "us-federal", "uk-nca"


def submit(ref: str, expect: str = "valid", agencies: tuple[str, ...] = (A, B)) -> dict[str, Any]:
    return {"action": "submit", "ref": ref, "expect": expect,
            "agencies": list(agencies) if expect == "valid" else []}


class Agencies:
    """Notices as the watch records them: offsets grow per agency topic, one partition each."""

    def __init__(self) -> None:
        self.notices: list[Notice] = []
        self.offsets: dict[str, int] = {}

    def send(self, kind: str, report_id: str, *agencies: str, notice_id: str = "") -> None:
        for agency in agencies:
            offset = self.offsets.get(agency, 0)
            self.offsets[agency] = offset + 1
            self.notices.append(Notice(agency, kind, report_id,
                                       notice_id or f"{kind}-{report_id}-{agency}-{offset}",
                                       0, offset, float(len(self.notices))))


def verdict(stream: list[dict[str, Any]], accepted: dict[str, str | None],
            sent: Agencies) -> dict[str, Any]:
    return judge(expectations(stream), accepted, sent.notices).as_dict()


COUNTS = ("lost", "duplicated", "misrouted", "out_of_order")


def counts(result: dict[str, Any]) -> tuple[int, ...]:
    return tuple(result[c] for c in COUNTS)


def test_everything_as_expected_counts_nothing() -> None:
    stream = [submit("r1"), submit("r2"), {"action": "retract", "ref": "r2",
                                           "when": "after_referral"},
              submit("r3"), {"action": "amend", "ref": "r3"},
              submit("r4", "invalid"), submit("r5", "invalid"),
              {"action": "open", "ref": "r6", "expect": "abandoned", "agencies": []},
              {"action": "open", "ref": "r7", "expect": "withheld", "agencies": []},
              {"action": "retract", "ref": "r7", "api": "ispws", "when": "before_finish"},
              submit("r8"), {"action": "retract", "ref": "r8", "when": "before_referral"},
              submit("r9"), {"action": "retract", "ref": "r9", "when": "before_referral"}]
    sent = Agencies()
    sent.send("referral", "1", A, B)
    sent.send("referral", "2", A, B)
    sent.send("correction", "2", A, B)
    sent.send("referral", "3", A, B)
    sent.send("amendment", "3", A, B)
    # r8's retraction came first: never referred. r9's came after its referral: corrected.
    sent.send("referral", "9", A, B)
    sent.send("correction", "9", A, B)
    # A redelivery (the same notice id) is one notice.
    sent.notices.append(sent.notices[0])
    accepted = {f"r{i}": str(i) for i in range(1, 10)} | {"r5": None}
    result = verdict(stream, accepted, sent)
    assert counts(result) == (0, 0, 0, 0), result["examples"]
    assert result["outcomes"]["invalid, refused at intake"] == 1
    assert result["unattributed"] == 0


def test_lost_counts_missing_notices_and_reports_never_accepted() -> None:
    stream = [submit("r1"), submit("r2"), {"action": "retract", "ref": "r2",
                                           "when": "after_referral"},
              submit("r3"), {"action": "retract", "ref": "r3", "when": "after_referral"},
              submit("r4"), {"action": "amend", "ref": "r4"},
              submit("r5"), {"action": "retract", "ref": "r5", "when": "before_referral"},
              {"action": "open", "ref": "r6", "expect": "abandoned", "agencies": []}]
    sent = Agencies()
    sent.send("referral", "1", A)  # B never got r1
    sent.send("referral", "2", A, B)  # r2 retracted: no correction at all
    sent.send("referral", "4", A, B)  # r4 amended: no amendment
    sent.send("referral", "5", A)  # r5 referred before its retraction took: never corrected
    # r3: a retracted report whose referral and correction both never came.
    result = verdict(stream, {"r1": "1", "r2": "2", "r3": "3", "r4": "4", "r5": "5"}, sent)
    assert result["lost"] == 1 + 2 + 4 + 2 + 1 + 1  # ... and r6 was never even opened
    assert counts(result)[1:] == (0, 0, 0)
    assert result["outcomes"]["never accepted"] == 1


def test_a_valid_report_never_accepted_loses_every_notice_it_owed() -> None:
    stream = [submit("r1"), {"action": "retract", "ref": "r1", "when": "after_referral"}]
    assert verdict(stream, {}, Agencies())["lost"] == 4  # two referrals, two corrections


def test_duplicated_counts_a_second_notice_whatever_its_id() -> None:
    stream = [submit("r1"), submit("r2"), {"action": "retract", "ref": "r2",
                                           "when": "after_referral"},
              submit("r3"), {"action": "amend", "ref": "r3"}]
    sent = Agencies()
    sent.send("referral", "1", A, B)
    sent.send("referral", "1", A)  # another id, the same (report, agency)
    sent.send("referral", "2", A, B)
    sent.send("correction", "2", A, B)
    sent.send("correction", "2", B)
    sent.send("referral", "3", A, B)
    sent.send("amendment", "3", A, B)
    sent.send("amendment", "3", A)
    result = verdict(stream, {"r1": "1", "r2": "2", "r3": "3"}, sent)
    assert counts(result) == (0, 3, 0, 0)


def test_misrouted_counts_notices_no_agency_should_have_had() -> None:
    stream = [submit("r1"), submit("r2", "invalid"),
              {"action": "open", "ref": "r3", "expect": "withheld", "agencies": []},
              {"action": "retract", "ref": "r3", "api": "ispws", "when": "before_finish"},
              submit("r4")]
    sent = Agencies()
    sent.send("referral", "1", A, B, C)  # C is outside r1's jurisdiction
    sent.send("referral", "2", A)  # an invalid report referred
    sent.send("referral", "3", A)  # a withheld report referred
    sent.send("referral", "4", A, B)
    sent.send("correction", "4", A)  # r4 was never retracted
    result = verdict(stream, {"r1": "1", "r2": "2", "r3": "3", "r4": "4"}, sent)
    assert counts(result) == (0, 0, 4, 0)


def test_out_of_order_counts_corrections_and_amendments_before_their_referral() -> None:
    stream = [submit("r1"), {"action": "retract", "ref": "r1", "when": "after_referral"},
              submit("r2"), {"action": "amend", "ref": "r2"},
              submit("r3"), {"action": "retract", "ref": "r3", "when": "before_referral"}]
    sent = Agencies()
    sent.send("correction", "1", A)
    sent.send("referral", "1", A, B)
    sent.send("correction", "1", B)
    sent.send("amendment", "2", A)
    sent.send("referral", "2", A, B)
    sent.send("amendment", "2", B)
    sent.send("correction", "3", A)  # a correction with no referral at all
    result = verdict(stream, {"r1": "1", "r2": "2", "r3": "3"}, sent)
    assert counts(result) == (0, 0, 0, 3)


def test_notices_of_reports_outside_the_stream_are_unattributed() -> None:
    sent = Agencies()
    sent.send("referral", "1", A, B)
    sent.send("referral", "99", A)
    result = verdict([submit("r1")], {"r1": "1"}, sent)
    assert counts(result) == (0, 0, 0, 0)
    assert result["unattributed"] == 1


def test_expectations_follow_the_generated_stream() -> None:
    stream = list(events(600, seed=4, mix=Mix()))
    expected = expectations(stream)
    labels = {e.label for e in expected.values()}
    assert {"referred", "invalid", "amended", "abandoned", "withheld",
            "retracted before referral", "retracted after referral"} <= labels
    assert all(e.agencies for e in expected.values() if e.outcome == "valid")
    with pytest.raises(ValueError, match="before its report"):
        expectations([{"action": "amend", "ref": "r1"}])

