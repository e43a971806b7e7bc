"""The citizen exposure status page (/tinh-trang): pass id + birth date, where and when, never whom."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from hub.cases import decide
from hub.config import HubConfig
from hub.db.schema import cases
from hub.passes import display_pass_id
from hub.web import create_app
from tests.hub.test_notify import MARKET_NAME, NOW, RESTAURANT_NAME, Town, build_town


def _config(db_url: str, rate: str = "10000 per minute") -> HubConfig:
    return HubConfig.model_validate({"database": {"url": db_url}, "web": {"public_form_rate": rate}})


@pytest.fixture
def app(db_url):
    app = create_app(_config(db_url))
    yield app
    app.extensions["antoan"].engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def town(app: Flask) -> Town:
    town = build_town(app.extensions["antoan"].engine)
    town.open_case()
    return town


def _token(client: FlaskClient) -> str:
    page = client.get("/tinh-trang").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _ask(client: FlaskClient, pass_id: str, birth: str, *, lang: str | None = None):
    url = "/tinh-trang" + (f"?lang={lang}" if lang else "")
    return client.post(url, data={"csrf_token": _token(client), "pass_id": pass_id, "birth_date": birth})


def _status(client: FlaskClient, town: Town, who: str, *, lang: str | None = None) -> str:
    person = town.people[who]
    birth = person.birth if len(person.birth) == 4 else "/".join(reversed(person.birth.split("-")))
    response = _ask(client, display_pass_id(person.pass_id), birth, lang=lang)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    return response.get_data(as_text=True)


def _assert_names_nobody(html: str, town: Town) -> None:
    for who, person in town.people.items():
        for secret in person.secrets():
            if len(secret) > 4:  # a birth year alone is too common a number to test
                assert secret not in html, f"{who}'s {secret!r} is on the page"


def test_the_start_page_links_the_status_page(client):
    html = client.get("/").get_data(as_text=True)
    assert 'href="/tinh-trang"' in html and "Tra cứu tình trạng tiếp xúc" in html
    form = client.get("/tinh-trang").get_data(as_text=True)
    assert 'name="pass_id"' in form and 'name="birth_date"' in form and "Mã thẻ" in form


def test_an_f1_sees_where_and_when_and_what_to_do(client, town):
    html = _status(client, town, "binh")
    assert "F1: tiếp xúc gần với ca bệnh đã được xác nhận" in html
    assert (
        f"Bạn đã có mặt tại {MARKET_NAME} trong khoảng từ 08:30 20/11/2026 đến 09:30 20/11/2026, "
        "cùng lúc với một ca bệnh đã được xác nhận." in html
    )
    assert "tự cách ly" in html and "trạm y tế xã/phường" in html
    assert "F2" not in html and RESTAURANT_NAME not in html
    _assert_names_nobody(html, town)


def test_the_same_page_in_english(client, town):
    html = _status(client, town, "dung", lang="en")
    assert "F1: close contact of a confirmed case" in html
    assert (
        f"You were at {MARKET_NAME} between 08:20 20/11/2026 and 09:20 20/11/2026, "
        "at the same time as a confirmed case." in html
    )
    assert "call your local health station now" in html


def test_an_f2_and_a_child_declared_with_a_birth_year(client, town):
    town.run_f2()
    html = _status(client, town, "em")
    assert "F2: tiếp xúc với người tiếp xúc gần của ca bệnh đã được xác nhận" in html
    assert (
        f"Bạn đã có mặt tại {RESTAURANT_NAME} trong khoảng từ 14:10 20/11/2026 đến 15:10 20/11/2026" in html
    )
    assert "theo dõi sức khỏe trong 14 ngày" in html and "F1:" not in html
    _assert_names_nobody(html, town)
    child = _status(client, town, "child")  # asked with the birth year, as declared
    assert "F1: tiếp xúc gần" in child and f"tại {MARKET_NAME} trong khoảng từ 08:40 20/11/2026" in child


def test_no_exposure_recorded_for_others_dismissed_contacts_and_closed_cases(client, town, app):
    engine = app.extensions["antoan"].engine
    for who in ("giang", "f0"):
        html = _status(client, town, who)
        assert "Chưa ghi nhận tiếp xúc" in html and "F1" not in html and MARKET_NAME not in html
    decide(
        engine,
        town.case_id,
        town.person_id("dung"),
        "dismissed",
        actor="bs.lan",
        role="health_official",
        now=NOW,
    )
    assert "Chưa ghi nhận tiếp xúc" in _status(client, town, "dung")
    assert "F1: tiếp xúc gần" in _status(client, town, "binh")
    with engine.begin() as conn:
        conn.execute(update(cases).where(cases.c.id == town.case_id).values(status="closed"))
    assert "Chưa ghi nhận tiếp xúc" in _status(client, town, "binh")


def test_a_declaration_made_after_the_case_still_finds_the_person(client, town):
    # A new declaration (a new pass) is not linked to its person yet: the ID number still finds them.
    town.declare("binh_again", "Lê Thị Bình", "001190000002", "0912000002", "1990-02-02")
    assert town.people["binh_again"].pass_id != town.people["binh"].pass_id
    assert "F1: tiếp xúc gần" in _status(client, town, "binh_again")


def test_unknown_pass_and_wrong_birth_date_get_the_same_answer(client, town):
    binh = display_pass_id(town.people["binh"].pass_id)
    wrong_birth = _ask(client, binh, "03/02/1990")
    unknown = _ask(client, "0000000000", "02/02/1990")
    assert wrong_birth.status_code == unknown.status_code == 404
    message = "Không tìm thấy, hoặc ngày sinh không khớp với mã thẻ này."
    pages = []
    for response, typed in ((wrong_birth, binh), (unknown, "0000000000")):
        html = response.get_data(as_text=True)
        assert message in html and MARKET_NAME not in html
        html = re.sub(r'name="csrf_token" value="[^"]+"', "", html).replace(f'value="{typed}"', "")
        pages.append(html.replace('value="03/02/1990"', "").replace('value="02/02/1990"', ""))
    assert pages[0] == pages[1]


@pytest.mark.parametrize(
    ("pass_id", "birth", "field", "message"),
    [
        ("", "02/02/1990", "pass_id", "Nhập mã thẻ"),
        ("ABC", "02/02/1990", "pass_id", "10"),
        ("ABCDE-FGHJK", "", "birth_date", "Nhập ngày sinh"),
        ("ABCDE-FGHJK", "31/02/1990", "birth_date", "dd/mm/yyyy"),
    ],
)
def test_field_errors(client, pass_id, birth, field, message):
    response = _ask(client, pass_id, birth)
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    error = re.search(rf'<p class="error" id="f-{field}-err">([^<]*)</p>', html)
    assert error is not None and message in error.group(1)


def test_the_status_page_is_rate_limited(db_url):
    app = create_app(_config(db_url, rate="3 per minute"))
    try:
        client = app.test_client()
        token = _token(client)
        form = {"csrf_token": token, "pass_id": "0000000000", "birth_date": "02/02/1990"}
        assert [client.post("/tinh-trang", data=form).status_code for _ in range(4)] == [404, 404, 404, 429]
        assert client.get("/tinh-trang").status_code == 200  # only answers are limited
    finally:
        app.extensions["antoan"].engine.dispose()
