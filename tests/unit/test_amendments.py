"""Amendments (pure): the ESP's original is never changed, and any path or value an analyst can
send is either applied or refused with a reason (never another exception, so never a 5xx)."""

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.amendments import BadAmendment, apply, current_value
from shared.contracts import FileInfo, Location, Report, ReportedUser

ORIGINAL = Report(
    incident_type="Child Sex Tourism", location=Location(country="US", us_state="TX"),
    reported_users=[ReportedUser(screen_name="synthetic-user")],
    files=[FileInfo(file_id="f1", details={"note": "synthetic"})],
)
SEGMENTS = ["location", "us_state", "country", "reported_users", "files", "details", "extra",
            "incident_type", "child_in_imminent_danger", "0", "1", "7", "", "screen_name", "x",
            "__class__", "-1", "model_config"]
json_values: Any = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=4), value=json_values)
def test_any_amendment_is_applied_or_refused_with_a_reason(parts: list[str], value: Any) -> None:
    path = ".".join(parts)
    before = ORIGINAL.model_dump()
    try:
        amended = apply(ORIGINAL, path, value)
        assert current_value(amended, path) is not None or value is None
    except BadAmendment as refused:
        assert refused.reason and refused.field in ("path", "value")
    assert ORIGINAL.model_dump() == before


def test_amending_keeps_the_original_and_reports_the_previous_value() -> None:
    amended = apply(ORIGINAL, "location.us_state", "NM")
    assert amended.location.us_state == "NM"
    assert ORIGINAL.location.us_state == "TX"
    assert current_value(ORIGINAL, "reported_users.0.screen_name") == "synthetic-user"


@pytest.mark.parametrize("path,value,field", [
    ("location.planet", "x", "path"),
    ("reported_users.3.screen_name", "x", "path"),
    ("incident_at", "not a date", "value"),
    ("child_in_imminent_danger", "perhaps", "value"),
])
def test_refusals_name_the_part_that_is_wrong(path: str, value: Any, field: str) -> None:
    with pytest.raises(BadAmendment) as refused:
        apply(ORIGINAL, path, value)
    assert refused.value.field == field
