"""The 12-digit number of the chip ID card (CCCD) and personal identification number, shared by kiosk and hub.

Structure (Circular 07/2016/TT-BCA, Decree 137/2015/ND-CP): ``PPP G YY NNNNNN`` where PPP is the
province or city of birth registration, G the century and gender digit (0/1: 1900s male/female,
2/3: 2000s, 4/5: 2100s …), YY the last two digits of the birth year, and six serial digits.

The province list is the 63 provinces and cities before the 2025 merger; numbers already issued keep
their codes, so it stays valid for reading cards.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

#: Province / city codes on CCCD numbers, code -> Vietnamese name.
PROVINCES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "001": "Hà Nội",
        "002": "Hà Giang",
        "004": "Cao Bằng",
        "006": "Bắc Kạn",
        "008": "Tuyên Quang",
        "010": "Lào Cai",
        "011": "Điện Biên",
        "012": "Lai Châu",
        "014": "Sơn La",
        "015": "Yên Bái",
        "017": "Hoà Bình",
        "019": "Thái Nguyên",
        "020": "Lạng Sơn",
        "022": "Quảng Ninh",
        "024": "Bắc Giang",
        "025": "Phú Thọ",
        "026": "Vĩnh Phúc",
        "027": "Bắc Ninh",
        "030": "Hải Dương",
        "031": "Hải Phòng",
        "033": "Hưng Yên",
        "034": "Thái Bình",
        "035": "Hà Nam",
        "036": "Nam Định",
        "037": "Ninh Bình",
        "038": "Thanh Hoá",
        "040": "Nghệ An",
        "042": "Hà Tĩnh",
        "044": "Quảng Bình",
        "045": "Quảng Trị",
        "046": "Thừa Thiên Huế",
        "048": "Đà Nẵng",
        "049": "Quảng Nam",
        "051": "Quảng Ngãi",
        "052": "Bình Định",
        "054": "Phú Yên",
        "056": "Khánh Hoà",
        "058": "Ninh Thuận",
        "060": "Bình Thuận",
        "062": "Kon Tum",
        "064": "Gia Lai",
        "066": "Đắk Lắk",
        "067": "Đắk Nông",
        "068": "Lâm Đồng",
        "070": "Bình Phước",
        "072": "Tây Ninh",
        "074": "Bình Dương",
        "075": "Đồng Nai",
        "077": "Bà Rịa – Vũng Tàu",
        "079": "Hồ Chí Minh",
        "080": "Long An",
        "082": "Tiền Giang",
        "083": "Bến Tre",
        "084": "Trà Vinh",
        "086": "Vĩnh Long",
        "087": "Đồng Tháp",
        "089": "An Giang",
        "091": "Kiên Giang",
        "092": "Cần Thơ",
        "093": "Hậu Giang",
        "094": "Sóc Trăng",
        "095": "Bạc Liêu",
        "096": "Cà Mau",
    }
)

NUMBER: Final = re.compile(r"[0-9]{12}")


class NumberProblem(StrEnum):
    """Why a CCCD number is not acceptable (checked in this order)."""

    FORMAT = "format"  # not exactly 12 digits
    PROVINCE = "province"  # unknown province code
    CENTURY = "century"  # the century digit disagrees with the birth year
    GENDER = "gender"  # the gender digit disagrees with the gender
    BIRTH_YEAR = "birth_year"  # the two year digits disagree with the birth year


def century_digit_female(number: str) -> bool:
    """True when the number's century/gender digit is a woman's (odd)."""
    return int(number[3]) % 2 == 1


def check_number(
    number: str, *, birth_year: int | None = None, female: bool | None = None
) -> NumberProblem | None:
    """The first problem of ``number`` against what is known of its holder, or None when it agrees."""
    if not NUMBER.fullmatch(number):
        return NumberProblem.FORMAT
    if number[:3] not in PROVINCES:
        return NumberProblem.PROVINCE
    digit = int(number[3])
    if birth_year is not None and 1900 + 100 * (digit // 2) != birth_year // 100 * 100:
        return NumberProblem.CENTURY
    if female is not None and century_digit_female(number) != female:
        return NumberProblem.GENDER
    if birth_year is not None and int(number[4:6]) != birth_year % 100:
        return NumberProblem.BIRTH_YEAR
    return None
