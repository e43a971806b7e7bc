"""QR payloads: health pass vs CCCD vs unrecognised, CCCD validation reasons, and sealing to the hub."""

from __future__ import annotations

import base64
import unicodedata
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey

from kiosk.scanner.payloads import (
    HEALTH_PASS_PREFIX,
    MAX_RAW_BYTES,
    PROVINCES,
    REASON_MESSAGES,
    CccdCard,
    HealthPassPayload,
    PayloadError,
    Unrecognised,
    classify,
    open_identity,
    parse_cccd,
    seal_identity,
)

TODAY = date(2024, 5, 1)
ADDRESS = "Số 12, Đường Lê Lợi, Phường Bến Nghé, Quận 1, TP. Hồ Chí Minh"


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def make_number(province: str, gender: str, birth: date, serial: str = "012345") -> str:
    digit = 2 * (birth.year // 100 - 19) + (0 if gender == "Nam" else 1)
    return f"{province}{digit}{birth.year % 100:02d}{serial}"


def ddmmyyyy(day: date | None) -> str:
    return day.strftime("%d%m%Y") if day else ""


def render(card: CccdCard, layout: str = "7") -> str:
    """The QR text of a card, in one of the layouts real cards and parsers produce."""
    rest = [card.full_name, ddmmyyyy(card.birth_date), card.gender, card.address, ddmmyyyy(card.issue_date)]
    if layout == "6":
        fields = [card.number, *rest]
    elif layout == "6+empty":
        fields = [card.number, *rest, ""]
    elif layout == "7":
        fields = [card.number, card.old_id or "", *rest]
    elif layout == "8+empty":
        fields = [card.number, card.old_id or "", *rest, ""]
    else:
        raise AssertionError(layout)
    return "|".join(fields)


def anh(**changes) -> dict:
    birth = changes.pop("birth", date(1990, 1, 15))
    gender = changes.pop("gender", "Nữ")
    fields = {
        "number": make_number("079", gender, birth),
        "old_id": "025123456",
        "name": "Nguyễn Thị Ánh",
        "dob": ddmmyyyy(birth),
        "gender": gender,
        "address": ADDRESS,
        "issue": "20042021",
    }
    fields.update(changes)
    return fields


def text_of(fields: dict) -> str:
    keys = ("number", "old_id", "name", "dob", "gender", "address", "issue")
    return "|".join(fields[k] for k in keys)


ANH = CccdCard(
    number="079190012345",
    old_id="025123456",
    full_name="Nguyễn Thị Ánh",
    birth_date=date(1990, 1, 15),
    gender="Nữ",
    address=ADDRESS,
    issue_date=date(2021, 4, 20),
)


# ----- valid cards -----------------------------------------------------------------------------------


def test_seven_field_card_with_diacritics():
    card = parse_cccd(text_of(anh()), today=TODAY)
    assert card == ANH
    assert card.province_code == "079"
    assert card.province_name == "Hồ Chí Minh"
    assert card.display_name() == "Nguyễn Thị Ánh"


@pytest.mark.parametrize(
    ("name", "gender", "birth", "province"),
    [
        ("Trần Văn Đức", "Nam", date(1985, 12, 31), "001"),
        ("Lê Hoàng Yến", "Nữ", date(2003, 2, 28), "046"),
        ("Phạm Đức Ông", "Nam", date(2000, 2, 29), "096"),
    ],
)
def test_other_names_genders_and_centuries(name, gender, birth, province):
    fields = anh(name=name, gender=gender, birth=birth, number=make_number(province, gender, birth))
    card = parse_cccd(text_of(fields), today=TODAY)
    assert (card.full_name, card.gender, card.birth_date) == (name, gender, birth)
    assert card.province_name == PROVINCES[province]


def test_six_field_card_without_cmnd():
    assert parse_cccd(render(ANH, "6"), today=TODAY) == CccdCard(**{**_fields(ANH), "old_id": None})


def test_six_field_card_with_a_trailing_separator():
    assert parse_cccd(render(ANH, "6+empty"), today=TODAY).old_id is None


def test_eight_field_card_with_a_trailing_empty_field():
    assert parse_cccd(render(ANH, "8+empty"), today=TODAY) == ANH


def test_eight_field_card_ignores_a_non_empty_extra_field_when_the_rest_is_valid():
    assert parse_cccd(render(ANH) + "|something new", today=TODAY) == ANH


def test_eight_field_card_with_extra_field_still_rejects_a_bad_card():
    bad = text_of(anh(issue="31022021")) + "|extra"
    with pytest.raises(PayloadError) as err:
        parse_cccd(bad, today=TODAY)
    assert err.value.reason == "cccd_date"


def test_empty_cmnd_field_gives_none():
    card = parse_cccd(text_of(anh(old_id="")), today=TODAY)
    assert card.old_id is None
    assert card.full_name == "Nguyễn Thị Ánh"


def test_empty_issue_date_gives_none():
    assert parse_cccd(text_of(anh(issue="")), today=TODAY).issue_date is None


def test_nfd_input_is_normalised_to_nfc():
    card = parse_cccd(nfd(text_of(anh())), today=TODAY)
    assert card == ANH
    assert unicodedata.is_normalized("NFC", card.full_name)
    assert unicodedata.is_normalized("NFC", card.address)


@pytest.mark.parametrize("word", ["Nữ", "nữ", "NỮ", nfd("Nữ"), nfd("NỮ"), " Nữ "])
def test_gender_word_variants_are_normalised(word):
    assert parse_cccd(text_of(anh(gender=word)), today=TODAY).gender == "Nữ"


@pytest.mark.parametrize("word", ["Nam", "nam", "NAM", "nAm"])
def test_male_gender_word_variants(word):
    birth = date(1990, 1, 15)
    card = parse_cccd(text_of(anh(gender=word, number=make_number("079", "Nam", birth))), today=TODAY)
    assert card.gender == "Nam"


def test_surrounding_spaces_are_stripped_and_name_spaces_collapsed():
    fields = {k: f" {v} " for k, v in anh().items()}
    fields["name"] = "  Nguyễn   Thị  Ánh \t"
    assert parse_cccd(text_of(fields) + "\r\n", today=TODAY) == ANH


def test_birth_today_is_accepted_with_the_real_clock():
    today = date.today()
    fields = anh(birth=today, issue="")
    assert parse_cccd(text_of(fields)).birth_date == today


def test_repr_does_not_show_personal_data():
    shown = repr(ANH) + str(ANH)
    assert ANH.number not in shown
    assert "Nguyễn" not in shown


# ----- invalid cards: each failure has its own reason ------------------------------------------------


def _fields(card: CccdCard) -> dict:
    return {name: getattr(card, name) for name in CccdCard.__dataclass_fields__}


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"number": "07919001234"}, "cccd_number"),  # 11 digits
        ({"number": "0791900123456"}, "cccd_number"),  # 13 digits
        ({"number": "07919001234A"}, "cccd_number"),
        ({"number": "O79190012345"}, "cccd_number"),  # letter O for zero
        ({"number": "٠٧٩١٩٠٠١٢٣٤٥"}, "cccd_number"),  # Arabic-Indic digits
        ({"number": "003190012345"}, "cccd_province"),
        ({"number": "099190012345"}, "cccd_province"),
        ({"number": "000190012345"}, "cccd_province"),
        ({"number": "079390012345"}, "cccd_century"),  # 2000s digit, born 1990
        ({"number": "079090012345"}, "cccd_gender_digit"),  # male digit, gender Nữ
        ({"number": "079191012345"}, "cccd_birth_year"),  # year digits 91, born 1990
        ({"old_id": "02512345"}, "cccd_old_id"),
        ({"old_id": "0251234567"}, "cccd_old_id"),
        ({"dob": "31021990"}, "cccd_date"),
        ({"dob": "1990-01-15"}, "cccd_date"),
        ({"dob": "150190"}, "cccd_date"),
        ({"dob": "00001990"}, "cccd_date"),
        ({"issue": "31022021"}, "cccd_date"),
        ({"issue": "20131990"}, "cccd_date"),
        ({"issue": "14011990"}, "cccd_issue_date"),
        ({"gender": "Male"}, "cccd_gender"),
        ({"gender": "Nu"}, "cccd_gender"),
        ({"gender": ""}, "cccd_gender"),
        ({"name": ""}, "cccd_name"),
        ({"name": "Nguyễn\x00Thị Ánh"}, "cccd_name"),
        ({"name": "Nguyễn\x1b[31mThị Ánh"}, "cccd_name"),
        ({"name": "Nguyễn\u202eThị Ánh"}, "cccd_name"),  # bidi override
        ({"name": "Nguyễn\u200bThị Ánh"}, "cccd_name"),  # zero-width space
        ({"name": "Nguyễn\nThị Ánh"}, "cccd_name"),
        ({"name": "A" * 101}, "cccd_name"),
        ({"address": ""}, "cccd_address"),
        ({"address": "Số 12\x07 Lê Lợi"}, "cccd_address"),
        ({"address": "x" * 301}, "cccd_address"),
    ],
)
def test_invalid_card_gives_its_reason(changes, reason):
    text = text_of(anh(**changes))
    with pytest.raises(PayloadError) as err:
        parse_cccd(text, today=TODAY)
    assert err.value.reason == reason
    assert str(err.value) == REASON_MESSAGES[reason]
    assert classify(text.encode(), today=TODAY) == Unrecognised(reason)


def test_limits_are_inclusive():
    card = parse_cccd(text_of(anh(name="A" * 100, address="x" * 300)), today=TODAY)
    assert (len(card.full_name), len(card.address)) == (100, 300)


def test_birth_in_the_future():
    birth = TODAY + timedelta(days=1)
    text = text_of(anh(birth=birth, issue=""))
    with pytest.raises(PayloadError) as err:
        parse_cccd(text, today=TODAY)
    assert err.value.reason == "cccd_birth_future"
    assert parse_cccd(text, today=birth).birth_date == birth


def test_birth_in_the_future_with_the_real_clock():
    birth = date.today() + timedelta(days=2)
    assert classify(text_of(anh(birth=birth, issue="")).encode()) == Unrecognised("cccd_birth_future")


def test_century_digits_for_later_centuries():
    birth = date(2100, 1, 1)
    card = parse_cccd(text_of(anh(birth=birth, issue="")), today=date(2101, 1, 1))
    assert card.number[3] == "5"
    text = text_of(anh(birth=date(1899, 12, 31), number="079099012345", gender="Nam", issue=""))
    assert classify(text.encode(), today=TODAY) == Unrecognised("cccd_century")


@pytest.mark.parametrize("count", [2, 3, 4, 5, 9, 10])
def test_wrong_field_count(count):
    fields = text_of(anh()).split("|")
    text = "|".join((fields * 2)[:count])
    with pytest.raises(PayloadError) as err:
        parse_cccd(text, today=TODAY)
    assert err.value.reason == "cccd_fields"


def test_field_counts_that_do_not_fit_the_layout():
    six_with_cmnd = "|".join(text_of(anh()).split("|")[:6])  # CMND slot present but no issue field
    no_cmnd_with_extra = render(ANH, "6") + "|extra"  # 7th field after the 6-field layout
    eight_without_cmnd = render(ANH, "6") + "||"
    for text in (six_with_cmnd, no_cmnd_with_extra, eight_without_cmnd):
        with pytest.raises(PayloadError) as err:
            parse_cccd(text, today=TODAY)
        assert err.value.reason == "cccd_fields"


# ----- classify ---------------------------------------------------------------------------------------


def test_classify_health_pass():
    raw = (HEALTH_PASS_PREFIX + "6BF OXBKJ2 ").encode()
    assert classify(raw) == HealthPassPayload(HEALTH_PASS_PREFIX + "6BF OXBKJ2 ")


def test_classify_cccd():
    assert classify(text_of(anh()).encode(), today=TODAY) == ANH
    assert classify(b"\xef\xbb\xbf" + text_of(anh()).encode(), today=TODAY) == ANH  # UTF-8 BOM


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"  \r\n", "empty"),
        (b"\xff\xfe\x00binary", "binary"),
        (b"079190012345|\xc3|Nguy", "binary"),  # truncated UTF-8 sequence
        (b"\xed\xa0\x80", "binary"),  # encoded surrogate: invalid in strict UTF-8
        ("Nguyễn Thị Ánh|".encode("utf-16"), "binary"),
        (b"https://example.org/check-in", "not_recognised"),
        (b"HC1:NCFOXN%TS3DH3ZSUZK+.V0ET", "not_recognised"),
        (b"at1:lowercase", "not_recognised"),
        (b"|" * (MAX_RAW_BYTES + 1), "too_long"),
        (b"\xff" * 1_000_000, "too_long"),
        ((HEALTH_PASS_PREFIX + "A" * MAX_RAW_BYTES).encode(), "too_long"),
    ],
)
def test_classify_unrecognised(raw, reason):
    assert classify(raw) == Unrecognised(reason)
    assert reason in REASON_MESSAGES


def test_parse_cccd_bounds_its_input():
    with pytest.raises(PayloadError) as err:
        parse_cccd("|" * (MAX_RAW_BYTES + 1))
    assert err.value.reason == "too_long"


@settings(max_examples=500)
@given(st.binary(max_size=3000))
def test_classify_never_raises_for_bytes(raw):
    result = classify(raw)
    assert isinstance(result, HealthPassPayload | CccdCard | Unrecognised)
    if isinstance(result, Unrecognised):
        assert result.reason in REASON_MESSAGES


@settings(max_examples=500)
@given(st.text())
def test_classify_never_raises_for_text(text):
    assert isinstance(classify(text.encode("utf-8")), HealthPassPayload | CccdCard | Unrecognised)


@settings(max_examples=500)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=15),
            st.text(alphabet="0123456789", max_size=13),
            st.sampled_from(["Nam", "Nữ", "15011990", "079190012345", "025123456", ""]),
        ),
        min_size=5,
        max_size=9,
    )
)
def test_classify_never_raises_for_pipe_separated_text(fields):
    result = classify("|".join(fields).encode("utf-8"))
    assert isinstance(result, CccdCard | Unrecognised)


# ----- round trip of generated cards through the QR text format ----------------------------------------

LOWER = nfc("aàáảãạăằắẳẵặâầấẩẫậbcdđeèéẻẽẹêềếểễệghiìíỉĩịklmnoòóỏõọôồốổỗộơờớởỡợpqrstuùúủũụưừứửữựvxyỳýỷỹỵ")
words = st.text(alphabet=LOWER, min_size=1, max_size=7).map(str.capitalize)
names = st.lists(words, min_size=2, max_size=5).map(" ".join)
addresses = st.lists(
    st.one_of(words, st.integers(1, 999).map(str), st.sampled_from([",", "/", "-", "TP."])),
    min_size=1,
    max_size=12,
).map(" ".join)


@st.composite
def cards(draw) -> CccdCard:
    province = draw(st.sampled_from(sorted(PROVINCES)))
    gender = draw(st.sampled_from(["Nam", "Nữ"]))
    birth = draw(st.dates(date(1920, 1, 1), date(2020, 12, 31)))
    serial = draw(st.text(alphabet="0123456789", min_size=6, max_size=6))
    issue = draw(st.none() | st.dates(birth, TODAY))
    return CccdCard(
        number=make_number(province, gender, birth, serial),
        old_id=draw(st.none() | st.text(alphabet="0123456789", min_size=9, max_size=9)),
        full_name=draw(names),
        birth_date=birth,
        gender=gender,
        address=draw(addresses),
        issue_date=issue,
    )


@settings(max_examples=300)
@given(cards(), st.sampled_from(["6", "6+empty", "7", "8+empty"]), st.sampled_from([nfc, nfd, str.upper]))
def test_generated_cards_round_trip_through_the_text_format(card, layout, transform):
    if layout.startswith("6"):
        card = CccdCard(**{**_fields(card), "old_id": None})
    text = render(card, layout)
    if transform is str.upper:  # only the gender word: upper-casing the name would change it
        text = text.replace(f"|{card.gender}|", f"|{card.gender.upper()}|", 1)
    else:
        text = transform(text)
    parsed = parse_cccd(text, today=TODAY)
    assert parsed == card
    assert classify(text.encode("utf-8"), today=TODAY) == card
    assert parsed.province_name == PROVINCES[card.number[:3]]


# ----- sealing to the hub ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub_key() -> PrivateKey:
    return PrivateKey.generate()


def test_seal_open_round_trip(hub_key):
    sealed = seal_identity(ANH, bytes(hub_key.public_key))
    base64.b64decode(sealed, validate=True)  # standard base64 text
    assert open_identity(sealed, bytes(hub_key)) == ANH


def test_seal_open_round_trip_without_optional_fields(hub_key):
    card = CccdCard(**{**_fields(ANH), "old_id": None, "issue_date": None})
    assert open_identity(seal_identity(card, bytes(hub_key.public_key)), bytes(hub_key)) == card


def test_sealed_text_hides_the_card(hub_key):
    sealed = seal_identity(ANH, bytes(hub_key.public_key))
    raw = base64.b64decode(sealed)
    for secret in (ANH.number, ANH.full_name, "Nguy", ANH.old_id):
        assert secret not in sealed
        assert secret.encode() not in raw


def test_sealing_twice_gives_different_texts(hub_key):
    public = bytes(hub_key.public_key)
    assert seal_identity(ANH, public) != seal_identity(ANH, public)


def test_open_with_another_key_fails(hub_key):
    sealed = seal_identity(ANH, bytes(hub_key.public_key))
    with pytest.raises(PayloadError) as err:
        open_identity(sealed, bytes(PrivateKey.generate()))
    assert err.value.reason == "sealed_decrypt"


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda s: s[:-8] + ("A" if s[-9] != "A" else "B") + s[-8:], "sealed_decrypt"),  # tampered
        (lambda s: s[:40], "sealed_decrypt"),  # shorter than a sealed box
        (lambda s: s + "!", "sealed_encoding"),
        (lambda s: s.replace("+", "-").replace("/", "_") + "é", "sealed_encoding"),
        (lambda s: "A" * 10_000, "sealed_encoding"),
    ],
)
def test_open_rejects_damaged_text(hub_key, mangle, reason):
    sealed = seal_identity(ANH, bytes(hub_key.public_key))
    with pytest.raises(PayloadError) as err:
        open_identity(mangle(sealed), bytes(hub_key))
    assert err.value.reason == reason


def test_open_validates_the_content(hub_key):
    from nacl.public import SealedBox

    def seal_raw(plaintext: bytes) -> str:
        return base64.b64encode(SealedBox(hub_key.public_key).encrypt(plaintext)).decode()

    for plaintext, reason in [
        (b"[]", "sealed_content"),
        (b"not json", "sealed_content"),
        (b'{"number": "079190012345"}', "sealed_content"),
        (
            b'{"address":"x","birth_date":"1990-01-15","full_name":"A","gender":"N\xe1\xbb\xaf",'
            b'"issue_date":null,"number":"079090012345","old_id":null}',
            "cccd_gender_digit",
        ),
    ]:
        with pytest.raises(PayloadError) as err:
            open_identity(seal_raw(plaintext), bytes(hub_key))
        assert err.value.reason == reason


def test_wrong_key_sizes_say_what_to_check(hub_key):
    with pytest.raises(ValueError, match="kiosk configuration"):
        seal_identity(ANH, b"short")
    with pytest.raises(ValueError, match="key file"):
        open_identity("AAAA", b"short")
