"""Derived ids never change: a redelivery, a restart or a new version of tipline must derive the
same id for the same thing, or an agency would keep a correction twice."""

import uuid

from hypothesis import given
from hypothesis import strategies as st

from shared.contracts import derived_id

NAMESPACE = uuid.UUID("6f1c1a52-54b6-4c39-9d6f-3b0f4c1d2e7a")


def test_a_notice_id_is_the_one_earlier_versions_derived() -> None:
    expected = "4594b6da-f086-5e9b-8046-02c33d2ca1f6"
    assert derived_id("notice", "referral", "r-1", "icac-ca") == expected


@given(st.lists(st.text(), min_size=1, max_size=5))
def test_a_derived_id_is_the_uuid5_of_its_parts(parts: list[str]) -> None:
    assert derived_id(*parts) == str(uuid.uuid5(NAMESPACE, "|".join(parts)))
