"""From a scanned code to a verdict: colour, the words shown (Vietnamese first, English second), the event.

Pure logic, no I/O: the caller records the event (before any green signal) and drives the outputs.
A verified health pass keeps the worse of its signed colour and the status list's; a chip ID card
(CCCD) is recorded with its identity sealed to the hub's key; anything else is refused and nothing
is stored.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from kiosk.scanner.payloads import CccdCard, HealthPassPayload, Unrecognised, classify, seal_identity
from protocol.healthpass import PassError, Reason, StatusList, StatusShards, TrustList, verify_pass
from protocol.messages import EventKind

Colour = Literal["green", "yellow", "red"]
Direction = Literal["in", "out"]


@dataclass(frozen=True, slots=True)
class Verdict:
    colour: Colour
    #: Machine-readable reason ("ok", "flagged", "expired", "cccd_number", …): logs and the UI use it.
    code: str
    message_vi: str
    message_en: str
    #: The holder's name or initials, for the screen at scan time only; never logged or stored.
    display_name: str | None = None
    #: What to record in the outbox, or None when nothing is stored.
    event: tuple[EventKind, dict[str, Any]] | None = None


_PASS_REASONS: dict[Reason, tuple[str, str]] = {
    Reason.NOT_OURS: ("Mã không phải thẻ AnToan", "Not an AnToan pass"),
    Reason.MALFORMED: ("Mã QR bị hỏng hoặc không hợp lệ", "Damaged or invalid code"),
    Reason.TRUNCATED: ("Mã QR bị thiếu dữ liệu, vui lòng quét lại", "Code incomplete, please scan again"),
    Reason.UNKNOWN_KEY: ("Thẻ do nơi cấp không xác định", "Pass signed by an unknown key"),
    Reason.BAD_SIGNATURE: ("Chữ ký sai: thẻ giả hoặc đã bị sửa", "Invalid signature: forged or altered pass"),
    Reason.EXPIRED: ("Thẻ đã hết hạn, vui lòng khai báo y tế lại", "Pass expired, please declare again"),
    Reason.NOT_YET_VALID: ("Thẻ chưa có hiệu lực", "Pass not valid yet"),
    Reason.KEY_NOT_VALID: ("Khoá ký của thẻ không còn hiệu lực", "The pass's signing key is not valid"),
}

_CCCD_REASONS: dict[str, tuple[str, str]] = {
    "cccd_fields": ("sai số trường dữ liệu", "wrong number of fields"),
    "cccd_number": ("số CCCD sai", "wrong ID number"),
    "cccd_province": ("mã tỉnh không đúng", "unknown province code"),
    "cccd_century": ("số thế kỷ không khớp năm sinh", "century digit does not match the birth year"),
    "cccd_gender_digit": ("mã giới tính trong số CCCD không khớp", "gender digit does not match"),
    "cccd_birth_year": ("năm sinh không khớp số CCCD", "birth year does not match the number"),
    "cccd_old_id": ("số CMND cũ sai", "wrong old ID (CMND) number"),
    "cccd_name": ("họ tên không hợp lệ", "invalid name"),
    "cccd_address": ("địa chỉ không hợp lệ", "invalid address"),
    "cccd_date": ("ngày tháng không hợp lệ", "invalid date"),
    "cccd_birth_future": (
        "ngày sinh ở tương lai (kiểm tra đồng hồ ki-ốt)",
        "birth date in the future (check the clock)",
    ),
    "cccd_issue_date": ("ngày cấp trước ngày sinh", "issue date before birth date"),
    "cccd_gender": ("giới tính không phải Nam/Nữ", "gender is not Nam/Nữ"),
}

_OTHER_REASONS: dict[str, tuple[str, str]] = {
    "empty": ("Mã QR trống, vui lòng quét lại", "Empty code, please scan again"),
    "too_long": ("Mã QR quá dài, không phải thẻ AnToan hay CCCD", "Code too long: not a pass or an ID card"),
    "binary": ("Mã QR không chứa văn bản hợp lệ", "Code holds no valid text"),
}

_COLOUR_WORDS: dict[str, tuple[str, str]] = {
    "green": ("Mời vào", "Welcome"),
    "yellow": ("Cần kiểm tra y tế, vui lòng gặp nhân viên", "Health check needed, please see staff"),
    "red": ("Không được vào, vui lòng liên hệ y tế", "Entry refused, please contact health services"),
}


def _refuse(code: str, vi: str, en: str) -> Verdict:
    return Verdict("red", code, vi, en)


def cannot_record(verdict: Verdict) -> Verdict:
    """The outbox write failed: never green, whatever the code said."""
    return replace(
        verdict,
        colour="red",
        code="cannot_record",
        message_vi="Không ghi nhận được, vui lòng báo nhân viên",
        message_en="Could not record the check-in, please tell staff",
        event=None,
    )


def judge(
    raw: bytes,
    *,
    trust: TrustList | None,
    status: StatusList | StatusShards | None,
    hub_public_key: bytes | None,
    direction: Direction,
    now: datetime,
) -> Verdict:
    """The verdict for one scanned code (no side effects)."""
    payload = classify(raw)
    kind = EventKind.CHECK_IN if direction == "in" else EventKind.CHECK_OUT
    if isinstance(payload, HealthPassPayload):
        return _judge_pass(payload, trust=trust, status=status, kind=kind, direction=direction, now=now)
    if isinstance(payload, CccdCard):
        return _judge_cccd(payload, hub_public_key=hub_public_key, kind=kind, direction=direction)
    assert isinstance(payload, Unrecognised)
    if payload.reason.startswith("cccd"):
        vi, en = _CCCD_REASONS.get(payload.reason, ("dữ liệu thẻ không hợp lệ", "invalid card data"))
        return _refuse(payload.reason, f"Thẻ CCCD không hợp lệ: {vi}", f"Invalid ID card: {en}")
    vi, en = _OTHER_REASONS.get(payload.reason, ("Mã không được nhận dạng", "Code not recognised"))
    return _refuse(payload.reason, vi, en)


def _judge_pass(payload, *, trust, status, kind, direction, now) -> Verdict:
    if trust is None:
        return _refuse(
            "no_trust_list",
            "Ki-ốt chưa nhận danh sách khoá, đang chờ đồng bộ",
            "Kiosk has no trust list yet, waiting for sync",
        )
    try:
        checked = verify_pass(payload.text, trust=trust, status=status, now=now)
    except PassError as exc:
        vi, en = _PASS_REASONS.get(exc.reason, ("Thẻ không hợp lệ", "Invalid pass"))
        return _refuse(str(exc.reason), vi, en)
    colour = str(checked.colour)
    vi, en = _COLOUR_WORDS[colour]
    if colour == "green" and direction == "out":
        vi, en = "Đã ghi nhận ra về", "Check-out recorded"
    body = {
        "direction": direction,
        "subject": {"type": "pass", "pass_id": checked.claims.pass_id, "kid": checked.kid.hex()},
        "verdict": colour,
        "flagged": checked.flagged,
    }
    return Verdict(
        colour,
        "flagged" if checked.flagged else ("ok" if colour == "green" else f"pass_{colour}"),
        vi,
        en,
        display_name=checked.claims.initials,
        event=(kind, body),
    )


def _judge_cccd(card: CccdCard, *, hub_public_key, kind, direction) -> Verdict:
    if hub_public_key is None:
        return _refuse(
            "no_hub_key",
            "Ki-ốt chưa được cấp khoá mã hoá, chưa nhận thẻ CCCD",
            "Kiosk has no hub encryption key, ID cards cannot be recorded",
        )
    sealed = seal_identity(card, hub_public_key)
    vi, en = _COLOUR_WORDS["green"] if direction == "in" else ("Đã ghi nhận ra về", "Check-out recorded")
    body = {
        "direction": direction,
        "subject": {"type": "cccd", "sealed": sealed},
        "verdict": "green",
    }
    return Verdict("green", "ok", vi, en, display_name=card.display_name(), event=(kind, body))
