"""Health officials' case workflow on the web and the API: open a case, F1 with reasons, F2 job, decisions,
pass colours, CSV export (BOM, formula injection), who contacts are, authorization and the audit log.

Presences are made the way the bridge makes them: real check-in/check-out events committed through
HubStore.commit (pass subjects of passes issued for real declarations, and ID cards sealed to the hub's key).
"""

from __future__ import annotations

import base64
import csv
import io
import itertools
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from hub import cases as hub_cases
from hub import declarations as decl
from hub import people
from hub.accounts import Role
from hub.cases import VIETNAM, CaseError
from hub.db.schema import audit_log, case_contacts, devices, persons
from hub.db.schema import cases as cases_table
from hub.db.store import EventRow, HubStore
from hub.devices import add_venue
from hub.passes import current_colour
from hub.web import cases as cases_web
from hub.web import create_app, i18n
from hub.web.cases import EXPORT_HEADERS, FORMULA_STARTS, case_error_message, csv_cell
from protocol.healthpass import Colour
from protocol.sealed import seal
from tests.helpers import wait_for
from tests.hub.staff_helpers import bearer, engine_of, hub_config, login, make_token, make_user, post
from tests.hub.test_declarations import declarant_data

_seq = itertools.count(1)

MARKET = ("cho-ben-thanh", "Chợ Bến Thành", "market", "kiosk-cho-1")
RESTAURANT = ("quan-pho-24", "Quán Phở 24", "restaurant", "kiosk-pho-1")


# ------------------------------------------------------------------------------------------- builders


def _base_time() -> datetime:
    """Two days ago on the hour (inside the default 14-day window of a case opened today)."""
    return (datetime.now(UTC) - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)


def _today_vn():
    return datetime.now(UTC).astimezone(VIETNAM).date()


def _place(app: Flask, venue: tuple[str, str, str, str]) -> None:
    venue_id, name, venue_type, kiosk_id = venue
    with engine_of(app).begin() as conn:
        add_venue(conn, venue_id=venue_id, name=name, venue_type=venue_type, now=datetime.now(UTC))
        conn.execute(
            devices.insert().values(kiosk_id=kiosk_id, venue_id=venue_id, enrolled_at=datetime.now(UTC))
        )


def _declare(app: Flask, *, id_number: str, full_name: str, phone: str, **extra):
    """An NCOVI declaration saved as the public form saves it; returns the SavedDeclaration."""
    web = app.extensions["antoan"]
    person = declarant_data(id_number=id_number, full_name=full_name, phone=phone, **extra)
    model = decl.validate_ncovi({"declarant": person, "members": []})
    with web.engine.begin() as conn:
        return decl.save_ncovi(
            conn, model, keyring=web.keyring, settings=web.config.passes, now=datetime.now(UTC)
        )[0]


def card_subject(app: Flask, number: str, full_name: str, birth_date: str = "1985-04-02") -> dict:
    """An ID card as a kiosk sends it: the card's fields sealed to the hub's public key."""
    card = {
        "number": number,
        "old_id": None,
        "full_name": full_name,
        "birth_date": birth_date,
        "gender": "Nam",
        "address": "Quận 1, TP. Hồ Chí Minh",
        "issue_date": None,
    }
    key = base64.b64decode(app.extensions["antoan"].identity.public_key_b64)
    return {"type": "cccd", "sealed": seal(json.dumps(card, ensure_ascii=False).encode(), key)}


def pass_subject(pass_id: str) -> dict:
    return {"type": "pass", "pass_id": pass_id, "kid": "00" * 8}


def _event(kiosk_id: str, subject: dict, at: datetime, *, out: bool = False) -> EventRow:
    return EventRow(
        kiosk_id=kiosk_id,
        epoch="e1",
        seq=next(_seq),
        uuid=str(uuid.uuid4()),
        kind="check_out" if out else "check_in",
        device_time=at,
        body={"direction": "out" if out else "in", "subject": subject, "verdict": "green"},
    )


def visit(app: Flask, venue, subject: dict, arrive: datetime, depart: datetime | None = None) -> None:
    """Commit a check-in (and a check-out when ``depart`` is given) through the ingest store."""
    rows = [_event(venue[3], subject, arrive)]
    if depart is not None:
        rows.append(_event(venue[3], subject, depart, out=True))
    HubStore(engine_of(app)).commit(events=rows)


@dataclass
class Outbreak:
    """A market morning: F0 ``a``; F1 ``b`` (pass) and ``c`` (ID card only); F2 ``d`` met ``b`` the next day;
    ``e`` was at the market hours later (no contact)."""

    t0: datetime
    a: object
    b: object
    d: object
    e: object
    c_number: str
    c_name: str


def outbreak(app: Flask) -> Outbreak:
    _place(app, MARKET)
    _place(app, RESTAURANT)
    t0 = _base_time()
    a = _declare(app, id_number="001190012345", full_name="Nguyễn Thị Ánh Đào", phone="0912345678")
    b = _declare(app, id_number="001190054321", full_name="Trần Thị Bích", phone="0987000111")
    d = _declare(app, id_number="001190099999", full_name="Phạm Thị Dung", phone="0987000222")
    e = _declare(app, id_number="001190077777", full_name="Lê Thị Em", phone="0987000333")
    c_number, c_name = "079085001234", "Võ Văn Cường"
    m = timedelta(minutes=1)
    visit(app, MARKET, pass_subject(a.pass_.pass_id), t0, t0 + 60 * m)
    visit(app, MARKET, pass_subject(b.pass_.pass_id), t0 + 30 * m, t0 + 90 * m)
    visit(app, MARKET, card_subject(app, c_number, c_name), t0 + 40 * m)  # no exit scan: a market's hour
    visit(app, MARKET, pass_subject(e.pass_.pass_id), t0 + 300 * m, t0 + 360 * m)
    next_day = t0 + timedelta(days=1)
    visit(app, RESTAURANT, pass_subject(b.pass_.pass_id), next_day, next_day + 60 * m)
    visit(app, RESTAURANT, pass_subject(d.pass_.pass_id), next_day + 15 * m, next_day + 60 * m)
    return Outbreak(t0=t0, a=a, b=b, d=d, e=e, c_number=c_number, c_name=c_name)


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def app(db_url):
    app = create_app(hub_config(db_url, login_rate="1000 per minute"))
    yield app
    app.extensions["antoan"].close()
    engine_of(app).dispose()


@pytest.fixture
def official(app: Flask) -> FlaskClient:
    make_user(app, "bacsi.lan", Role.HEALTH_OFFICIAL, display_name="Bác sĩ Lan")
    client = app.test_client()
    assert login(client, "bacsi.lan").status_code == 302
    return client


def open_case_by_form(client: FlaskClient, **fields) -> int:
    data = {
        "declaration_id": "",
        "pass_id": "",
        "cccd_number": "",
        "phone": "",
        "onset_date": "",
        "test_date": "",
    }
    data.update(fields)
    response = post(client, "/admin/cases/new", data)
    assert response.status_code == 302, response.get_data(as_text=True)[-2000:]
    match = re.fullmatch(r"/admin/cases/(\d+)", response.location)
    assert match, response.location
    return int(match.group(1))


def wait_f2_done(client: FlaskClient, case_id: int) -> dict:
    def done():
        body = client.get(f"/admin/cases/{case_id}/progress").get_json()
        return body if body["state"] in ("done", "failed") else None

    body = wait_for(done, timeout_s=60, what=f"the F2 job of case {case_id}")
    assert body["state"] == "done", body
    return body


def _audit(app: Flask, action: str):
    with engine_of(app).connect() as conn:
        return conn.execute(
            select(audit_log).where(audit_log.c.action == action).order_by(audit_log.c.id)
        ).all()


def _colour(app: Flask, pass_id: str) -> Colour:
    with engine_of(app).connect() as conn:
        return current_colour(conn, pass_id)


def _contact(app: Flask, case_id: int, degree: int):
    with engine_of(app).connect() as conn:
        return conn.execute(
            select(case_contacts).where(case_contacts.c.case_id == case_id, case_contacts.c.degree == degree)
        ).all()


def _person_named(app: Flask, case_id: int, degree: int, name: str) -> int:
    """The person id of the contact called ``name``."""
    ids = [r.person_id for r in _contact(app, case_id, degree)]
    with engine_of(app).begin() as conn:
        found = people.describe(conn, app.extensions["antoan"].identity, ids, now=datetime.now(UTC))
    (person_id,) = [p for p, person in found.items() if person.full_name == name]
    return person_id


def _vn(at: datetime) -> str:
    return at.astimezone(VIETNAM).strftime("%Y-%m-%d %H:%M")


# ------------------------------------------------------------------------------------------- the workflow


def test_an_official_opens_a_case_and_sees_f1_with_reasons_then_f2(app, official):
    world = outbreak(app)
    case_id = open_case_by_form(
        official,
        declaration_id=str(world.a.declaration_id),
        onset_date=_today_vn().isoformat(),
        note="Ca từ chợ",
    )
    page = official.get(f"/admin/cases/{case_id}").get_data(as_text=True)
    assert "Nguyễn Thị Ánh Đào" in page  # the F0
    f1 = page.split('id="f1-list"')[1].split("</table>")[0]
    # F1 by pass: name, last 4 of the ID number, the encounter at the market in Vietnam time.
    assert "Trần Thị Bích" in f1 and "…4321" in f1 and "+84987000111" in f1
    assert "Chợ Bến Thành" in f1
    assert f"{_vn(world.t0 + timedelta(minutes=30))} – {_vn(world.t0 + timedelta(minutes=90))}, 60 phút" in f1
    # F1 by ID card only: the name comes from the sealed card of their check-in.
    assert "Võ Văn Cường" in f1 and "…1234" in f1 and "CCCD quét tại trạm" in f1
    assert "Lê Thị Em" not in page
    # The venues of the window, with the F0's own times.
    venues = page.split('id="venues"')[1].split("</section>")[0]
    assert (
        "Chợ Bến Thành" in venues and _vn(world.t0) in venues and _vn(world.t0 + timedelta(hours=1)) in venues
    )
    assert 'id="f1-count">2<' in page

    progress = wait_f2_done(official, case_id)
    assert progress["f2_count"] == 1 and progress["f1_count"] == 2
    page = official.get(f"/admin/cases/{case_id}").get_data(as_text=True)
    f2 = page.split('id="f2-list"')[1].split("</table>")[0]
    assert "Phạm Thị Dung" in f2 and "Quán Phở 24" in f2 and "cùng Trần Thị Bích" in f2
    assert "Đã tìm xong F2: 1 người." in page

    # Pass colours: F0 red, F1 red (f1_colour), F2 yellow; the unrelated visitor keeps green.
    assert _colour(app, world.a.pass_.pass_id) is Colour.RED
    assert _colour(app, world.b.pass_.pass_id) is Colour.RED
    assert _colour(app, world.d.pass_.pass_id) is Colour.YELLOW
    assert _colour(app, world.e.pass_.pass_id) is Colour.GREEN


def test_case_list_shows_cases_newest_first_with_counts(app, official):
    world = outbreak(app)
    first = open_case_by_form(
        official, declaration_id=str(world.a.declaration_id), test_date=_today_vn().isoformat()
    )
    second = open_case_by_form(official, cccd_number=world.c_number, test_date=_today_vn().isoformat())
    html = official.get("/admin/cases/").get_data(as_text=True)
    assert html.index(f">#{second}<") < html.index(f">#{first}<")
    assert "CCCD …1234" in html and "Nguyễn Thị Ánh Đào" in html
    (entry,) = _audit(app, "case_list")
    assert entry.actor == "user:bacsi.lan" and entry.detail["cases"] == [second, first]
    assert 'href="/admin/cases/"' in official.get("/admin/").get_data(as_text=True)  # the nav link


def test_confirm_and_dismiss_change_status_and_a_dismissal_gives_the_pass_its_colour_back(app, official):
    world = outbreak(app)
    case_id = open_case_by_form(official, pass_id=world.a.pass_.pass_id, onset_date=_today_vn().isoformat())
    wait_f2_done(official, case_id)
    b_id = _person_named(app, case_id, 1, "Trần Thị Bích")

    url = f"/admin/cases/{case_id}/contacts/{b_id}"
    response = post(official, url, {"decision": "confirmed", "f1_page": "1", "f2_page": "1"})
    assert response.status_code == 302 and response.location.endswith(f"#p{b_id}")
    assert {r.person_id: r.status for r in _contact(app, case_id, 1)}[b_id] == "confirmed"
    assert _colour(app, world.b.pass_.pass_id) is Colour.RED

    assert post(official, url, {"decision": "dismissed"}).status_code == 302
    row = next(r for r in _contact(app, case_id, 1) if r.person_id == b_id)
    assert row.status == "dismissed" and row.decided_by == "user:bacsi.lan"
    assert _colour(app, world.b.pass_.pass_id) is Colour.GREEN  # the signed colour again
    assert _colour(app, world.a.pass_.pass_id) is Colour.RED  # the F0 keeps hers

    # Undoing the dismissal raises the colour again.
    assert post(official, url, {"decision": "suggested"}).status_code == 302
    assert _colour(app, world.b.pass_.pass_id) is Colour.RED
    page = official.get(f"/admin/cases/{case_id}").get_data(as_text=True)
    assert "1 đã xác nhận" not in page and "0 đã xác nhận, 0 đã loại" in page
    assert [e.detail["person"] for e in _audit(app, "contact.dismissed")] == [b_id]
    assert post(official, url, {"decision": "maybe"}).status_code == 400
    assert (
        post(official, f"/admin/cases/{case_id}/contacts/987654", {"decision": "confirmed"}).status_code
        == 404
    )


def test_every_view_and_export_is_audited_with_the_case(app, official):
    world = outbreak(app)
    case_id = open_case_by_form(
        official, phone="0987 000 111", test_date=_today_vn().isoformat()
    )  # B's phone
    (opened,) = _audit(app, "case.open")
    assert opened.target_id == str(case_id) and opened.actor == "user:bacsi.lan" and opened.detail["f1"] >= 1
    official.get(f"/admin/cases/{case_id}?f1_page=1")
    (viewed,) = _audit(app, "case_view")
    assert viewed.target_id == str(case_id) and viewed.actor == "user:bacsi.lan"
    assert viewed.detail["f1_page"] == 1 and viewed.detail["persons"]  # who was shown
    assert post(official, f"/admin/cases/{case_id}/export.csv").status_code == 200
    (exported,) = _audit(app, "case_export")
    assert exported.target_id == str(case_id) and exported.actor == "user:bacsi.lan"
    assert exported.detail["f1"] == len(_contact(app, case_id, 1))
    del world


# ------------------------------------------------------------------------------------------- export


@pytest.mark.parametrize("start", FORMULA_STARTS)
def test_csv_cell_neutralises_every_formula_start(start):
    assert csv_cell(start + "1+1") == "'" + start + "1+1"
    assert csv_cell("a" + start) == "a" + start
    assert csv_cell(None) == "" and csv_cell(1990) == "1990"


def test_export_is_streamed_utf8_with_bom_vietnamese_headers_and_no_formulas(app, official):
    _place(app, MARKET)
    t0 = _base_time()
    f0 = _declare(app, id_number="001190012345", full_name="Nguyễn Thị Ánh Đào", phone="0912345678")
    visit(app, MARKET, pass_subject(f0.pass_.pass_id), t0, t0 + timedelta(hours=1))
    hostile = {start: f'{start}HYPERLINK("http://x.example")' for start in FORMULA_STARTS}
    for i, name in enumerate(hostile.values()):
        visit(app, MARKET, card_subject(app, f"0790850{i:05d}", name), t0 + timedelta(minutes=10))
    plain = _declare(app, id_number="001190054321", full_name="Trần Thị Bích", phone="0987000111")
    visit(
        app, MARKET, pass_subject(plain.pass_.pass_id), t0 + timedelta(minutes=20), t0 + timedelta(minutes=70)
    )
    case_id = open_case_by_form(
        official, declaration_id=str(f0.declaration_id), onset_date=_today_vn().isoformat()
    )

    response = post(official, f"/admin/cases/{case_id}/export.csv")
    assert response.status_code == 200 and response.is_streamed
    assert response.mimetype == "text/csv" and response.mimetype_params["charset"] == "utf-8"
    assert "attachment" in response.headers["Content-Disposition"]
    raw = response.get_data()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert tuple(rows[0]) == EXPORT_HEADERS and rows[0][2] == "Họ và tên"
    body = rows[1:]
    assert len(body) == len(hostile) + 1 and {r[0] for r in body} == {"F1"}
    names = {r[2] for r in body}
    for name in hostile.values():
        assert "'" + name in names
    for row in body:
        assert not any(cell.startswith(FORMULA_STARTS) for cell in row), row
    (bich,) = [r for r in body if r[2] == "Trần Thị Bích"]
    assert bich[3] == "0987000111" and bich[4] == "…4321" and bich[5] == "1990" and bich[6] == "Chợ Bến Thành"
    assert bich[7] == _vn(t0) and bich[8] == _vn(t0 + timedelta(hours=1))  # the F0's hour, widened
    assert bich[9] == "60" and bich[10] == "Đề xuất"


# ------------------------------------------------------------------------------------------- errors


def _new_case_errors(client: FlaskClient, **fields) -> str:
    data = {
        "declaration_id": "",
        "pass_id": "",
        "cccd_number": "",
        "phone": "",
        "onset_date": "",
        "test_date": "",
    }
    data.update(fields)
    response = post(client, "/admin/cases/new", data)
    assert response.status_code == 400
    return response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"pass_id": "not a pass!"}, "pass_id", "Đây không phải mã thẻ"),
        ({"cccd_number": "123"}, "cccd_number", "Số CCCD không hợp lệ (12 chữ số)."),
        ({"phone": "abc"}, "phone", "Đây không phải số điện thoại Việt Nam."),
        ({"phone": "0909111222"}, "phone", "Không có tờ khai hiện hành nào có số điện thoại này"),
        ({"phone": "0911222333"}, "phone", "2 người khai cùng số điện thoại này"),
        ({"declaration_id": "987654"}, "declaration_id", "Không có tờ khai mang số này."),
        ({"cccd_number": "079085001234", "onset_date": "2999-01-01"}, "onset_date", "ở trong tương lai"),
        ({"cccd_number": "079085001234", "test_date": "2999-01-01"}, "test_date", "ở trong tương lai"),
    ],
)
def test_engine_refusals_are_shown_in_vietnamese_next_to_their_field(app, official, fields, field, message):
    _declare(app, id_number="001190012345", full_name="Nguyễn Thị Mẹ", phone="0911222333")
    _declare(app, id_number="001090012345", full_name="Nguyễn Văn Bố", phone="0911222333", gender="male")
    if "onset_date" not in fields and "test_date" not in fields:
        fields = {**fields, "test_date": _today_vn().isoformat()}
    html = _new_case_errors(official, **fields)
    errors = re.search(rf'<ul class="errors" id="{field}-errors">(.*?)</ul>', html, re.S)
    assert errors and message in errors.group(1), html[-3000:]


def test_form_needs_exactly_one_subject_and_a_date(app, official):
    html = _new_case_errors(official, cccd_number="079085001234", phone="0912345678")
    assert "Hãy điền đúng một trong các ô" in html
    html = _new_case_errors(official, cccd_number="079085001234")
    assert "Hãy nhập ngày khởi phát hoặc ngày xét nghiệm." in html
    html = _new_case_errors(official, cccd_number="079085001234", onset_date="2021-02-30")
    assert "Không có ngày này." in html


def test_every_engine_case_error_has_a_translated_message(app):
    """Each CaseError text of hub/cases.py maps to its own message (not the generic fallback).

    A malformed phone is left out: resolve_subject lets normalise_phone's pydantic error through (the form
    and the API check the phone first; see the refusal tests above)."""
    _declare(app, id_number="001190012345", full_name="Nguyễn Thị Mẹ", phone="0911222333")
    _declare(app, id_number="001090012345", full_name="Nguyễn Văn Bố", phone="0911222333", gender="male")
    web = app.extensions["antoan"]
    people.prepare(web.identity)
    now = datetime.now(UTC)
    refusals = []
    with web.engine.begin() as conn:
        for kwargs in (
            {},
            {"pass_id": "?"},
            {"cccd_number": "1"},
            {"phone": "0909111222"},
            {"phone": "0911222333"},
            {"declaration_id": 5},
        ):
            with pytest.raises(CaseError) as caught:
                hub_cases.resolve_subject(conn, web.identity, now=now, **kwargs)
            refusals.append(caught.value)
        subject = hub_cases.resolve_subject(conn, web.identity, cccd_number="079085001234", now=now)
    for dates in (
        {"onset_date": None, "test_date": None},
        {"onset_date": now.date() + timedelta(days=3), "test_date": None},
    ):
        with pytest.raises(CaseError) as caught:
            hub_cases.open_case(
                web.engine,
                web.identity,
                subject,
                rules=web.config.tracing,
                actor="t",
                role=None,
                now=now,
                **dates,
            )
        refusals.append(caught.value)
    with app.test_request_context("/?lang=vi"):
        fallback = case_error_message(CaseError("something new"))[1]
        assert fallback == "Không mở được ca bệnh: something new"
        mapped = [case_error_message(exc)[1] for exc in refusals]
    assert fallback not in mapped and len(set(mapped)) == len(mapped)


def test_case_messages_of_the_python_module_are_translated(monkeypatch):
    """hub/web/cases.py keeps its messages (form labels, refusals) in the admin catalog."""
    monkeypatch.setitem(i18n.SOURCES, "admin", ("hub/web/cases.py",))
    assert i18n.check("admin") == []


# ------------------------------------------------------------------------------------------- people


def test_people_describes_declared_card_only_and_pass_only_persons(app):
    world = outbreak(app)
    web = app.extensions["antoan"]
    people.prepare(web.identity)
    visit(app, MARKET, pass_subject("ABCDEFGHJK"), world.t0 + timedelta(hours=8))  # a pass not issued here
    now = datetime.now(UTC)
    with web.engine.begin() as conn:
        ids = sorted(int(p) for (p,) in conn.execute(select(persons.c.id)))
        found = people.describe(conn, web.identity, ids, now=now)
    by_name = {p.full_name: p for p in found.values()}
    bich = by_name["Trần Thị Bích"]
    assert (bich.source, bich.phone, bich.birth_year, bich.id_last4) == (
        "declaration",
        "+84987000111",
        1990,
        "4321",
    )
    assert bich.pass_ids == (world.b.pass_.pass_id,) and bich.declaration_id == world.b.declaration_id
    card = by_name[world.c_name]
    assert (card.source, card.birth_year, card.id_last4, card.phone) == ("card", 1985, "1234", None)
    (foreign,) = [p for p in found.values() if p.source == "pass"]
    assert foreign.pass_ids == ("ABCDEFGHJK",) and foreign.full_name is None


def test_a_newer_declaration_is_the_one_described(app):
    web = app.extensions["antoan"]
    _declare(app, id_number="001190012345", full_name="Nguyễn Thị Cũ", phone="0912345678")
    newer = _declare(app, id_number="001190012345", full_name="Nguyễn Thị Mới", phone="0912999888")
    people.prepare(web.identity)
    now = datetime.now(UTC)
    with web.engine.begin() as conn:
        subject = hub_cases.resolve_subject(conn, web.identity, declaration_id=newer.declaration_id, now=now)
        person = people.describe(conn, web.identity, [subject.person_id], now=now)[subject.person_id]
    assert (person.full_name, person.phone, person.declaration_id) == (
        "Nguyễn Thị Mới",
        "+84912999888",
        newer.declaration_id,
    )


# ------------------------------------------------------------------------------------------- who may


@pytest.mark.parametrize("role", [Role.VENUE_MANAGER, Role.DISTRICT_IT])
def test_venue_managers_and_district_it_may_not_see_cases(app, official, role):
    world = outbreak(app)
    case_id = open_case_by_form(
        official, declaration_id=str(world.a.declaration_id), test_date=_today_vn().isoformat()
    )
    person_id = _contact(app, case_id, 1)[0].person_id
    make_user(app, "khac", role)
    other = app.test_client()
    assert login(other, "khac").status_code == 302
    for url in (
        "/admin/cases/",
        "/admin/cases/new",
        f"/admin/cases/{case_id}",
        f"/admin/cases/{case_id}/progress",
    ):
        assert other.get(url).status_code == 403, url
    for url, data in (
        ("/admin/cases/new", {"cccd_number": "079085001234", "test_date": _today_vn().isoformat()}),
        (f"/admin/cases/{case_id}/contacts/{person_id}", {"decision": "dismissed"}),
        (f"/admin/cases/{case_id}/export.csv", {}),
    ):
        assert post(other, url, data).status_code == 403, url
    assert "/admin/cases/" not in other.get("/admin/").get_data(as_text=True)
    _, token = make_token(app, role)
    api = app.test_client()
    assert api.get(f"/api/v1/cases/{case_id}", headers=bearer(token)).status_code == 403
    assert api.get(f"/api/v1/cases/{case_id}/contacts", headers=bearer(token)).status_code == 403
    assert (
        api.post("/api/v1/cases", json={"cccd_number": "079085001234"}, headers=bearer(token)).status_code
        == 403
    )
    assert {r.status for r in _contact(app, case_id, 1)} == {"suggested"}
    assert _audit(app, "case_view") == [] and _audit(app, "case_export") == []


# ------------------------------------------------------------------------------------------- API


def test_api_opens_a_case_pages_contacts_and_decides(app):
    world = outbreak(app)
    _, token = make_token(app, Role.HEALTH_OFFICIAL, name="so-y-te")
    api = app.test_client()
    created = api.post(
        "/api/v1/cases",
        json={"cccd_number": world.c_number, "test_date": _today_vn().isoformat()},
        headers=bearer(token),
    )
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    case_id = body["case_id"]
    assert body["f1_count"] == 2  # the F0 of the market and Trần Thị Bích

    def done():
        doc = api.get(f"/api/v1/cases/{case_id}", headers=bearer(token)).get_json()
        return doc if doc["f2_state"] == "done" else None

    doc = wait_for(done, timeout_s=60, what="the F2 job")
    assert (
        doc["label"] == "CCCD …1234"
        and doc["counts"]["F1"] == 2
        and doc["f2_count"] == doc["counts"].get("F2", 0)
    )

    page = api.get(f"/api/v1/cases/{case_id}/contacts?degree=1", headers=bearer(token)).get_json()
    assert page["has_next"] is False and {c["person"]["full_name"] for c in page["contacts"]} == {
        "Nguyễn Thị Ánh Đào",
        "Trần Thị Bích",
    }
    bich = next(c for c in page["contacts"] if c["person"]["full_name"] == "Trần Thị Bích")
    (reason,) = bich["reasons"]
    assert (
        reason["venue_name"] == "Chợ Bến Thành" and reason["minutes"] == bich["longest_overlap_minutes"] == 60
    )
    assert bich["person"]["id_last4"] == "4321" and bich["person"]["pass_ids"] == [world.b.pass_.pass_id]

    decided = api.post(
        f"/api/v1/cases/{case_id}/contacts/{bich['person_id']}",
        json={"decision": "dismissed"},
        headers=bearer(token),
    )
    assert decided.status_code == 200 and decided.get_json()["status"] == "dismissed"
    assert decided.get_json()["decided_by"].startswith("token:")
    assert _colour(app, world.b.pass_.pass_id) is Colour.GREEN

    assert api.get(f"/api/v1/cases/{case_id}/contacts?degree=3", headers=bearer(token)).status_code == 400
    assert api.get("/api/v1/cases/987654", headers=bearer(token)).status_code == 404
    assert (
        api.post(
            f"/api/v1/cases/{case_id}/contacts/987654", json={"decision": "confirmed"}, headers=bearer(token)
        ).status_code
        == 404
    )
    refused = api.post(
        "/api/v1/cases", json={"cccd_number": "1", "test_date": "2021-08-01"}, headers=bearer(token)
    )
    assert refused.status_code == 422 and "CCCD" in refused.get_json()["message"]
    actions = {e.action for e in _audit(app, "case_view")} | {
        e.action for e in _audit(app, "case_contacts_view")
    }
    assert actions == {"case_view", "case_contacts_view"}


# ------------------------------------------------------------------------------------------- pages


def test_contact_lists_are_paged_and_the_page_reads_in_english(app, official, monkeypatch):
    world = outbreak(app)
    monkeypatch.setattr(cases_web, "PAGE_SIZE", 1)
    case_id = open_case_by_form(
        official, declaration_id=str(world.a.declaration_id), test_date=_today_vn().isoformat()
    )
    first = official.get(f"/admin/cases/{case_id}").get_data(as_text=True)
    second = official.get(f"/admin/cases/{case_id}?f1_page=2").get_data(as_text=True)
    f1_first = first.split('id="f1-list"')[1].split("</section>")[0]
    f1_second = second.split('id="f1-list"')[1].split("</section>")[0]
    # Closest first: Bích shared 60 minutes, Cường 50.
    assert "Trần Thị Bích" in f1_first and "Võ Văn Cường" not in f1_first and "Trang sau" in f1_first
    assert "Võ Văn Cường" in f1_second and "Trần Thị Bích" not in f1_second and "Trang trước" in f1_second
    assert official.get(f"/admin/cases/{case_id}?f1_page=0").status_code == 400
    english = official.get(f"/admin/cases/{case_id}?lang=en").get_data(as_text=True)
    assert "F1: close contacts of the F0" in english and "Look-back window" in english


def test_a_failed_f2_job_says_so(app, official):
    world = outbreak(app)
    case_id = open_case_by_form(
        official, declaration_id=str(world.a.declaration_id), test_date=_today_vn().isoformat()
    )
    wait_f2_done(official, case_id)
    with engine_of(app).begin() as conn:
        conn.execute(update(cases_table).where(cases_table.c.id == case_id).values(f2_state="failed"))
    body = official.get(f"/admin/cases/{case_id}/progress").get_json()
    assert body["state"] == "failed" and body["text"].startswith("Tìm F2 bị lỗi")
    assert "Tìm F2 bị lỗi" in official.get(f"/admin/cases/{case_id}").get_data(as_text=True)
    assert official.get("/admin/cases/987654/progress").status_code == 404
