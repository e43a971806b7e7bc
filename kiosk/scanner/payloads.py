"""What a scanned QR code is: a health pass, a CCCD (chip citizen ID) card, or something unrecognised.

CCCD data is validated here (number structure, province, dates, gender) and sealed to the hub's X25519
public key (libsodium sealed box), so the kiosk never keeps it in clear. Nothing here logs personal data:
error messages never quote a field, and ``repr()`` of a :class:`CccdCard` is redacted.

CCCD QR layouts (pipe-separated; every field is stripped of surrounding whitespace):

==========  =============================================================  =================================
fields      layout                                                         when
==========  =============================================================  =================================
6           ``ID|name|dob|gender|address|issue``                           field 2 is not empty / digits
7           ``ID|CMND|name|dob|gender|address|issue``                      field 2 is empty or digits
7           ``ID|name|dob|gender|address|issue|`` (trailing separator)     field 2 is not empty / digits
8           ``ID|CMND|name|dob|gender|address|issue|extra``                field 2 is empty or digits
==========  =============================================================  =================================

Field 2 decides the layout: names never consist of digits, so an empty or all-digit field 2 is the old
CMND slot (and must then be exactly 9 digits). In the 8-field layout the extra field is ignored whatever it
holds, but only after all seven real fields validated (a failure there still rejects the card). A
non-empty 7th field after the 6-field layout is *not* ignored (``cccd_fields``): it is too likely a
CMND-layout card whose CMND field is damaged. An empty issue date gives ``issue_date=None``.

Reasons (``PayloadError.reason`` / ``Unrecognised.reason``) are listed in :data:`REASON_MESSAGES`; the
kiosk maps them to Vietnamese text.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType
from typing import Any, Final, Literal

from protocol import cccd
from protocol import sealed as sealed_box

#: Prefix of the hub's signed health pass (the codec lives in protocol/healthpass.py).
HEALTH_PASS_PREFIX: Final = "AT1:"
#: Largest QR payload looked at; a health pass or a CCCD QR is far smaller.
MAX_RAW_BYTES: Final = 2048
MAX_NAME_CHARS: Final = 100
MAX_ADDRESS_CHARS: Final = 300
#: Largest sealed identity text :func:`open_identity` accepts (a sealed card is about 3 KiB at most).
MAX_SEALED_CHARS: Final = sealed_box.MAX_SEALED_CHARS

Gender = Literal["Nam", "Nữ"]

#: Province / city codes on CCCD numbers, code -> Vietnamese name (protocol/cccd.py).
PROVINCES: Final[Mapping[str, str]] = cccd.PROVINCES

#: Every reason code, with the one-line English message that goes with it.
REASON_MESSAGES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "empty": "The QR code is empty; scan it again.",
        "too_long": f"The QR code is longer than {MAX_RAW_BYTES} bytes, so it is neither a health pass nor "
        "a CCCD; show your health pass or the QR on your chip ID card.",
        "binary": "The QR code holds binary data, not UTF-8 text; show your health pass or the QR on your "
        "chip ID card.",
        "not_recognised": "The QR code is neither a health pass nor a CCCD QR; show your health pass or the "
        "QR on your chip ID card.",
        "cccd_fields": "The CCCD QR does not have 6 to 8 '|'-separated fields in a known layout; scan the QR "
        "on the chip ID card again.",
        "cccd_number": "The CCCD number is not 12 digits; scan the chip ID card again.",
        "cccd_province": "The CCCD number starts with an unknown province code; scan the card again or "
        "check it by hand.",
        "cccd_century": "The century digit of the CCCD number does not match the birth year; scan the card "
        "again or check it by hand.",
        "cccd_gender_digit": "The gender digit of the CCCD number does not match the gender field; scan the "
        "card again or check it by hand.",
        "cccd_birth_year": "The year digits of the CCCD number do not match the birth year; scan the card "
        "again or check it by hand.",
        "cccd_old_id": "The old ID (CMND) field of the CCCD QR is not 9 digits; scan the card again.",
        "cccd_name": f"The name on the CCCD QR is empty, longer than {MAX_NAME_CHARS} characters or holds "
        "control characters; scan the card again.",
        "cccd_address": f"The address on the CCCD QR is empty, longer than {MAX_ADDRESS_CHARS} characters or "
        "holds control characters; scan the card again.",
        "cccd_date": "A date on the CCCD QR is not a real ddMMyyyy date; scan the card again.",
        "cccd_birth_future": "The birth date on the CCCD QR is in the future; check the kiosk clock, then "
        "scan the card again.",
        "cccd_issue_date": "The issue date on the CCCD QR is before the birth date; scan the card again or "
        "check it by hand.",
        "cccd_gender": "The gender field of the CCCD QR is neither 'Nam' nor 'Nữ'; scan the card again.",
        "sealed_encoding": "The sealed identity is not standard base64 text of a sensible size; resend it "
        "from the kiosk.",
        "sealed_decrypt": "The sealed identity does not open with this hub key (wrong key or damaged data); "
        "check which hub key the kiosk was given.",
        "sealed_content": "The sealed identity opened but does not hold a card record; check that the kiosk "
        "and hub versions match.",
    }
)

_CCCD_REASONS: Final = {
    cccd.NumberProblem.CENTURY: "cccd_century",
    cccd.NumberProblem.GENDER: "cccd_gender_digit",
    cccd.NumberProblem.BIRTH_YEAR: "cccd_birth_year",
}
_OLD_ID = re.compile(r"[0-9]{9}")
_OLD_ID_SLOT = re.compile(r"[0-9]*")  # empty or digits only: field 2 is the CMND slot
_DDMMYYYY = re.compile(r"[0-9]{8}")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
#: Unicode categories never allowed in a name or address: control, format (incl. bidi overrides and
#: zero-width characters), surrogate, private use, unassigned, line and paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_CARD_KEYS = frozenset({"number", "old_id", "full_name", "birth_date", "gender", "address", "issue_date"})


class PayloadError(ValueError):
    """A QR payload or sealed identity that cannot be used; ``reason`` is a short machine code.

    The message is one line of English and never quotes the personal data that failed.
    """

    def __init__(self, reason: str, message: str | None = None):
        super().__init__(message or REASON_MESSAGES.get(reason, reason))
        self.reason = reason


def _fail(reason: str) -> PayloadError:
    return PayloadError(reason, REASON_MESSAGES[reason])


@dataclass(frozen=True, slots=True)
class HealthPassPayload:
    """A code carrying the hub's signed pass; decode it with protocol/healthpass.py."""

    text: str


@dataclass(frozen=True, slots=True, repr=False)
class CccdCard:
    """The data on a CCCD QR, validated. Its ``repr`` is redacted so it cannot leak into logs."""

    number: str
    old_id: str | None
    full_name: str
    birth_date: date
    gender: Gender
    address: str
    issue_date: date | None

    @property
    def province_code(self) -> str:
        """First three digits of the number: the province or city of birth registration."""
        return self.number[:3]

    @property
    def province_name(self) -> str:
        """Vietnamese name of :attr:`province_code` ("" for a hand-built card with an unknown code)."""
        return PROVINCES.get(self.province_code, "")

    def display_name(self) -> str:
        """The name to show on screen at scan time (the whole name, e.g. "Nguyễn Thị Ánh")."""
        return self.full_name

    def __repr__(self) -> str:
        return "CccdCard(<personal data redacted>)"


@dataclass(frozen=True, slots=True)
class Unrecognised:
    """A code the kiosk cannot use; ``reason`` is a key of :data:`REASON_MESSAGES`."""

    reason: str


def classify(raw: bytes, *, today: date | None = None) -> HealthPassPayload | CccdCard | Unrecognised:
    """Say what the raw bytes of a QR code are. Never raises for any bytes.

    ``today`` (default: the local date) is what "birth date in the future" is checked against.
    """
    if len(raw) > MAX_RAW_BYTES:
        return Unrecognised("too_long")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return Unrecognised("binary")
    text = text.removeprefix("\ufeff")  # some encoders put a BOM in front of UTF-8 byte mode
    if not text.strip():
        return Unrecognised("empty")
    if text.startswith(HEALTH_PASS_PREFIX):
        # Not stripped: space is part of the Base45 alphabet.
        return HealthPassPayload(text)
    if "|" in text:
        try:
            return parse_cccd(text, today=today)
        except PayloadError as exc:
            return Unrecognised(exc.reason)
    return Unrecognised("not_recognised")


def parse_cccd(text: str, *, today: date | None = None) -> CccdCard:
    """Parse and validate the text of a CCCD QR code; raise :class:`PayloadError` with the reason.

    See the module docstring for the accepted layouts. ``today`` defaults to the local date.
    """
    if len(text) > MAX_RAW_BYTES:
        raise _fail("too_long")
    fields = [f.strip() for f in text.split("|")]
    count = len(fields)
    cmnd_slot = count > 1 and _OLD_ID_SLOT.fullmatch(fields[1]) is not None
    old_id: str | None
    if count == 6 and not cmnd_slot:
        number, name, birth, gender, address, issue = fields
        old_id = None
    elif count == 7 and not cmnd_slot and fields[6] == "":
        number, name, birth, gender, address, issue = fields[:6]
        old_id = None
    elif count in (7, 8) and cmnd_slot:
        number, old_id, name, birth, gender, address, issue = fields[:7]
    else:
        raise _fail("cccd_fields")
    return _build(
        number=number,
        old_id=old_id,
        full_name=name,
        birth_date=_parse_ddmmyyyy(birth),
        gender=gender,
        address=address,
        issue_date=_parse_ddmmyyyy(issue) if issue else None,
        today=today,
    )


def _parse_ddmmyyyy(value: str) -> date:
    if not _DDMMYYYY.fullmatch(value):
        raise _fail("cccd_date")
    try:
        return date(int(value[4:]), int(value[2:4]), int(value[:2]))
    except ValueError:
        raise _fail("cccd_date") from None


def _clean_text(value: str, max_chars: int, reason: str, *, collapse_spaces: bool) -> str:
    value = unicodedata.normalize("NFC", value).strip()
    if any(unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in value):
        raise _fail(reason)
    if collapse_spaces:
        value = " ".join(value.split())
    if not value or len(value) > max_chars:
        raise _fail(reason)
    return value


def _normalise_gender(value: str) -> Gender:
    folded = unicodedata.normalize("NFC", value).strip().casefold()
    if folded == "nam":
        return "Nam"
    if folded == "nữ":
        return "Nữ"
    raise _fail("cccd_gender")


def _build(
    *,
    number: str,
    old_id: str | None,
    full_name: str,
    birth_date: date,
    gender: str,
    address: str,
    issue_date: date | None,
    today: date | None,
) -> CccdCard:
    """Validate the fields of a card (dates already parsed) and check the number against them."""
    problem = cccd.check_number(number)
    if problem is cccd.NumberProblem.FORMAT:
        raise _fail("cccd_number")
    if problem is cccd.NumberProblem.PROVINCE:
        raise _fail("cccd_province")
    if old_id == "":
        old_id = None
    if old_id is not None and not _OLD_ID.fullmatch(old_id):
        raise _fail("cccd_old_id")
    full_name = _clean_text(full_name, MAX_NAME_CHARS, "cccd_name", collapse_spaces=True)
    sex = _normalise_gender(gender)
    problem = cccd.check_number(number, birth_year=birth_date.year, female=sex == "Nữ")
    if problem is not None:
        raise _fail(_CCCD_REASONS[problem])
    if birth_date > (today or date.today()):
        raise _fail("cccd_birth_future")
    if issue_date is not None and issue_date < birth_date:
        raise _fail("cccd_issue_date")
    address = _clean_text(address, MAX_ADDRESS_CHARS, "cccd_address", collapse_spaces=False)
    return CccdCard(
        number=number,
        old_id=old_id,
        full_name=full_name,
        birth_date=birth_date,
        gender=sex,
        address=address,
        issue_date=issue_date,
    )


def _canonical_json(card: CccdCard) -> bytes:
    doc = {
        "number": card.number,
        "old_id": card.old_id,
        "full_name": card.full_name,
        "birth_date": card.birth_date.isoformat(),
        "gender": card.gender,
        "address": card.address,
        "issue_date": card.issue_date.isoformat() if card.issue_date else None,
    }
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def seal_identity(card: CccdCard, hub_public_key: bytes) -> str:
    """Seal the card's canonical JSON to the hub's X25519 public key; return standard base64 text.

    Only the hub's private key opens it. Sealed boxes are randomised: sealing twice gives different texts.
    """
    return sealed_box.seal(_canonical_json(card), hub_public_key)


def open_identity(sealed: str, hub_private_key: bytes, *, today: date | None = None) -> CccdCard:
    """Open a text made by :func:`seal_identity` (hub side) and validate the card again.

    Raises :class:`PayloadError` (``sealed_*`` or ``cccd_*`` reasons).
    """
    try:
        plaintext = sealed_box.open_sealed(sealed, hub_private_key)
    except sealed_box.SealedError as exc:
        raise _fail(exc.reason) from None
    try:
        doc: Any = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _fail("sealed_content") from None
    if not isinstance(doc, dict) or set(doc) != _CARD_KEYS:
        raise _fail("sealed_content")
    text_keys = ("number", "full_name", "birth_date", "gender", "address")
    if not all(isinstance(doc[k], str) for k in text_keys) or not all(
        doc[k] is None or isinstance(doc[k], str) for k in ("old_id", "issue_date")
    ):
        raise _fail("sealed_content")
    return _build(
        number=doc["number"],
        old_id=doc["old_id"],
        full_name=doc["full_name"],
        birth_date=_parse_iso(doc["birth_date"]),
        gender=doc["gender"],
        address=doc["address"],
        issue_date=_parse_iso(doc["issue_date"]) if doc["issue_date"] is not None else None,
        today=today,
    )


def _parse_iso(value: str) -> date:
    if not _ISO_DATE.fullmatch(value):
        raise _fail("cccd_date")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _fail("cccd_date") from None
