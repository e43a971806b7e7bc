"""The CCCD number rules shared by the kiosk (reading cards) and the hub (declarations)."""

from __future__ import annotations

import pytest

from protocol.cccd import PROVINCES, NumberProblem, check_number


def test_the_63_provinces_before_the_2025_merger():
    assert len(PROVINCES) == 63
    assert PROVINCES["001"] == "Hà Nội" and PROVINCES["079"] == "Hồ Chí Minh"


@pytest.mark.parametrize(
    ("number", "birth_year", "female", "problem"),
    [
        ("001190012345", 1990, True, None),  # Hà Nội, 1900s woman, born 1990
        ("079090000001", 1990, False, None),  # Hồ Chí Minh, 1900s man
        ("001215000001", 2015, False, None),  # 2000s man
        ("001318000002", 2018, True, None),  # 2000s woman
        ("001190012345", None, None, None),  # the number alone
        ("00119001234", 1990, True, NumberProblem.FORMAT),
        ("00119001234X", 1990, True, NumberProblem.FORMAT),
        ("００１１９００１２３４５", 1990, True, NumberProblem.FORMAT),  # full-width digits
        ("003190012345", 1990, True, NumberProblem.PROVINCE),  # 003 is no province
        ("001190012345", 2090, True, NumberProblem.CENTURY),
        ("001190012345", 1990, False, NumberProblem.GENDER),
        ("001190012345", 1991, True, NumberProblem.BIRTH_YEAR),
    ],
)
def test_check_number(number, birth_year, female, problem):
    assert check_number(number, birth_year=birth_year, female=female) == problem
