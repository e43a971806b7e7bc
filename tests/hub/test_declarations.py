"""Declarations: field-level validation, saving with passes (all or nothing), superseding, finding a pass."""

from __future__ import annotations

import copy
import threading
import unicodedata
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from hub import declarations as decl
from hub.config import PassSettings
from hub.db import make_engine
from hub.db.schema import declarations, pass_status, passes
from hub.keys import KeyRing
from hub.passes import status_list
from protocol.healthpass import Colour

TODAY = date(2021, 9, 1)
NOW = datetime(2021, 9, 1, 3, 0, tzinfo=UTC)  # 10:00 in Viet Nam

# ------------------------------------------------------------------------------------------ builders
# (imported by test_public_web.py too)


def declarant_data(**overrides: Any) -> dict[str, Any]:
    """A valid NCOVI declarant: a woman born 1990 in Hà Nội with her CCCD number."""
    data: dict[str, Any] = {
        "full_name": "Nguyễn Thị Ánh Đào",
        "birth_date": "1990-03-15",
        "gender": "female",
        "phone": "0912345678",
        "id_type": "cccd",
        "id_number": "001190012345",
        "nationality": "VN",
        "address": {
            "province": "Hà Nội",
            "district": "Quận Ba Đình",
            "commune": "Phường Phúc Xá",
            "street": "12 ngõ 34 phố Phúc Xá",
        },
        "symptoms": [],
        "exposures": [],
        "vaccination": {"doses": 2, "last_dose_date": "2021-08-01", "vaccine": "astrazeneca"},
        "tests": [],
    }
    data.update(overrides)
    return data


def member_data(index: int = 0, **overrides: Any) -> dict[str, Any]:
    """A valid family member: a child with a 12-digit personal identification number."""
    people = [
        {"full_name": "Trần Minh Khôi", "birth_year": 2015, "gender": "male", "id_number": "001215000001"},
        {
            "full_name": "Trần Ngọc Ánh",
            "birth_date": "2018-06-02",
            "gender": "female",
            "id_number": "001318000002",
        },
    ]
    data: dict[str, Any] = {"relationship": "child", "id_type": "cccd", **people[index]}
    data.update(overrides)
    return data


def ncovi_data(members: int = 0, **declarant_overrides: Any) -> dict[str, Any]:
    return {
        "declarant": declarant_data(**declarant_overrides),
        "members": [member_data(i) for i in range(members)],
    }


def vhd_data(today: date = TODAY, **overrides: Any) -> dict[str, Any]:
    """A valid entry declaration arriving ``today``."""
    data: dict[str, Any] = {
        "full_name": "Nguyễn Văn An",
        "birth_date": "1985-11-20",
        "gender": "male",
        "nationality": "VN",
        "passport_number": "C1234567",
        "phone": "+1 202 555 0199",
        "transport": {"mode": "air", "number": "VN 55", "seat": "12a"},
        "border_gate": "noi_bai",
        "arrival_date": today.isoformat(),
        "countries_visited": ["US", "JP"],
        "quarantine_address": {
            "province": "Đà Nẵng",
            "district": "Quận Hải Châu",
            "commune": "Phường Thạch Thang",
            "street": "1 Bạch Đằng",
        },
        "symptoms": [],
        "exposures": [],
        "tests": [{"type": "pcr", "date": (today - timedelta(days=2)).isoformat(), "result": "negative"}],
    }
    data.update(overrides)
    return data


def set_path(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``data`` with ``path`` (``a.0.b``) set to ``value`` (``DELETE`` removes it)."""
    out = copy.deepcopy(data)
    node: Any = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is DELETE:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value
    return out


DELETE = object()


def problem_codes(call, data) -> dict[str, str]:
    with pytest.raises(decl.DeclarationError) as caught:
        call(data, today=TODAY)
    return caught.value.codes


# ------------------------------------------------------------------------------------------ NCOVI validation


def test_a_valid_ncovi_declaration_is_cleaned():
    data = ncovi_data(members=2)
    data["declarant"]["full_name"] = "  Nguyễn   Thị\tÁnh Đào "
    data["declarant"]["phone"] = "+84 91 234-5678"
    data["declarant"]["symptoms"] = ["cough", "cough"]
    data["declarant"]["address"]["province"] = "hà nội"
    data["declarant"]["id_number"] = "001 190 012 345"
    model = decl.validate_ncovi(data, today=TODAY)
    d = model.declarant
    assert d.full_name == "Nguyễn Thị Ánh Đào"
    assert d.phone == "+84912345678"
    assert d.symptoms == [decl.Symptom.COUGH]
    assert d.address.province == "Hà Nội"
    assert d.id_number == "001190012345"
    assert [m.full_name for m in model.members] == ["Trần Minh Khôi", "Trần Ngọc Ánh"]
    assert model.members[0].birth_date is None and model.members[0].birth_year == 2015


def test_decomposed_vietnamese_is_stored_composed():
    nfd = unicodedata.normalize("NFD", "Nguyễn Thị Ánh Đào")
    assert nfd != "Nguyễn Thị Ánh Đào"
    model = decl.validate_ncovi(ncovi_data(full_name=nfd), today=TODAY)
    assert model.declarant.full_name == unicodedata.normalize("NFC", "Nguyễn Thị Ánh Đào")


@pytest.mark.parametrize(
    ("phone", "stored"),
    [
        ("0912345678", "+84912345678"),
        ("091.234.5678", "+84912345678"),
        ("+84 912 345 678", "+84912345678"),
        ("84912345678", "+84912345678"),
        ("0084912345678", "+84912345678"),
        ("(+84) 386-123-456", "+84386123456"),
    ],
)
def test_vietnamese_mobile_numbers_are_normalised(phone, stored):
    assert decl.validate_ncovi(ncovi_data(phone=phone), today=TODAY).declarant.phone == stored


NCOVI_PROBLEMS = [
    ("declarant.full_name", "", "required"),
    ("declarant.full_name", DELETE, "required"),
    ("declarant.full_name", "A", "name_length"),
    ("declarant.full_name", "N" * 101, "name_length"),
    ("declarant.full_name", "Nguyễn 3", "name_chars"),
    ("declarant.full_name", "<script>", "name_chars"),
    ("declarant.full_name", "An\x00h", "control_chars"),
    ("declarant.full_name", "An\u202eh", "control_chars"),
    ("declarant.full_name", "An\ufffdh", "control_chars"),
    ("declarant.full_name", "x" * 5000, "text_too_long"),
    ("declarant.full_name", 42, "invalid"),
    ("declarant.birth_date", "", "required"),
    ("declarant.birth_date", "31/02/1990", "invalid_date"),
    ("declarant.birth_date", "1990/03/15", "invalid_date"),
    ("declarant.birth_date", "2021-09-02", "date_future"),
    ("declarant.birth_date", "1899-12-31", "birth_too_early"),
    ("declarant.gender", "", "required"),
    ("declarant.gender", "man", "choose_one"),
    ("declarant.phone", "", "required"),
    ("declarant.phone", "12345", "phone"),
    ("declarant.phone", "0212345678", "phone"),
    ("declarant.phone", "+1 202 555 0199", "phone"),
    ("declarant.id_type", "", "required"),
    ("declarant.id_number", "", "required"),
    ("declarant.id_number", "00119001234", "cccd_format"),
    ("declarant.id_number", "999190012345", "cccd_province"),
    ("declarant.id_number", "001188012345", "cccd_birth_year"),
    ("declarant.id_number", "001390012345", "cccd_birth_year"),
    ("declarant.id_number", "001090012345", "cccd_gender"),
    ("declarant.nationality", "XX", "country"),
    ("declarant.nationality", "US", "id_needs_vietnamese"),
    ("declarant.address", DELETE, "required"),
    ("declarant.address.province", "Atlantis", "province"),
    ("declarant.address.district", "  ", "required"),
    ("declarant.address.commune", "x" * 101, "text_too_long"),
    ("declarant.address.street", "x" * 301, "text_too_long"),
    ("declarant.address.street", "1 Phố\x07", "control_chars"),
    ("declarant.symptoms", ["headache"], "choose_one"),
    ("declarant.exposures", ["bats"], "choose_one"),
    ("declarant.vaccination.doses", "9", "out_of_range"),
    ("declarant.vaccination.doses", "two", "invalid_number"),
    ("declarant.vaccination.last_dose_date", "", "doses_without_date"),
    ("declarant.vaccination.last_dose_date", "2020-06-01", "vaccination_too_early"),
    ("declarant.vaccination.last_dose_date", "2021-09-05", "date_future"),
    ("declarant.vaccination.vaccine", "", "doses_without_vaccine"),
    ("declarant.vaccination.vaccine", "snake-oil", "choose_one"),
    ("declarant.tests", [{"type": "pcr", "date": "2021-08-01", "result": "negative"}], "test_too_old"),
    ("declarant.tests", [{"type": "pcr", "date": "2021-08-30", "result": "maybe"}], "choose_one"),
    ("declarant.tests", [{"type": "pcr", "date": "2021-08-30"}], "required"),
    ("declarant.favourite_colour", "blue", "unknown_field"),
]


@pytest.mark.parametrize(("path", "value", "code"), NCOVI_PROBLEMS)
def test_each_invalid_ncovi_field_gives_its_own_problem(path, value, code):
    codes = problem_codes(decl.validate_ncovi, set_path(ncovi_data(), path, value))
    test_paths = {
        "declarant.tests": "declarant.tests.0.",
        "declarant.symptoms": "declarant.symptoms.0",
        "declarant.exposures": "declarant.exposures.0",
    }
    where = [p for p in codes if p == path or p.startswith(test_paths.get(path, path + "."))]
    assert where, codes
    assert codes[where[0]] == code


def test_vaccination_answers_without_doses_are_refused():
    data = ncovi_data(vaccination={"doses": 0, "last_dose_date": "2021-08-01", "vaccine": "moderna"})
    codes = problem_codes(decl.validate_ncovi, data)
    assert codes == {
        "declarant.vaccination.last_dose_date": "no_doses",
        "declarant.vaccination.vaccine": "no_doses",
    }


def test_other_documents_have_their_own_formats():
    cmnd = ncovi_data(id_type="cmnd", id_number="123456789")
    assert decl.validate_ncovi(cmnd, today=TODAY).declarant.id_number == "123456789"
    assert problem_codes(decl.validate_ncovi, ncovi_data(id_type="cmnd", id_number="12345678")) == {
        "declarant.id_number": "cmnd_format"
    }
    foreigner = ncovi_data(id_type="passport", id_number="x1234567", nationality="FR")
    assert decl.validate_ncovi(foreigner, today=TODAY).declarant.id_number == "X1234567"
    assert problem_codes(decl.validate_ncovi, ncovi_data(id_type="passport", id_number="AB-1")) == {
        "declarant.id_number": "passport_format"
    }


def test_gender_other_skips_the_cccd_gender_digit_check():
    assert decl.validate_ncovi(ncovi_data(gender="other"), today=TODAY).declarant.gender == "other"


MEMBER_PROBLEMS = [
    ("members.0.relationship", "", "required"),
    ("members.0.relationship", "pet", "choose_one"),
    ("members.0.birth_year", DELETE, "birth_missing"),
    ("members.0.birth_year", "1850", "birth_year_range"),
    ("members.0.birth_year", "20x5", "invalid_number"),
    ("members.0.birth_date", "2014-01-01", "birth_year_mismatch"),
    ("members.0.id_number", "001190012345", "duplicate_person"),
    ("members.0.phone", "999", "phone"),
    ("members.0.full_name", "K", "name_length"),
]


@pytest.mark.parametrize(("path", "value", "code"), MEMBER_PROBLEMS)
def test_each_invalid_member_field_gives_its_own_problem(path, value, code):
    codes = problem_codes(decl.validate_ncovi, set_path(ncovi_data(members=1), path, value))
    expected_path = {"birth_missing": "members.0.birth_date", "birth_year_mismatch": "members.0.birth_year"}
    assert codes == {expected_path.get(code, path): code}


def test_at_most_ten_family_members():
    data = ncovi_data()
    data["members"] = [member_data(0, id_number=f"0012150{i:05d}") for i in range(decl.MAX_MEMBERS + 1)]
    assert problem_codes(decl.validate_ncovi, data) == {"members": "too_many"}
    data["members"] = data["members"][: decl.MAX_MEMBERS]
    assert len(decl.validate_ncovi(data, today=TODAY).members) == decl.MAX_MEMBERS


def test_not_a_mapping_is_a_problem_not_a_crash():
    for data in ("x", None, [], {"declarant": "x"}, {"declarant": {}, "members": "x"}):
        with pytest.raises(decl.DeclarationError):
            decl.validate_ncovi(data, today=TODAY)  # type: ignore[arg-type]


def test_messages_are_english_by_default_and_go_through_the_translator():
    error = decl.DeclarationError({"a": ("text_too_long", {"max": 100}), "b": ("required", {})})
    assert error.errors == {"a": "Too long: at most 100 characters.", "b": "This field is required."}
    assert error.messages(lambda msg: "vi: " + msg) == {
        "a": "vi: Too long: at most 100 characters.",
        "b": "vi: This field is required.",
    }


def test_every_problem_code_has_a_message():
    used = {code for _p, _v, code in NCOVI_PROBLEMS + MEMBER_PROBLEMS + VHD_PROBLEMS}
    assert used <= set(decl.MESSAGES)


_TEXT_FIELDS = [
    "declarant.full_name",
    "declarant.phone",
    "declarant.id_number",
    "declarant.birth_date",
    "declarant.address.district",
    "declarant.address.street",
    "declarant.address.province",
    "declarant.vaccination.last_dose_date",
    "declarant.gender",
]


@settings(max_examples=150, deadline=None)
@given(path=st.sampled_from(_TEXT_FIELDS), text=st.text(max_size=400))
def test_any_text_in_any_field_is_accepted_cleanly_or_refused_with_a_problem(path, text):
    data = set_path(ncovi_data(), path, text)
    try:
        model = decl.validate_ncovi(data, today=TODAY)
    except decl.DeclarationError as exc:
        assert exc.problems
        assert all(code in decl.MESSAGES for code in exc.codes.values())
        return
    for value in (
        model.declarant.full_name,
        model.declarant.address.street,
        model.declarant.address.district,
    ):
        assert value == unicodedata.normalize("NFC", value)
        assert value.isprintable()


# ------------------------------------------------------------------------------------------ VHD validation


def test_a_valid_vhd_declaration_is_cleaned():
    model = decl.validate_vhd(vhd_data(), today=TODAY)
    assert model.passport_number == "C1234567"
    assert model.phone == "+12025550199"
    assert model.transport.number == "VN 55" and model.transport.seat == "12A"
    assert model.countries_visited == ["US", "JP"]
    assert model.tests[0].result is decl.TestOutcome.NEGATIVE


@pytest.mark.parametrize("days", [-14, 0, 3])
def test_arrival_may_be_up_to_14_days_ago_or_3_days_ahead(days):
    data = vhd_data(arrival_date=(TODAY + timedelta(days=days)).isoformat())
    assert decl.validate_vhd(data, today=TODAY).arrival_date == TODAY + timedelta(days=days)


VHD_PROBLEMS = [
    ("full_name", "N", "name_length"),
    ("birth_date", "2022-01-01", "date_future"),
    ("gender", "", "required"),
    ("nationality", "ZZ", "country"),
    ("nationality", "", "required"),
    ("passport_number", "AB1", "passport_format"),
    ("passport_number", "", "required"),
    ("phone", "call me", "phone_international"),
    ("transport.mode", "balloon", "choose_one"),
    ("transport.number", "", "required"),
    ("transport.number", "VN/55!", "vehicle"),
    ("transport.seat", "12A-B", "seat"),
    ("transport.seat", "12A-WINDOW", "text_too_long"),
    ("border_gate", "narnia", "choose_one"),
    ("border_gate", "", "required"),
    ("arrival_date", (TODAY + timedelta(days=4)).isoformat(), "arrival_window"),
    ("arrival_date", (TODAY - timedelta(days=15)).isoformat(), "arrival_window"),
    ("arrival_date", "", "required"),
    ("countries_visited", [], "required"),
    ("countries_visited", ["US", "XX"], "country"),
    ("quarantine_address.commune", "", "required"),
    ("quarantine_address.province", "Hanoi City", "province"),
    ("tests", [{"type": "pcr", "date": "2021-09-02", "result": "negative"}], "date_future"),
    ("symptoms", ["sneezing"], "choose_one"),
]


@pytest.mark.parametrize(("path", "value", "code"), VHD_PROBLEMS)
def test_each_invalid_vhd_field_gives_its_own_problem(path, value, code):
    codes = problem_codes(decl.validate_vhd, set_path(vhd_data(), path, value))
    assert len(codes) == 1, codes
    ((where, got),) = codes.items()
    assert where == path or where.startswith(path + ".")
    assert got == code


# ------------------------------------------------------------------------------------------ saving


@pytest.fixture
def keyring(hub_engine):
    return KeyRing(hub_engine, PassSettings())


def _save_ncovi(engine, keyring, data, now=NOW):
    model = decl.validate_ncovi(data, today=decl.today_in_vietnam(now))
    with engine.begin() as conn:
        return decl.save_ncovi(conn, model, keyring=keyring, settings=PassSettings(), now=now)


def _count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_family_declaration_saves_one_row_and_one_pass_per_person(hub_engine, keyring):
    data = ncovi_data(members=2, symptoms=["fever"])
    result = _save_ncovi(hub_engine, keyring, data)
    assert len(result) == 3
    assert [r.colour for r in result] == [Colour.YELLOW, Colour.GREEN, Colour.GREEN]
    assert result[0].reasons == ("symptom:fever",)
    with hub_engine.connect() as conn:
        rows = conn.execute(select(declarations).order_by(declarations.c.id)).all()
        pass_rows = conn.execute(select(passes)).all()
    assert len(rows) == 3 and len(pass_rows) == 3
    declarant, child, daughter = rows
    assert {r.submission_id for r in rows} == {declarant.submission_id}
    assert declarant.declared_by is None and declarant.relationship is None
    assert child.declared_by == declarant.id and daughter.declared_by == declarant.id
    assert child.relationship == "child"
    assert declarant.full_name == "Nguyễn Thị Ánh Đào"
    assert declarant.birth_date == date(1990, 3, 15) and declarant.birth_year == 1990
    assert child.birth_date is None and child.birth_year == 2015
    assert daughter.birth_date == date(2018, 6, 2)
    assert child.province == "Hà Nội" and child.answers["address_from_declarant"] is True
    assert declarant.answers["symptoms"] == ["fever"]
    assert declarant.answers["vaccination"] == {
        "doses": 2,
        "last_dose_date": "2021-08-01",
        "vaccine": "astrazeneca",
    }
    assert declarant.colour == "yellow" and declarant.colour_reasons == ["symptom:fever"]
    assert {p.declaration_id for p in pass_rows} == {r.id for r in rows}
    assert {r.pass_.kind for r in result} == {"ncovi"}


def test_a_positive_test_gives_a_red_pass(hub_engine, keyring):
    data = ncovi_data(tests=[{"type": "rapid_antigen", "date": "2021-08-30", "result": "positive"}])
    (saved,) = _save_ncovi(hub_engine, keyring, data)
    assert saved.colour is Colour.RED and saved.pass_.colour is Colour.RED


def test_nothing_is_saved_when_one_person_of_a_submission_fails(hub_engine, keyring, monkeypatch):
    real_issue = decl.issue_pass
    calls = []

    def failing_issue(conn, **kwargs):
        calls.append(kwargs["declaration_id"])
        if len(calls) == 3:
            raise RuntimeError("signing failed for the third person")
        return real_issue(conn, **kwargs)

    monkeypatch.setattr(decl, "issue_pass", failing_issue)
    with pytest.raises(RuntimeError):
        _save_ncovi(hub_engine, keyring, ncovi_data(members=2))
    assert len(calls) == 3
    assert _count(hub_engine, declarations) == 0
    assert _count(hub_engine, passes) == 0


def test_a_new_declaration_supersedes_the_current_one_and_keeps_history(hub_engine, keyring):
    (first,) = _save_ncovi(hub_engine, keyring, ncovi_data())
    later = NOW + timedelta(days=2)
    (second,) = _save_ncovi(hub_engine, keyring, ncovi_data(symptoms=["cough"]), now=later)
    with hub_engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(declarations)).all()}
        listed = status_list(conn, later)
    assert len(rows) == 2
    old, new = rows[first.declaration_id], rows[second.declaration_id]
    assert old.superseded_by == new.id and old.superseded_at is not None
    assert new.superseded_at is None and new.superseded_by is None
    assert old.colour == "green" and new.colour == "yellow"
    # The older green pass must not keep opening doors: kiosks now see it as yellow.
    assert listed.colour_for(first.pass_.pass_id) == Colour.YELLOW
    assert listed.colour_for(second.pass_.pass_id) is None


def test_simultaneous_declarations_of_one_person_leave_exactly_one_current(db_url, hub_engine, keyring):
    engines = [make_engine(db_url) for _ in range(4)]
    barrier = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def declare(engine, day):
        try:
            barrier.wait()
            _save_ncovi(
                engine, KeyRing(engine, PassSettings()), ncovi_data(), now=NOW + timedelta(minutes=day)
            )
        except BaseException as exc:  # reported below
            errors.append(exc)

    keyring.signing_key(NOW)  # the key exists before the race (its creation is tested in test_keys)
    threads = [threading.Thread(target=declare, args=(e, i)) for i, e in enumerate(engines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for engine in engines:
        engine.dispose()
    assert errors == []
    with hub_engine.connect() as conn:
        rows = conn.execute(select(declarations.c.id, declarations.c.superseded_at)).all()
    assert len(rows) == 4
    assert sum(r.superseded_at is None for r in rows) == 1


def test_a_better_new_declaration_leaves_the_older_pass_alone(hub_engine, keyring):
    (first,) = _save_ncovi(hub_engine, keyring, ncovi_data(symptoms=["fever"]))
    _save_ncovi(hub_engine, keyring, ncovi_data(), now=NOW + timedelta(days=1))
    assert _count(hub_engine, pass_status) == 0
    with hub_engine.connect() as conn:
        summary = decl.pass_summary(conn, first.pass_.pass_id, NOW + timedelta(days=1))
    assert summary is not None and summary.superseded and summary.colour is Colour.YELLOW


def test_a_member_declared_by_someone_else_is_superseded_too(hub_engine, keyring):
    first = _save_ncovi(hub_engine, keyring, ncovi_data(members=1))
    child_alone = ncovi_data(
        full_name="Trần Văn Hùng",
        birth_date="1960-01-01",
        gender="male",
        id_number="001060000009",
    )
    _save_ncovi(hub_engine, keyring, child_alone, now=NOW + timedelta(hours=1))
    member = member_data(0)
    again = ncovi_data(**{**declarant_data(), "full_name": member["full_name"]})
    again["declarant"].update(birth_date="2015-05-05", gender="male", id_number=member["id_number"])
    (latest,) = _save_ncovi(hub_engine, keyring, again, now=NOW + timedelta(hours=2))
    with hub_engine.connect() as conn:
        old_child = conn.execute(
            select(declarations).where(declarations.c.id == first[1].declaration_id)
        ).one()
    assert old_child.superseded_by == latest.declaration_id


def test_vhd_saves_the_journey_and_issues_a_vhd_pass(hub_engine, keyring):
    model = decl.validate_vhd(vhd_data(), today=TODAY)
    with hub_engine.begin() as conn:
        (saved,) = decl.save_vhd(conn, model, keyring=keyring, settings=PassSettings(), now=NOW)
    with hub_engine.connect() as conn:
        row = conn.execute(select(declarations)).one()
    assert saved.pass_.kind == "vhd" and saved.colour is Colour.GREEN
    assert row.kind == "vhd" and row.id_number == "C1234567" and row.nationality == "VN"
    assert row.province == "Đà Nẵng" and row.address == "1 Bạch Đằng"
    assert row.answers["transport"] == {"mode": "air", "number": "VN 55", "seat": "12A"}
    assert row.answers["countries_visited"] == ["US", "JP"]
    assert row.answers["arrival_date"] == "2021-09-01"


# ------------------------------------------------------------------------------------------ finding a pass


def test_find_pass_needs_the_right_birth_date(hub_engine, keyring):
    declarant, child, daughter = _save_ncovi(hub_engine, keyring, ncovi_data(members=2))
    pid = declarant.pass_.pass_id
    with hub_engine.connect() as conn:
        assert decl.find_pass(conn, pid, date(1990, 3, 15)) == declarant.pass_
        assert (
            decl.find_pass(conn, f"{pid[:5].lower()}-{pid[5:].lower()}", date(1990, 3, 15)) == declarant.pass_
        )
        assert decl.find_pass(conn, pid, date(1990, 3, 16)) is None
        # The declarant gave an exact date: a year is not enough.
        assert decl.find_pass(conn, pid, 1990) is None
        # A member declared with only a birth year: the year, or any date in that year.
        assert decl.find_pass(conn, child.pass_.pass_id, 2015) == child.pass_
        assert decl.find_pass(conn, child.pass_.pass_id, date(2015, 7, 1)) == child.pass_
        assert decl.find_pass(conn, child.pass_.pass_id, 2016) is None
        assert decl.find_pass(conn, daughter.pass_.pass_id, date(2018, 6, 2)) == daughter.pass_
        assert decl.find_pass(conn, "0000000000", date(1990, 3, 15)) is None
        assert decl.find_pass(conn, "not a pass", date(1990, 3, 15)) is None
        assert decl.find_pass(conn, pid, "1990-03-15") is None  # type: ignore[arg-type]


def test_pass_summary_shows_initials_never_the_name(hub_engine, keyring):
    (saved,) = _save_ncovi(hub_engine, keyring, ncovi_data())
    with hub_engine.connect() as conn:
        summary = decl.pass_summary(conn, saved.pass_.pass_id, NOW)
        assert decl.pass_summary(conn, "0000000000", NOW) is None
    assert summary is not None
    assert summary.initials == "NTAD"
    assert summary.birth_year == 1990
    assert not summary.expired and not summary.superseded
    assert "Nguyễn" not in repr(summary) and "001190012345" not in repr(summary)
    with hub_engine.connect() as conn:
        assert decl.pass_summary(conn, saved.pass_.pass_id, saved.pass_.expires_at).expired


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(alphabet=st.characters(categories=["L", "M", "Zs"]), min_size=2, max_size=100))
def test_any_accepted_name_round_trips_through_the_database(hub_engine, keyring, name):
    data = ncovi_data(
        full_name=name, id_type="passport", id_number="P" + str(abs(hash(name)) % 10**8).zfill(8)
    )
    try:
        model = decl.validate_ncovi(data, today=TODAY)
    except decl.DeclarationError:
        return
    with hub_engine.begin() as conn:
        (saved,) = decl.save_ncovi(conn, model, keyring=keyring, settings=PassSettings(), now=NOW)
    with hub_engine.connect() as conn:
        stored = conn.execute(
            select(declarations.c.full_name).where(declarations.c.id == saved.declaration_id)
        ).scalar_one()
    assert stored == model.declarant.full_name == " ".join(unicodedata.normalize("NFC", name).split())
