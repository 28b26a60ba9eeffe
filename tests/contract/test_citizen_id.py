"""GB 11643 ID numbers: one check character for everyone who makes or checks them."""

from __future__ import annotations

import pytest

from contract.citizen_id import gb11643_check_char, make_gb11643, validate_gb11643


def test_check_char_of_the_standards_example() -> None:
    assert gb11643_check_char("11010519491231002") == "X"
    assert validate_gb11643("11010519491231002X") is None
    assert "GB 11643 gives X" in (validate_gb11643("110105194912310021") or "")


def test_made_up_numbers_are_valid_and_keep_their_parts() -> None:
    made = make_gb11643("370102", "19850612", 1234)
    assert made.startswith("37010219850612234")
    assert all(validate_gb11643(make_gb11643("370102", "19850612", i)) is None for i in range(200))


@pytest.mark.parametrize(
    ("region", "birth"), [("3701", "19850612"), ("370102", "1985061"), ("37010a", "19850612")]
)
def test_malformed_parts_are_refused(region: str, birth: str) -> None:
    with pytest.raises(ValueError):
        make_gb11643(region, birth, 1)
