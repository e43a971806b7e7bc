"""Health passes issued by the hub, read back by the kiosk: PNG → kiosk decoder → kiosk verdict."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, insert, select

from hub.config import PassSettings
from hub.db.schema import declarations, passes
from hub.keys import STATUS, KeyRing, list_version
from hub.passes import (
    CROCKFORD,
    PassNotFound,
    clear_status,
    current_colour,
    display_pass_id,
    get_pass,
    initials_of,
    issue_pass,
    new_pass_id,
    normalise_pass_id,
    passes_for_declaration,
    qr_png,
    qr_svg,
    set_status,
    status_list,
)
from kiosk.scanner.decode import make_decoder
from kiosk.verdict import judge
from protocol.healthpass import Colour, PassKind, Reason, decode_unverified

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
SETTINGS = PassSettings(issuer="hub-test", validity_days=14)


@pytest.fixture
def keyring(hub_engine) -> KeyRing:
    return KeyRing(hub_engine, SETTINGS)


def _issue(engine, keyring, *, now=NOW, name="Nguyễn Thị Ánh", colour="green", declaration_id=7, **extra):
    with engine.begin() as conn:
        return issue_pass(
            conn,
            declaration_id=declaration_id,
            kind=extra.pop("kind", "ncovi"),
            full_name=name,
            birth_year=1990,
            colour=colour,
            keyring=keyring,
            settings=SETTINGS,
            now=now,
            **extra,
        )


def _scan(qr_text: str) -> bytes:
    """Render the hub's PNG, then read it the way a kiosk camera frame is read."""
    gray = cv2.imdecode(np.frombuffer(qr_png(qr_text), np.uint8), cv2.IMREAD_GRAYSCALE)
    assert gray is not None and gray.ndim == 2
    codes = make_decoder("layered").decode(gray)
    assert len(codes) == 1
    return codes[0].raw


def _kiosk_verdict(raw: bytes, *, trust, status=None, now):
    return judge(raw, trust=trust, status=status, hub_public_key=None, direction="in", now=now)


# ------------------------------------------------------------------------------------- names and ids


@pytest.mark.parametrize(
    ("name", "initials"),
    [
        ("Nguyễn Thị Ánh", "NTA"),
        ("Trần Văn Đức", "TVD"),
        ("đặng  ngọc   ưng", "DNU"),
        ("  Lê Hoàng Yến ", "LHY"),
        ("Ông Ích Ơn", "OIO"),
        ("Mary-Jane O'Neil", "MO"),
        ("Tôn Nữ Thị Hồng Ngọc Bảo Châu Anh Thư", "TNTHNBCT"),
    ],
)
def test_initials_strip_vietnamese_diacritics(name, initials):
    assert initials_of(name) == initials


@given(st.text(min_size=1, max_size=120))
def test_initials_of_any_name_with_a_letter_are_accepted_by_a_pass(name):
    try:
        initials = initials_of(name)
    except ValueError:
        return  # no letter at all
    assert 1 <= len(initials) <= 8 and initials.isalpha()


def test_letters_that_upper_case_to_two_give_one_initial():
    assert initials_of("ßa ßb ßc ßd ße ßf ßg ßh ßi") == "ßßßßßßßß"
    assert len(initials_of("ŉa Bình")) == 2


def test_a_name_without_letters_has_no_initials():
    with pytest.raises(ValueError, match="no letters"):
        initials_of(" 123 - ")


_VIETNAMESE_LETTERS = (
    string.ascii_letters + "ăâđêôơưĂÂĐÊÔƠƯáàảãạấầẩẫậắằẳẵặéèẻẽẹếềểễệíìỉĩịóòỏõọốồổỗộớờởỡợúùủũụứừửữựýỳỷỹỵ"
)


@given(st.lists(st.text(alphabet=_VIETNAMESE_LETTERS, min_size=1, max_size=8), min_size=1, max_size=12))
def test_initials_of_vietnamese_names_are_ascii_capitals_a_pass_accepts(words):
    initials = initials_of(" ".join(words))
    assert 1 <= len(initials) <= 8
    assert all(c in string.ascii_uppercase for c in initials)


def test_pass_ids_are_short_random_crockford_and_read_back_in_any_form():
    ids = {new_pass_id() for _ in range(200)}
    assert len(ids) == 200
    for pass_id in ids:
        assert len(pass_id) == 10 and set(pass_id) <= set(CROCKFORD)
    display = display_pass_id("7ZK3M9QRTX")
    assert display == "7ZK3M-9QRTX"
    for typed in ("7zk3m-9qrtx", " 7ZK3M 9QRTX ", "7zk3m9qrtx", "7-Z-K-3-M-9-Q-R-T-X"):
        assert normalise_pass_id(typed) == "7ZK3M9QRTX"
    # Crockford: I and L read as 1, O as 0.
    assert normalise_pass_id("ABCDE-FGHIO") == "ABCDEFGH10"
    assert normalise_pass_id("abcde-fghlo") == "ABCDEFGH10"
    for bad in ("", "ABCDE", "ABCDE-FGHJKM", "ABCDE-FGHJU", "ABCDE/FGHJK", None):
        assert normalise_pass_id(bad) is None
    with pytest.raises(ValueError, match="not a pass id"):
        display_pass_id("ABCDE-FGHJU")


# ------------------------------------------------------------------------------------- issue and read


def test_an_issued_pass_is_stored_and_found_by_its_display_form(hub_engine, keyring):
    issued = _issue(hub_engine, keyring, kind="vhd", colour="yellow")
    assert issued.kind is PassKind.VHD and issued.colour is Colour.YELLOW
    assert issued.issued_at == NOW and issued.expires_at == NOW + timedelta(days=14)
    assert issued.kid == keyring.signing_key(NOW)[0]
    claims, kid = decode_unverified(issued.qr_text)
    assert claims.pass_id == issued.pass_id and kid.hex() == issued.kid
    assert (claims.initials, claims.birth_year, claims.issuer) == ("NTA", 1990, "hub-test")
    assert "Nguyễn" not in issued.qr_text and "NGUYEN" not in issued.qr_text
    with hub_engine.connect() as conn:
        assert get_pass(conn, issued.display_id.lower()) == issued
        assert get_pass(conn, " ".join(issued.pass_id)) == issued
        assert get_pass(conn, new_pass_id()) is None
        assert get_pass(conn, "not a pass") is None
        assert passes_for_declaration(conn, 7) == [issued]
        assert passes_for_declaration(conn, 8) == []


def test_issue_pass_runs_inside_the_callers_transaction(hub_engine, keyring):
    # The first pass on a fresh hub creates the key inside the caller's open write transaction
    # (on SQLite a second connection would wait for this very transaction's lock).
    with hub_engine.begin() as conn:
        declaration_id = conn.execute(
            insert(declarations).values(
                kind="ncovi",
                submission_id="s-1",
                id_number="079190001234",
                full_name="Nguyễn Thị Ánh",
                birth_year=1990,
                gender="female",
                nationality="VN",
                answers={},
                colour="green",
                colour_reasons=[],
                created_at=NOW,
            )
        ).inserted_primary_key[0]
        issued = issue_pass(
            conn,
            declaration_id=declaration_id,
            kind=PassKind.NCOVI,
            full_name="Nguyễn Thị Ánh",
            birth_year=1990,
            colour=Colour.GREEN,
            keyring=keyring,
            settings=SETTINGS,
            now=NOW,
        )
        conn.rollback()  # the caller's form failed later: nothing of it stays
    with hub_engine.connect() as conn:
        assert get_pass(conn, issued.pass_id) is None
        assert conn.execute(select(func.count()).select_from(passes)).scalar_one() == 0


def test_bad_input_is_refused_with_a_reason(hub_engine, keyring):
    with pytest.raises(ValueError, match="colour"):
        _issue(hub_engine, keyring, colour="blue")
    with pytest.raises(ValueError, match="no letters"):
        _issue(hub_engine, keyring, name="  ")
    with pytest.raises(ValueError, match="validity"):
        _issue(hub_engine, keyring, validity=timedelta(days=-1))


# ------------------------------------------------------------------------------------- hub -> kiosk


def test_a_pass_issued_by_the_hub_scans_green_at_a_kiosk(hub_engine, keyring):
    issued = _issue(hub_engine, keyring)
    raw = _scan(issued.qr_text)
    assert raw == issued.qr_text.encode("ascii")
    verdict = _kiosk_verdict(raw, trust=keyring.trust_list(NOW), now=NOW + timedelta(hours=1))
    assert (verdict.colour, verdict.code, verdict.display_name) == ("green", "ok", "NTA")
    assert verdict.event[1]["subject"]["pass_id"] == issued.pass_id


def test_after_rotation_old_and_new_passes_verify_until_the_old_key_is_no_longer_trusted(hub_engine, keyring):
    old = _issue(hub_engine, keyring)
    rotated_at = NOW + timedelta(days=2)
    new_kid = keyring.rotate(rotated_at)
    new = _issue(hub_engine, keyring, now=rotated_at + timedelta(hours=1), name="Trần Văn Đức")
    assert (old.kid != new.kid) and new.kid == new_kid

    now = rotated_at + timedelta(hours=2)
    trust = keyring.trust_list(now)
    for issued in (old, new):
        assert _kiosk_verdict(_scan(issued.qr_text), trust=trust, now=now).colour == "green"

    old_key = next(k for k in keyring.list_keys() if k.kid == old.kid)
    after = old_key.trusted_until + timedelta(seconds=1)
    trust_after = keyring.trust_list(after)
    refused = _kiosk_verdict(_scan(old.qr_text), trust=trust_after, now=after)
    assert (refused.colour, refused.code) == ("red", str(Reason.UNKNOWN_KEY))
    assert refused.event is None
    assert _kiosk_verdict(_scan(new.qr_text), trust=trust_after, now=after).colour == "green"


def test_a_flagged_pass_turns_yellow_then_red_through_the_status_list(hub_engine, keyring):
    issued = _issue(hub_engine, keyring)
    other = _issue(hub_engine, keyring, name="Lê Hoàng Yến")
    trust = keyring.trust_list(NOW)
    raw = _scan(issued.qr_text)
    with hub_engine.connect() as conn:
        start = list_version(conn, STATUS)

    versions = []
    for colour in ("yellow", "red"):
        with hub_engine.begin() as conn:
            set_status(conn, issued.display_id, colour, "F1 of case 42", NOW + timedelta(hours=1))
        with hub_engine.connect() as conn:
            status = status_list(conn, NOW + timedelta(hours=1))
            assert current_colour(conn, issued.pass_id) == Colour(colour)
            assert current_colour(conn, other.pass_id) == Colour.GREEN
        versions.append(status.version)
        verdict = _kiosk_verdict(raw, trust=trust, status=status, now=NOW + timedelta(hours=2))
        assert verdict.colour == colour
        assert verdict.code == "flagged" and verdict.event[1]["flagged"] is True
        assert _kiosk_verdict(_scan(other.qr_text), trust=trust, status=status, now=NOW).colour == "green"
    assert start < versions[0] < versions[1]

    with hub_engine.begin() as conn:
        clear_status(conn, issued.pass_id, NOW + timedelta(hours=3))
        clear_status(conn, issued.pass_id, NOW + timedelta(hours=3))  # nothing left: no new version
    with hub_engine.connect() as conn:
        cleared = status_list(conn, NOW + timedelta(hours=3))
        assert current_colour(conn, issued.pass_id) == Colour.GREEN
    assert cleared.version == versions[1] + 1 and len(cleared) == 0
    assert _kiosk_verdict(raw, trust=trust, status=cleared, now=NOW).colour == "green"


def test_the_status_list_never_makes_a_pass_better_and_drops_expired_entries(hub_engine, keyring):
    red = _issue(hub_engine, keyring, colour="red")
    with hub_engine.begin() as conn:
        set_status(conn, red.pass_id, "yellow", "contact traced", NOW)
        assert current_colour(conn, red.pass_id) == Colour.RED
        assert (
            status_list(conn, red.expires_at - timedelta(seconds=1)).colour_for(red.pass_id) == Colour.YELLOW
        )
        assert len(status_list(conn, red.expires_at)) == 0
    with hub_engine.connect() as conn:
        status = status_list(conn, NOW)
    verdict = _kiosk_verdict(_scan(red.qr_text), trust=keyring.trust_list(NOW), status=status, now=NOW)
    assert verdict.colour == "red"


def test_set_status_refuses_unknown_passes_and_bad_reasons(hub_engine, keyring):
    issued = _issue(hub_engine, keyring)
    with hub_engine.begin() as conn:
        with pytest.raises(PassNotFound):
            set_status(conn, new_pass_id(), "red", "case", NOW)
        with pytest.raises(ValueError, match="reason"):
            set_status(conn, issued.pass_id, "red", " ", NOW)
        with pytest.raises(ValueError, match="reason"):
            set_status(conn, issued.pass_id, "red", "x" * 201, NOW)
        with pytest.raises(ValueError):
            set_status(conn, issued.pass_id, "purple", "case", NOW)
        assert current_colour(conn, "unknown") is None


def test_the_svg_is_a_qr_image():
    svg = qr_svg("AT1:ABC", scale=4)
    assert svg.startswith(b"<?xml") and b"<svg" in svg and b"<path" in svg
    assert qr_png("AT1:ABC").startswith(b"\x89PNG\r\n\x1a\n")
