"""Verdict rules: every reason has Vietnamese and English words; what is stored and what is not."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from nacl.public import PrivateKey

from kiosk import verdict as v
from kiosk.scanner.payloads import REASON_MESSAGES, open_identity
from protocol.healthpass import (
    Colour,
    PassClaims,
    PassKind,
    Reason,
    SigningKey,
    StatusList,
    TrustList,
    encode_pass,
)

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
KEY = SigningKey.generate("ES256")
TRUST = TrustList(
    keys={KEY.kid: KEY.trusted(NOW - timedelta(days=365), NOW + timedelta(days=30))}, version=1, issued_at=NOW
)
HUB = PrivateKey.generate()
CARD = "079190001234||Nguyễn Thị Ánh|15031990|Nữ|12 Lê Lợi, Quận 1, TP.HCM|01052021"


def _pass(colour=Colour.GREEN, pass_id="P-1", days=30, key=KEY, age=timedelta(hours=1)) -> bytes:
    claims = PassClaims(
        pass_id=pass_id,
        colour=colour,
        kind=PassKind.NCOVI,
        initials="NTA",
        birth_year=1990,
        issuer="test",
        issued_at=NOW - age,
        expires_at=NOW - age + timedelta(days=days),
    )
    return encode_pass(claims, key).encode()


def judge(raw: bytes, *, status=None, direction="in", hub=bytes(HUB.public_key), trust=TRUST):
    return v.judge(raw, trust=trust, status=status, hub_public_key=hub, direction=direction, now=NOW)


def test_every_pass_failure_reason_has_words_in_both_languages():
    for reason in Reason:
        if reason is Reason.FLAGGED:
            continue
        assert reason in v._PASS_REASONS, reason


def test_every_card_reason_has_words_in_both_languages():
    for reason in REASON_MESSAGES:
        if reason.startswith("cccd"):
            assert reason in v._CCCD_REASONS, reason
        elif not reason.startswith("sealed"):
            assert reason in v._OTHER_REASONS or reason == "not_recognised", reason


def test_a_valid_pass_is_green_and_recorded_with_its_id_only():
    verdict = judge(_pass())
    assert (verdict.colour, verdict.code) == ("green", "ok")
    assert verdict.message_vi == "Mời vào"
    kind, body = verdict.event
    assert kind == "check_in"
    assert body["subject"] == {"type": "pass", "pass_id": "P-1", "kid": KEY.kid.hex()}
    assert verdict.display_name == "NTA"


def test_the_status_list_turns_a_pass_yellow():
    status = StatusList(version=2, issued_at=NOW, colours={"P-1": Colour.YELLOW})
    verdict = judge(_pass(), status=status)
    assert (verdict.colour, verdict.code) == ("yellow", "flagged")
    assert verdict.event[1]["flagged"] is True


def test_a_red_pass_is_red_and_still_recorded_for_tracing():
    verdict = judge(_pass(Colour.RED))
    assert verdict.colour == "red"
    assert verdict.event[1]["verdict"] == "red"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (_pass(days=30, age=timedelta(days=40)), "expired"),
        (_pass(key=SigningKey.generate("ES256")), "unknown_key"),
        (b"AT1:NOT-BASE45!!", None),
        (b"https://example.vn", "not_recognised"),
        (b"\xff\xfe", "binary"),
        (b"x" * 5000, "too_long"),
        ("001085004321|012345678|Trần Văn Đức|02091985|Nữ|Hà Nội|20042021".encode(), "cccd_gender_digit"),
    ],
)
def test_bad_codes_are_red_and_nothing_is_stored(raw, code):
    verdict = judge(raw)
    assert verdict.colour == "red"
    assert verdict.event is None
    if code is not None:
        assert code in verdict.code.lower()
    assert verdict.message_vi and verdict.message_en


def test_an_id_card_is_recorded_sealed_and_the_hub_can_open_it():
    verdict = judge(CARD.encode())
    assert verdict.colour == "green"
    assert verdict.display_name == "Nguyễn Thị Ánh"
    sealed = verdict.event[1]["subject"]["sealed"]
    assert "Nguyễn" not in sealed and "079190001234" not in sealed
    card = open_identity(sealed, bytes(HUB), today=NOW.date())
    assert card.number == "079190001234"


def test_without_the_hub_key_id_cards_are_refused():
    verdict = judge(CARD.encode(), hub=None)
    assert (verdict.colour, verdict.code, verdict.event) == ("red", "no_hub_key", None)


def test_without_a_trust_list_passes_are_refused_with_the_reason():
    verdict = judge(_pass(), trust=None)
    assert (verdict.colour, verdict.code) == ("red", "no_trust_list")


def test_an_exit_kiosk_records_a_check_out():
    verdict = judge(_pass(), direction="out")
    assert verdict.event[0] == "check_out"
    assert verdict.message_vi == "Đã ghi nhận ra về"


def test_cannot_record_is_red_and_stores_nothing():
    verdict = v.cannot_record(judge(_pass()))
    assert (verdict.colour, verdict.code, verdict.event) == ("red", "cannot_record", None)


def test_hub_public_key_in_config_is_checked():
    from kiosk.config import KioskConfig

    cfg = KioskConfig(
        kiosk_id="kiosk-001", venue_id="v", hub_public_key=base64.b64encode(bytes(HUB.public_key)).decode()
    )
    assert cfg.hub_key_bytes() == bytes(HUB.public_key)
    with pytest.raises(ValueError, match="32 bytes"):
        KioskConfig(kiosk_id="kiosk-001", venue_id="v", hub_public_key=base64.b64encode(b"short").decode())
