"""Health declarations: NCOVI (voluntary, oneself and family members) and VHD (entrants); each gets a pass.

No Flask here: the web pages (hub/web/public.py) and the JSON API both validate with
:func:`validate_ncovi` / :func:`validate_vhd` and save with :func:`save_ncovi` / :func:`save_vhd`.

Validation has two steps, both reported per field (``DeclarationError.problems``: path -> (code, params),
paths like ``declarant.full_name`` or ``members.1.birth_date``):

1. each field on its own (pydantic): text cleaned (NFC, whitespace collapsed, control, format and
   undecodable characters refused, length limits), dates in ``yyyy-mm-dd`` or ``dd/mm/yyyy`` and
   compared with today's date in Vietnam (UTC+7, no daylight saving), choices from fixed lists;
2. fields against each other, once step 1 passed: the CCCD number against birth year and gender,
   vaccination answers, duplicate ID numbers within one submission.

Messages are English message ids marked with ``N_``; the web layer translates them with gettext at render
time (the "public" gettext domain), the API returns them in English with their stable codes.

Choices made here:

- A family member may give only a birth year when the exact date is unknown (``birth_year`` instead of
  ``birth_date``); the declarant and VHD entrants give the exact date. :func:`find_pass` then matches
  the year (see there).
- Every person needs an ID number: the 12-digit CCCD number, which children also have as their
  personal identification number ("số định danh cá nhân"), an old 9-digit CMND, or a passport number.
  It links a person's declarations: a new declaration for the same number supersedes the current one
  (of either kind), and when the new colour is worse than an unexpired older pass, that pass is put on
  the status list with the new colour, so kiosks stop showing the older, better colour.
- Tests must be from the last 14 days (the period a declaration covers), so a positive test in a
  declaration means a current infection (see hub/pass_rules.py).
- A VHD arrival date may be up to 3 days ahead (people declare before boarding) and up to 14 days past.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError
from sqlalchemy import Connection, and_, insert, select, text, update

from hub.config import PassSettings
from hub.db import from_db_time, to_db_time
from hub.db.schema import declarations, passes
from hub.keys import KeyRing
from hub.pass_rules import Exposure, Facts, Symptom, Verdict, evaluate
from hub.passes import (
    IssuedPass,
    current_colour,
    get_pass,
    initials_of,
    issue_pass,
    normalise_pass_id,
    set_status,
)
from protocol import cccd
from protocol.healthpass import Colour, PassKind

#: Vietnam's time zone (UTC+7 all year): "today" for date checks is the date in Vietnam.
VIETNAM_TZ = timezone(timedelta(hours=7), "ICT")
#: Most family members declared in one NCOVI submission besides the declarant.
MAX_MEMBERS = 10
MAX_TESTS = 3
MAX_COUNTRIES = 30
NAME_MIN, NAME_MAX = 2, 100
PLACE_MAX = 100
STREET_MAX = 300
VEHICLE_MAX = 20
SEAT_MAX = 8
EARLIEST_BIRTH_YEAR = 1900
#: The first COVID-19 vaccine doses were given in December 2020.
EARLIEST_VACCINATION = date(2020, 12, 1)
MAX_DOSES = 5
TEST_WINDOW = timedelta(days=14)
ARRIVAL_AHEAD = timedelta(days=3)
ARRIVAL_PAST = timedelta(days=14)
#: Reason recorded on an older pass whose colour a newer, worse declaration raised.
SUPERSEDED_REASON = "declaration_superseded"
#: Most letters of initials a pass carries (protocol/healthpass.py).
MAX_INITIALS = 8
#: Any single text field longer than this is refused before it is looked at any further.
_RAW_TEXT_MAX = 2000


def N_(message: str) -> str:
    """Mark an English message id for extraction; it is translated where it is shown."""
    return message


# --------------------------------------------------------------------------------- choices


class Gender(StrEnum):
    MALE = "male"
    FEMALE = "female"
    OTHER = "other"


class IdType(StrEnum):
    CCCD = "cccd"  # 12 digits: chip ID card or personal identification number
    CMND = "cmnd"  # old 9-digit ID card
    PASSPORT = "passport"


class Relationship(StrEnum):
    SPOUSE = "spouse"
    CHILD = "child"
    PARENT = "parent"
    SIBLING = "sibling"
    GRANDPARENT = "grandparent"
    GRANDCHILD = "grandchild"
    RELATIVE = "relative"
    OTHER = "other"


class Vaccine(StrEnum):
    ASTRAZENECA = "astrazeneca"
    PFIZER = "pfizer"
    MODERNA = "moderna"
    SINOPHARM = "sinopharm"
    SPUTNIK_V = "sputnik_v"
    JANSSEN = "janssen"
    ABDALA = "abdala"
    HAYAT_VAX = "hayat_vax"
    OTHER = "other"


class TestType(StrEnum):
    __test__ = False  # not a pytest test class

    PCR = "pcr"
    RAPID_ANTIGEN = "rapid_antigen"


class TestOutcome(StrEnum):
    __test__ = False

    NEGATIVE = "negative"
    POSITIVE = "positive"
    PENDING = "pending"


class TransportMode(StrEnum):
    AIR = "air"
    SEA = "sea"
    LAND = "land"


#: Labels (English message ids, translated where shown) of every choice, by enum.
CHOICE_LABELS: dict[type[StrEnum], dict[str, str]] = {
    Gender: {"male": N_("Male"), "female": N_("Female"), "other": N_("Other")},
    IdType: {
        "cccd": N_("CCCD or personal identification number (12 digits)"),
        "cmnd": N_("Old ID card, CMND (9 digits)"),
        "passport": N_("Passport"),
    },
    Relationship: {
        "spouse": N_("Husband or wife"),
        "child": N_("Child"),
        "parent": N_("Father or mother"),
        "sibling": N_("Brother or sister"),
        "grandparent": N_("Grandparent"),
        "grandchild": N_("Grandchild"),
        "relative": N_("Other relative"),
        "other": N_("Other (not a relative)"),
    },
    Vaccine: {
        "astrazeneca": "AstraZeneca (Vaxzevria)",
        "pfizer": "Pfizer-BioNTech (Comirnaty)",
        "moderna": "Moderna (Spikevax)",
        "sinopharm": "Sinopharm (Vero Cell)",
        "sputnik_v": "Sputnik V (Gam-COVID-Vac)",
        "janssen": "Janssen (Johnson & Johnson)",
        "abdala": "Abdala",
        "hayat_vax": "Hayat-Vax",
        "other": N_("Another vaccine"),
    },
    TestType: {"pcr": N_("RT-PCR test"), "rapid_antigen": N_("Rapid antigen test")},
    TestOutcome: {"negative": N_("Negative"), "positive": N_("Positive"), "pending": N_("No result yet")},
    TransportMode: {"air": N_("Aircraft"), "sea": N_("Ship"), "land": N_("Road or rail")},
}

#: The 63 provinces and cities, as an address's ``province`` must name one.
PROVINCES: tuple[str, ...] = tuple(cccd.PROVINCES.values())

#: ISO 3166-1 alpha-2 codes (officially assigned).
#: (One string: a list literal would take 249 lines.)
COUNTRY_CODES: frozenset[str] = frozenset(
    re.findall(
        "[A-Z]{2}",
        "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ "
        "BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM "
        "DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS "
        "GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN "
        "KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ "
        "MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM "
        "PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV "
        "SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI "
        "VN VU WF WS YE YT ZA ZM ZW",
    )
)

#: International border gates (airports, land and sea ports) with their labels.
BORDER_GATES: dict[str, str] = {
    "noi_bai": N_("Noi Bai International Airport (Hanoi)"),
    "tan_son_nhat": N_("Tan Son Nhat International Airport (Ho Chi Minh City)"),
    "da_nang": N_("Da Nang International Airport"),
    "cam_ranh": N_("Cam Ranh International Airport (Khanh Hoa)"),
    "van_don": N_("Van Don International Airport (Quang Ninh)"),
    "cat_bi": N_("Cat Bi International Airport (Hai Phong)"),
    "phu_quoc": N_("Phu Quoc International Airport (Kien Giang)"),
    "can_tho": N_("Can Tho International Airport"),
    "phu_bai": N_("Phu Bai International Airport (Thua Thien Hue)"),
    "huu_nghi": N_("Huu Nghi border gate (Lang Son)"),
    "mong_cai": N_("Mong Cai border gate (Quang Ninh)"),
    "lao_cai": N_("Lao Cai border gate"),
    "cau_treo": N_("Cau Treo border gate (Ha Tinh)"),
    "lao_bao": N_("Lao Bao border gate (Quang Tri)"),
    "bo_y": N_("Bo Y border gate (Kon Tum)"),
    "moc_bai": N_("Moc Bai border gate (Tay Ninh)"),
    "tinh_bien": N_("Tinh Bien border gate (An Giang)"),
    "ha_tien": N_("Ha Tien border gate (Kien Giang)"),
    "hai_phong_port": N_("Hai Phong seaport"),
    "sai_gon_port": N_("Saigon seaport (Ho Chi Minh City)"),
    "other": N_("Another border gate"),
}

# --------------------------------------------------------------------------------- messages

#: Every problem code with its English message id (``%(name)s`` placeholders take the params).
MESSAGES: dict[str, str] = {
    "required": N_("This field is required."),
    "invalid": N_("This value is not valid."),
    "choose_one": N_("Choose one of the options."),
    "unknown_field": N_("This field is not part of the form."),
    "too_many": N_("Too many entries: at most %(max)s."),
    "invalid_date": N_("Enter a date as dd/mm/yyyy."),
    "invalid_number": N_("Enter a whole number."),
    "out_of_range": N_("Choose a number from the list."),
    "date_future": N_("The date cannot be in the future."),
    "birth_too_early": N_("The birth date must be in 1900 or later."),
    "birth_year_range": N_("Enter a birth year from 1900 to this year."),
    "birth_year_mismatch": N_("The birth year does not match the birth date."),
    "birth_missing": N_("Enter the birth date, or at least the birth year."),
    "control_chars": N_("Remove special or invisible characters from this field."),
    "text_too_long": N_("Too long: at most %(max)s characters."),
    "name_length": N_("Enter the full name: 2 to 100 characters."),
    "name_chars": N_("A name may contain only letters, spaces, hyphens, apostrophes and full stops."),
    "phone": N_("Enter a Vietnamese mobile number such as 0912345678 or +84912345678."),
    "phone_international": N_(
        "Enter a mobile number such as 0912345678, or an international number starting with +."
    ),
    "cccd_format": N_("A CCCD number has 12 digits."),
    "cccd_province": N_("The first three digits of a CCCD number are a province code; check the number."),
    "cccd_birth_year": N_(
        "The CCCD number does not match the birth year (digits 4 to 6); check the number and the birth date."
    ),
    "cccd_gender": N_(
        "The CCCD number does not match the gender (digit 4); check the number and the gender."
    ),
    "cmnd_format": N_("An old ID card (CMND) number has 9 digits."),
    "passport_format": N_("A passport number has 6 to 20 letters and digits."),
    "id_needs_vietnamese": N_("A CCCD or CMND number belongs to a Vietnamese citizen: choose Viet Nam."),
    "duplicate_person": N_("This ID number is already used by another person in this declaration."),
    "country": N_("Choose a country."),
    "province": N_("Choose a province or city."),
    "doses_without_date": N_("Enter the date of the last dose."),
    "doses_without_vaccine": N_("Choose the vaccine of the last dose."),
    "no_doses": N_("Leave this empty when no dose was given, or enter the number of doses."),
    "vaccination_too_early": N_("COVID-19 vaccination started in December 2020; check the date."),
    "before_birth": N_("This date is before the birth date."),
    "test_too_old": N_("Only tests from the last 14 days count; leave older tests out."),
    "arrival_window": N_("The arrival date must be within the last 14 days or the next 3 days."),
    "vehicle": N_("Enter the flight or vehicle number: letters, digits, spaces and hyphens, at most 20."),
    "seat": N_("Enter the seat: letters and digits, at most 8."),
}

#: pydantic's error types -> our codes.
_PYDANTIC_CODES = {
    "missing": "required",
    "too_short": "required",
    "extra_forbidden": "unknown_field",
    "enum": "choose_one",
    "literal_error": "choose_one",
    "too_long": "too_many",
    "int_parsing": "invalid_number",
    "int_type": "invalid_number",
    "int_from_float": "invalid_number",
    "greater_than_equal": "out_of_range",
    "less_than_equal": "out_of_range",
    "date_type": "invalid_date",
    "date_parsing": "invalid_date",
    "date_from_datetime_parsing": "invalid_date",
}


class DeclarationError(ValueError):
    """A declaration that cannot be saved; ``problems`` maps a field path to (code, params)."""

    def __init__(self, problems: Mapping[str, tuple[str, Mapping[str, Any]]]):
        self.problems = dict(problems)
        first = ", ".join(f"{path}: {code}" for path, (code, _params) in list(self.problems.items())[:5])
        super().__init__(f"the declaration has {len(self.problems)} problem(s): {first}")

    @property
    def codes(self) -> dict[str, str]:
        """Field path -> problem code (stable, for machines)."""
        return {path: code for path, (code, _params) in self.problems.items()}

    @property
    def errors(self) -> dict[str, str]:
        """Field path -> English message."""
        return self.messages()

    def messages(self, translate: Callable[[str], str] | None = None) -> dict[str, str]:
        """Field path -> message, translated by ``translate`` (e.g. flask_babel.gettext) when given."""
        out = {}
        for path, (code, params) in self.problems.items():
            template = MESSAGES.get(code, MESSAGES["invalid"])
            text = translate(template) if translate is not None else template
            out[path] = text % dict(params) if params else text
        return out


def _fail(code: str, **params: Any) -> PydanticCustomError:
    # The template is our code; params travel in ctx and are put into the message at render time.
    return PydanticCustomError(code, code, params or None)


# --------------------------------------------------------------------------------- field checks

#: Characters refused anywhere: control (other than whitespace), format (e.g. bidi overrides,
#: zero-width), surrogates, private use, unassigned, and U+FFFD, which stands for undecodable bytes.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_WHITESPACE_CONTROLS = frozenset("\t\n\r\v\f")


def _has_refused(text: str) -> bool:
    return any(
        (unicodedata.category(c) in _REFUSED_CATEGORIES and c not in _WHITESPACE_CONTROLS) or c == "\ufffd"
        for c in text
    )


def clean_text(value: object, max_len: int) -> str | None:
    """NFC, whitespace collapsed; None when blank; raises a pydantic error for bad text or length."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail("invalid")
    if len(value) > _RAW_TEXT_MAX:
        raise _fail("text_too_long", max=max_len)
    if _has_refused(value):
        raise _fail("control_chars")
    text = " ".join(unicodedata.normalize("NFC", value).split())
    if not text:
        return None
    if len(text) > max_len:
        raise _fail("text_too_long", max=max_len)
    return text


def _required(value: object) -> object:
    if value is None:
        raise _fail("required")
    return value


def _text(max_len: int, *, required: bool = True):
    def check(value: object) -> str | None:
        text = clean_text(value, max_len)
        return _required(text) if required else text  # type: ignore[return-value]

    return BeforeValidator(check)


_NAME_PUNCTUATION = frozenset(" '’-.")


def check_name(value: object) -> str:
    """A person's full name: NFC, 2–100 characters of letters, spaces and ' - . (at least one letter)."""
    if isinstance(value, str) and len(value) <= _RAW_TEXT_MAX and not _has_refused(value):
        collapsed = " ".join(unicodedata.normalize("NFC", value).split())
        if collapsed and not NAME_MIN <= len(collapsed) <= NAME_MAX:
            raise _fail("name_length")
    text = _required(clean_text(value, NAME_MAX))
    assert isinstance(text, str)
    if len(text) < NAME_MIN:
        raise _fail("name_length")
    for char in text:
        if char in _NAME_PUNCTUATION:
            continue
        if unicodedata.category(char)[0] not in "LM":
            raise _fail("name_chars")
    if not any(unicodedata.category(c)[0] == "L" for c in text):
        raise _fail("name_chars")
    # The pass carries the initials: a name they cannot be taken from is refused here rather than
    # failing when the pass is signed.
    try:
        initials = initials_of(text)
    except ValueError:
        raise _fail("name_chars") from None
    if not (1 <= len(initials) <= MAX_INITIALS and initials.isalpha()):
        raise _fail("name_chars")
    return text


_YMD = re.compile(r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})")
_DMY = re.compile(r"([0-9]{1,2})[/.\-]([0-9]{1,2})[/.\-]([0-9]{4})")


def parse_date(value: object) -> date | None:
    """A date from ``yyyy-mm-dd`` or ``dd/mm/yyyy`` (also ``-`` or ``.`` between); None when blank."""
    if value is None:
        return None
    if isinstance(value, datetime):
        raise _fail("invalid_date")
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise _fail("invalid_date")
    text = value.strip()
    if not text:
        return None
    if len(text) > 10:
        raise _fail("invalid_date")
    if match := _YMD.fullmatch(text):
        year, month, day = (int(g) for g in match.groups())
    elif match := _DMY.fullmatch(text):
        day, month, year = (int(g) for g in match.groups())
    else:
        raise _fail("invalid_date")
    try:
        return date(year, month, day)
    except ValueError:
        raise _fail("invalid_date") from None


def parse_birth(text: str) -> date | int | None:
    """A birth date (``dd/mm/yyyy`` or ``yyyy-mm-dd``) or a four-digit birth year; None if neither."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    if len(text) == 4 and text.isascii() and text.isdigit():
        return int(text)
    try:
        return parse_date(text)
    except PydanticCustomError:
        return None


def _date(*, required: bool):
    def check(value: object) -> date | None:
        parsed = parse_date(value)
        return _required(parsed) if required else parsed  # type: ignore[return-value]

    return BeforeValidator(check)


def _optional_int(value: object) -> object:
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if len(text) > 6 or not text.isascii() or not text.isdigit():
            raise _fail("invalid_number")
        return int(text)
    if isinstance(value, bool):
        raise _fail("invalid_number")
    return value


def _doses(value: object) -> object:
    value = _optional_int(value)
    return 0 if value is None else value


def _blank_to_none(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, str):
        return value.strip()
    return value


def _choice(value: object) -> object:
    value = _blank_to_none(value)
    return _required(value)


def _optional_choice(value: object) -> object:
    return _blank_to_none(value)


_VN_MOBILE = re.compile(r"0[35789][0-9]{8}")
_INTERNATIONAL = re.compile(r"\+[1-9][0-9]{7,14}")
_PHONE_SEPARATORS = str.maketrans("", "", " .-()")


def normalise_phone(value: object, *, international: bool = False) -> str | None:
    """A phone number in E.164 (``+84912345678``); Vietnamese mobile numbers in 0…, 84… or +84… form.

    With ``international`` other countries' numbers (``+`` and 8 to 15 digits) are accepted too.
    None when blank; raises a pydantic error otherwise.
    """
    text = clean_text(value, 30)
    if text is None:
        return None
    digits = text.translate(_PHONE_SEPARATORS)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if digits.startswith("+84"):
        digits = "0" + digits[3:]
    elif digits.startswith("84") and len(digits) == 11:
        digits = "0" + digits[2:]
    if _VN_MOBILE.fullmatch(digits):
        return "+84" + digits[1:]
    if international and _INTERNATIONAL.fullmatch(digits):
        return digits
    raise _fail("phone_international" if international else "phone")


def _phone(*, required: bool, international: bool = False):
    def check(value: object) -> str | None:
        phone = normalise_phone(value, international=international)
        return _required(phone) if required else phone  # type: ignore[return-value]

    return BeforeValidator(check)


def _country(value: object) -> str:
    text = _required(clean_text(value, 60))
    assert isinstance(text, str)
    code = text.upper()
    if code not in COUNTRY_CODES:
        raise _fail("country")
    return code


def _province(value: object) -> str:
    text = _required(clean_text(value, PLACE_MAX))
    assert isinstance(text, str)
    for name in PROVINCES:
        if name.casefold() == text.casefold():
            return name
    raise _fail("province")


#: Field error codes for a CCCD number's problems (rules in protocol/cccd.py, shared with the kiosk).
_CCCD_CODES = {
    cccd.NumberProblem.FORMAT: "cccd_format",
    cccd.NumberProblem.PROVINCE: "cccd_province",
    cccd.NumberProblem.CENTURY: "cccd_birth_year",
    cccd.NumberProblem.BIRTH_YEAR: "cccd_birth_year",
    cccd.NumberProblem.GENDER: "cccd_gender",
}
_CMND = re.compile(r"[0-9]{9}")
_PASSPORT = re.compile(r"[A-Z0-9]{6,20}")
_ID_SEPARATORS = str.maketrans("", "", " .-")


def _id_number(value: object) -> str:
    text = _required(clean_text(value, 40))
    assert isinstance(text, str)
    return text.translate(_ID_SEPARATORS).upper()


_VEHICLE = re.compile(r"[A-Z0-9][A-Z0-9 \-]{0,19}")
_SEAT = re.compile(r"[A-Z0-9]{1,8}")


def _vehicle(value: object) -> str:
    text = _required(clean_text(value, VEHICLE_MAX))
    assert isinstance(text, str)
    text = text.upper()
    if not _VEHICLE.fullmatch(text):
        raise _fail("vehicle")
    return text


def _seat(value: object) -> str | None:
    text = clean_text(value, SEAT_MAX)
    if text is None:
        return None
    text = text.replace(" ", "").upper()
    if not _SEAT.fullmatch(text):
        raise _fail("seat")
    return text


def _unique(values: list) -> list:
    """Order kept, duplicates dropped (a checkbox sent twice is one answer)."""
    return list(dict.fromkeys(values))


def today_in_vietnam(now: datetime | None = None) -> date:
    """The date in Vietnam at ``now`` (default: the current time)."""
    now = datetime.now(UTC) if now is None else now
    return to_db_time(now).astimezone(VIETNAM_TZ).date()


def _today(info: ValidationInfo) -> date:
    context = info.context or {}
    today = context.get("today")
    return today if isinstance(today, date) else today_in_vietnam()


def _not_future(value: date | None, info: ValidationInfo) -> date | None:
    if value is not None and value > _today(info):
        raise _fail("date_future")
    return value


# --------------------------------------------------------------------------------- models

Name = Annotated[str, BeforeValidator(check_name), Field(description="Full name (NFC), 2–100 characters.")]
RequiredDate = Annotated[date, _date(required=True), Field(description="yyyy-mm-dd or dd/mm/yyyy.")]
OptionalDate = Annotated[date | None, _date(required=False), Field(description="yyyy-mm-dd or dd/mm/yyyy.")]
Place = Annotated[str, _text(PLACE_MAX), Field(max_length=PLACE_MAX)]
Country = Annotated[
    str, BeforeValidator(_country), Field(description="ISO 3166-1 alpha-2 code", min_length=2, max_length=2)
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=_RAW_TEXT_MAX)


class Address(_Model):
    """Where a person lives (NCOVI) or stays in quarantine (VHD)."""

    province: Annotated[str, BeforeValidator(_province), Field(json_schema_extra={"enum": list(PROVINCES)})]
    district: Place = Field(description="District, town or city of the province.")
    commune: Place = Field(description="Commune, ward or township.")
    street: Annotated[str, _text(STREET_MAX), Field(max_length=STREET_MAX)] = Field(
        description="House number, street, hamlet."
    )


class Vaccination(_Model):
    """COVID-19 vaccination: doses received, date and vaccine of the last dose."""

    doses: Annotated[int, BeforeValidator(_doses)] = Field(default=0, ge=0, le=MAX_DOSES)
    last_dose_date: OptionalDate = None
    vaccine: Annotated[Vaccine | None, BeforeValidator(_optional_choice)] = None

    @field_validator("last_dose_date")
    @classmethod
    def _dose_date(cls, value: date | None, info: ValidationInfo) -> date | None:
        value = _not_future(value, info)
        if value is not None and value < EARLIEST_VACCINATION:
            raise _fail("vaccination_too_early")
        return value


class TestResult(_Model):
    """A COVID-19 test from the last 14 days."""

    __test__ = False  # not a pytest test class

    type: Annotated[TestType, BeforeValidator(_choice)]
    date: RequiredDate
    result: Annotated[TestOutcome, BeforeValidator(_choice)]

    @field_validator("date")
    @classmethod
    def _recent(cls, value: date, info: ValidationInfo) -> date:
        _not_future(value, info)
        if value < _today(info) - TEST_WINDOW:
            raise _fail("test_too_old")
        return value


Symptoms = Annotated[list[Symptom], Field(default_factory=list, max_length=len(Symptom) * 2)]
Exposures = Annotated[list[Exposure], Field(default_factory=list, max_length=len(Exposure) * 2)]
Tests = Annotated[list[TestResult], Field(default_factory=list, max_length=MAX_TESTS)]


class _Health(_Model):
    symptoms: Symptoms
    exposures: Exposures
    tests: Tests

    @field_validator("symptoms", "exposures")
    @classmethod
    def _dedupe(cls, value: list) -> list:
        return _unique(value)


class _NcoviPerson(_Health):
    full_name: Name
    gender: Annotated[Gender, BeforeValidator(_choice)]
    id_type: Annotated[IdType, BeforeValidator(_choice)]
    id_number: Annotated[str, BeforeValidator(_id_number), Field(max_length=32)]
    nationality: Country = "VN"
    vaccination: Vaccination = Field(default_factory=Vaccination)


class NcoviDeclarant(_NcoviPerson):
    """The person who fills in the NCOVI form, for themselves."""

    birth_date: RequiredDate
    phone: Annotated[str, _phone(required=True), Field(description="Vietnamese mobile number.")]
    address: Address

    @field_validator("birth_date")
    @classmethod
    def _birth(cls, value: date, info: ValidationInfo) -> date:
        return _check_birth_date(value, info)


class NcoviMember(_NcoviPerson):
    """A family member declared by the declarant ("khai hộ"): exact birth date or only the year."""

    relationship: Annotated[Relationship, BeforeValidator(_choice)]
    birth_date: OptionalDate = None
    birth_year: Annotated[int | None, BeforeValidator(_optional_int)] = Field(default=None)
    phone: Annotated[str | None, _phone(required=False)] = None
    address: Address | None = Field(default=None, description="Left out: the declarant's address.")

    @field_validator("birth_date")
    @classmethod
    def _birth(cls, value: date | None, info: ValidationInfo) -> date | None:
        return None if value is None else _check_birth_date(value, info)

    @field_validator("birth_year")
    @classmethod
    def _year(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not EARLIEST_BIRTH_YEAR <= value <= _today(info).year:
            raise _fail("birth_year_range")
        return value


class NcoviDeclaration(_Model):
    """A voluntary NCOVI health declaration: the declarant and up to 10 family members."""

    declarant: NcoviDeclarant
    members: list[NcoviMember] = Field(default_factory=list, max_length=MAX_MEMBERS)


class Transport(_Model):
    """How an entrant arrives."""

    mode: Annotated[TransportMode, BeforeValidator(_choice)]
    number: Annotated[str, BeforeValidator(_vehicle)] = Field(description="Flight or vehicle number.")
    seat: Annotated[str | None, BeforeValidator(_seat)] = None


class VhdDeclaration(_Health):
    """The mandatory entry health declaration (VHD) of one entrant."""

    full_name: Name
    birth_date: RequiredDate
    gender: Annotated[Gender, BeforeValidator(_choice)]
    nationality: Country
    passport_number: Annotated[str, BeforeValidator(_id_number), Field(max_length=32)]
    phone: Annotated[str | None, _phone(required=False, international=True)] = None
    transport: Transport
    border_gate: Annotated[
        str, BeforeValidator(_choice), Field(json_schema_extra={"enum": list(BORDER_GATES)})
    ]
    arrival_date: RequiredDate
    countries_visited: list[Country] = Field(min_length=1, max_length=MAX_COUNTRIES)
    quarantine_address: Address

    @field_validator("birth_date")
    @classmethod
    def _birth(cls, value: date, info: ValidationInfo) -> date:
        return _check_birth_date(value, info)

    @field_validator("border_gate")
    @classmethod
    def _gate(cls, value: str) -> str:
        if value not in BORDER_GATES:
            raise _fail("choose_one")
        return value

    @field_validator("arrival_date")
    @classmethod
    def _arrival(cls, value: date, info: ValidationInfo) -> date:
        today = _today(info)
        if not today - ARRIVAL_PAST <= value <= today + ARRIVAL_AHEAD:
            raise _fail("arrival_window")
        return value

    @field_validator("countries_visited")
    @classmethod
    def _dedupe_countries(cls, value: list[str]) -> list[str]:
        return _unique(value)

    @field_validator("passport_number")
    @classmethod
    def _passport(cls, value: str) -> str:
        if not _PASSPORT.fullmatch(value):
            raise _fail("passport_format")
        return value


def _check_birth_date(value: date, info: ValidationInfo) -> date:
    _not_future(value, info)
    if value.year < EARLIEST_BIRTH_YEAR:
        raise _fail("birth_too_early")
    return value


# --------------------------------------------------------------------------------- validation


def _path(loc: tuple) -> str:
    return ".".join(str(part) for part in loc)


def _problems_of(exc: ValidationError) -> dict[str, tuple[str, dict[str, Any]]]:
    problems: dict[str, tuple[str, dict[str, Any]]] = {}
    for error in exc.errors(include_url=False, include_input=False):
        kind = error["type"]
        ctx = error.get("ctx") or {}
        if kind in MESSAGES and error["msg"] == kind:  # one of ours (see _fail)
            code, params = kind, dict(ctx)
        elif kind == "string_too_long":
            code, params = "text_too_long", {"max": ctx.get("max_length", "")}
        else:
            code = _PYDANTIC_CODES.get(kind, "invalid")
            params = {"max": ctx.get("max_length", "")} if code == "too_many" else {}
        problems.setdefault(_path(error["loc"]) or "form", (code, params))
    return problems


def _check_id(
    problems: dict,
    prefix: str,
    id_type: IdType,
    number: str,
    birth_year: int | None,
    gender: Gender,
    nationality: str,
) -> None:
    """The ID number against its type (and a CCCD number against birth year and gender)."""
    where = f"{prefix}id_number"
    if id_type is IdType.CCCD:
        female = None if gender is Gender.OTHER else gender is Gender.FEMALE
        problem = cccd.check_number(number, birth_year=birth_year, female=female)
        if problem is not None:
            problems[where] = (_CCCD_CODES[problem], {})
            return
    elif id_type is IdType.CMND:
        if not _CMND.fullmatch(number):
            problems[where] = ("cmnd_format", {})
            return
    elif not _PASSPORT.fullmatch(number):
        problems[where] = ("passport_format", {})
        return
    if id_type is not IdType.PASSPORT and nationality != "VN":
        problems[f"{prefix}nationality"] = ("id_needs_vietnamese", {})


def _check_vaccination(problems: dict, prefix: str, vaccination: Vaccination, birth: date | None) -> None:
    where = f"{prefix}vaccination."
    if vaccination.doses == 0:
        if vaccination.last_dose_date is not None:
            problems[where + "last_dose_date"] = ("no_doses", {})
        if vaccination.vaccine is not None:
            problems[where + "vaccine"] = ("no_doses", {})
        return
    if vaccination.last_dose_date is None:
        problems[where + "last_dose_date"] = ("doses_without_date", {})
    elif birth is not None and vaccination.last_dose_date < birth:
        problems[where + "last_dose_date"] = ("before_birth", {})
    if vaccination.vaccine is None:
        problems[where + "vaccine"] = ("doses_without_vaccine", {})


def _context(today: date | None) -> dict[str, date]:
    return {"today": today if today is not None else today_in_vietnam()}


def validate_ncovi(data: Mapping[str, Any], *, today: date | None = None) -> NcoviDeclaration:
    """Validate an NCOVI submission; raises :class:`DeclarationError` with every problem found.

    ``today`` (default: today in Vietnam) is what dates are checked against.
    """
    try:
        model = NcoviDeclaration.model_validate(data, context=_context(today))
    except ValidationError as exc:
        raise DeclarationError(_problems_of(exc)) from None
    problems: dict[str, tuple[str, dict[str, Any]]] = {}
    people: list[tuple[str, _NcoviPerson, date | None, int | None]] = [
        ("declarant.", model.declarant, model.declarant.birth_date, model.declarant.birth_date.year)
    ]
    for index, member in enumerate(model.members):
        prefix = f"members.{index}."
        year = member.birth_date.year if member.birth_date is not None else member.birth_year
        if member.birth_date is None and member.birth_year is None:
            problems[prefix + "birth_date"] = ("birth_missing", {})
        elif member.birth_date is not None and member.birth_year not in (None, member.birth_date.year):
            problems[prefix + "birth_year"] = ("birth_year_mismatch", {})
            year = None  # which year is right is unknown: do not check the CCCD number against either
        people.append((prefix, member, member.birth_date, year))
    seen: set[str] = set()
    for prefix, person, birth, year in people:
        if person.id_number in seen:
            problems[prefix + "id_number"] = ("duplicate_person", {})
        else:
            _check_id(
                problems, prefix, person.id_type, person.id_number, year, person.gender, person.nationality
            )
        seen.add(person.id_number)
        _check_vaccination(problems, prefix, person.vaccination, birth)
    if problems:
        raise DeclarationError(problems)
    return model


def validate_vhd(data: Mapping[str, Any], *, today: date | None = None) -> VhdDeclaration:
    """Validate a VHD (entry) declaration; raises :class:`DeclarationError` with every problem found."""
    try:
        return VhdDeclaration.model_validate(data, context=_context(today))
    except ValidationError as exc:
        raise DeclarationError(_problems_of(exc)) from None


# --------------------------------------------------------------------------------- saving


@dataclass(frozen=True, slots=True)
class SavedDeclaration:
    """One person's saved declaration and the pass issued for it."""

    declaration_id: int
    pass_: IssuedPass
    colour: Colour
    reasons: tuple[str, ...]


def _facts(person: _Health) -> Facts:
    return Facts.of(
        symptoms=person.symptoms,
        exposures=person.exposures,
        positive_test=any(t.result is TestOutcome.POSITIVE for t in person.tests),
    )


def _health_answers(person: _Health) -> dict[str, Any]:
    return {
        "symptoms": [s.value for s in person.symptoms],
        "exposures": [e.value for e in person.exposures],
        "tests": [t.model_dump(mode="json") for t in person.tests],
    }


def _supersede(conn: Connection, *, id_number: str, new_id: int, verdict: Verdict, now: datetime) -> None:
    """Mark the person's current declarations superseded; raise the colour of their passes when worse."""
    older = [
        row[0]
        for row in conn.execute(
            select(declarations.c.id).where(
                and_(
                    declarations.c.id_number == id_number,
                    declarations.c.superseded_at.is_(None),
                    declarations.c.id != new_id,
                )
            )
        ).all()
    ]
    if not older:
        return
    conn.execute(
        update(declarations)
        .where(declarations.c.id.in_(older))
        .values(superseded_at=now, superseded_by=new_id)
    )
    if verdict.colour is Colour.GREEN:
        return
    pass_ids = conn.execute(
        select(passes.c.pass_id).where(and_(passes.c.declaration_id.in_(older), passes.c.expires_at > now))
    ).scalars()
    for pass_id in list(pass_ids):
        colour = current_colour(conn, pass_id)
        if colour is not None and verdict.colour.severity > colour.severity:
            set_status(conn, pass_id, verdict.colour, SUPERSEDED_REASON, now)


def _lock_person(conn: Connection, id_number: str) -> None:
    """Serialise declarations of one person until this transaction ends, so exactly one stays current.

    PostgreSQL: a transaction-scoped advisory lock keyed by the ID number (without it, two submissions at
    once each miss the other's uncommitted row and neither is superseded). SQLite already serialises
    writers: the second insert waits for the first transaction to commit, then sees its row.
    """
    if conn.dialect.name != "postgresql":
        return
    digest = hashlib.sha256(b"antoan-declaration-person:" + id_number.encode("utf-8")).digest()
    conn.execute(
        text("SELECT pg_advisory_xact_lock(:key)"), {"key": int.from_bytes(digest[:8], "big", signed=True)}
    )


def _save_person(
    conn: Connection,
    *,
    kind: PassKind,
    columns: dict[str, Any],
    answers: dict[str, Any],
    facts: Facts,
    keyring: KeyRing,
    settings: PassSettings,
    now: datetime,
) -> SavedDeclaration:
    verdict = evaluate(facts)
    _lock_person(conn, columns["id_number"])
    new_id = int(
        conn.execute(
            insert(declarations)
            .values(
                kind=kind.value,
                answers=answers,
                colour=verdict.colour.value,
                colour_reasons=list(verdict.reasons),
                created_at=now,
                **columns,
            )
            .returning(declarations.c.id)
        ).scalar_one()
    )
    _supersede(conn, id_number=columns["id_number"], new_id=new_id, verdict=verdict, now=now)
    issued = issue_pass(
        conn,
        declaration_id=new_id,
        kind=kind,
        full_name=columns["full_name"],
        birth_year=columns["birth_year"],
        colour=verdict.colour,
        keyring=keyring,
        settings=settings,
        now=now,
    )
    return SavedDeclaration(
        declaration_id=new_id, pass_=issued, colour=verdict.colour, reasons=verdict.reasons
    )


def _address_columns(address: Address) -> dict[str, str]:
    return {
        "province": address.province,
        "district": address.district,
        "commune": address.commune,
        "address": address.street,
    }


def save_ncovi(
    conn: Connection, model: NcoviDeclaration, *, keyring: KeyRing, settings: PassSettings, now: datetime
) -> list[SavedDeclaration]:
    """Save an NCOVI submission and issue one pass per person (declarant first, then members in order).

    Run it inside one transaction (``with engine.begin() as conn``): every person is saved or none.
    Each person's current declaration with the same ID number is superseded (history kept).
    """
    now = to_db_time(now)
    submission_id = str(uuid.uuid4())
    saved: list[SavedDeclaration] = []
    declarant = model.declarant
    for index, person in enumerate([declarant, *model.members]):
        member = person if isinstance(person, NcoviMember) else None
        birth_date = person.birth_date
        birth_year = birth_date.year if birth_date is not None else member.birth_year  # type: ignore[union-attr]
        address = person.address or declarant.address
        columns = {
            "submission_id": submission_id,
            "declared_by": saved[0].declaration_id if index else None,
            "relationship": member.relationship.value if member else None,
            "id_number": person.id_number,
            "full_name": person.full_name,
            "birth_date": birth_date,
            "birth_year": birth_year,
            "gender": person.gender.value,
            "phone": person.phone,
            "nationality": person.nationality,
            **_address_columns(address),
        }
        answers = {
            "form": "ncovi",
            "version": 1,
            "id_type": person.id_type.value,
            "address_from_declarant": member is not None and member.address is None,
            "vaccination": person.vaccination.model_dump(mode="json"),
            **_health_answers(person),
        }
        saved.append(
            _save_person(
                conn,
                kind=PassKind.NCOVI,
                columns=columns,
                answers=answers,
                facts=_facts(person),
                keyring=keyring,
                settings=settings,
                now=now,
            )
        )
    return saved


def save_vhd(
    conn: Connection, model: VhdDeclaration, *, keyring: KeyRing, settings: PassSettings, now: datetime
) -> list[SavedDeclaration]:
    """Save a VHD declaration and issue its pass (a list of one, like :func:`save_ncovi`).

    Run it inside a transaction; the entrant's current declaration with the same passport number is
    superseded.
    """
    now = to_db_time(now)
    columns = {
        "submission_id": str(uuid.uuid4()),
        "declared_by": None,
        "relationship": None,
        "id_number": model.passport_number,
        "full_name": model.full_name,
        "birth_date": model.birth_date,
        "birth_year": model.birth_date.year,
        "gender": model.gender.value,
        "phone": model.phone,
        "nationality": model.nationality,
        **_address_columns(model.quarantine_address),
    }
    answers = {
        "form": "vhd",
        "version": 1,
        "id_type": IdType.PASSPORT.value,
        "transport": model.transport.model_dump(mode="json"),
        "border_gate": model.border_gate,
        "arrival_date": model.arrival_date.isoformat(),
        "countries_visited": list(model.countries_visited),
        **_health_answers(model),
    }
    return [
        _save_person(
            conn,
            kind=PassKind.VHD,
            columns=columns,
            answers=answers,
            facts=_facts(model),
            keyring=keyring,
            settings=settings,
            now=now,
        )
    ]


# --------------------------------------------------------------------------------- finding passes

#: Looked up when the typed id cannot be a pass id, so both cases run the same query.
_NO_SUCH_PASS = "0" * 10


def find_pass(conn: Connection, pass_id: str, birth_date: date | int) -> IssuedPass | None:
    """The pass with this id whose holder has this birth date, else None (the same None in every case).

    ``birth_date`` is a date, or a year for a family member declared with only a birth year: a date
    matches a stored birth date exactly, or the stored year when only the year was declared; a bare
    year matches only a declaration without an exact date. The query runs whether or not the id is
    well-formed, so an unknown id and a wrong birth date take about the same time.
    """
    canonical = normalise_pass_id(pass_id) if isinstance(pass_id, str) else None
    row = conn.execute(
        select(passes.c.pass_id, declarations.c.birth_date, declarations.c.birth_year)
        .select_from(passes.join(declarations, declarations.c.id == passes.c.declaration_id))
        .where(passes.c.pass_id == (canonical or _NO_SUCH_PASS))
    ).first()
    stored = (
        "" if row is None else (row.birth_date.isoformat() if row.birth_date else f"year:{row.birth_year}")
    )
    if isinstance(birth_date, date) and not isinstance(birth_date, datetime):
        given = birth_date.isoformat()
        alternative = f"year:{birth_date.year}"
    elif isinstance(birth_date, int) and not isinstance(birth_date, bool):
        given = alternative = f"year:{birth_date}"
    else:
        return None
    matches = hmac.compare_digest(stored.encode(), given.encode()) | hmac.compare_digest(
        stored.encode(), alternative.encode()
    )
    if row is None or canonical is None or not matches:
        return None
    return get_pass(conn, row.pass_id)


@dataclass(frozen=True, slots=True)
class PassSummary:
    """What a pass page shows: nothing that names the holder beyond initials and birth year."""

    pass_: IssuedPass
    initials: str
    birth_year: int
    colour: Colour  # now: the worse of the signed colour and the status list
    expired: bool
    superseded: bool
    relationship: str | None
    reasons: tuple[str, ...]  # why the declaration got its colour (shown only to the person who declared)


def pass_summary(conn: Connection, pass_id: str, now: datetime) -> PassSummary | None:
    """A pass with what its pages show, or None when there is no such pass (or its declaration was purged)."""
    issued = get_pass(conn, pass_id)
    if issued is None:
        return None
    row = conn.execute(
        select(
            declarations.c.full_name,
            declarations.c.birth_year,
            declarations.c.superseded_at,
            declarations.c.relationship,
            declarations.c.colour_reasons,
        ).where(declarations.c.id == issued.declaration_id)
    ).first()
    if row is None:
        return None
    colour = current_colour(conn, issued.pass_id) or issued.colour
    return PassSummary(
        pass_=issued,
        initials=initials_of(row.full_name),
        birth_year=int(row.birth_year),
        colour=colour,
        expired=from_db_time(issued.expires_at) <= to_db_time(now),
        superseded=row.superseded_at is not None,
        relationship=row.relationship,
        reasons=tuple(row.colour_reasons or ()),
    )
