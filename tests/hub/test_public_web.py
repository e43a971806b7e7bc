"""Citizen pages: the NCOVI and VHD forms, the result and pass pages, QR downloads, finding a pass, limits."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime, timedelta
from typing import Any

import cv2
import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from hub import declarations as decl
from hub.config import HubConfig
from hub.db.schema import declarations, passes
from hub.web import create_app
from hub.web.public import flat_values, unflatten
from kiosk.scanner.decode import make_decoder
from protocol.healthpass import Colour, verify_pass
from tests.hub.test_declarations import declarant_data, member_data, vhd_data

PASS_LINK = re.compile(r'href="/the/([0-9A-Z]{10})"')


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


def _today() -> date:
    return decl.today_in_vietnam()


def _token(client: FlaskClient, url: str = "/khai-bao") -> str:
    page = client.get(url).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested answers as the form's field names (lists of scalars stay lists: checkboxes)."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
    elif isinstance(data, list) and data and isinstance(data[0], dict):
        for index, value in enumerate(data):
            out.update(_flatten(value, f"{prefix}{index}."))
    elif isinstance(data, list):
        if data:
            out[prefix[:-1]] = [str(v) for v in data]
    elif data is not None:
        out[prefix[:-1]] = str(data)
    return out


def ncovi_form(members: int = 0, **declarant: Any) -> dict[str, Any]:
    """The NCOVI form as a browser posts it."""
    data = {"declarant": declarant_data(**declarant), "members": [member_data(i) for i in range(members)]}
    data["declarant"]["vaccination"]["last_dose_date"] = (_today() - timedelta(days=20)).isoformat()
    form = _flatten(data)
    form["member_count"] = str(members)
    form["action"] = "submit"
    return form


def vhd_form(**overrides: Any) -> dict[str, Any]:
    return _flatten(vhd_data(today=_today(), **overrides))


def _post(client: FlaskClient, url: str, form: dict[str, Any], token: str | None = None):
    return client.post(url, data={**form, "csrf_token": token or _token(client, url)})


def _count(app: Flask, table) -> int:
    with app.extensions["antoan"].engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _errors(html: str) -> dict[str, str]:
    """Field id -> the error message shown under it."""
    return dict(re.findall(r'<p class="error" id="(f-[^"]+)-err">([^<]*)</p>', html))


def _submit_and_follow(client: FlaskClient, url: str, form: dict[str, Any]) -> str:
    response = _post(client, url, form)
    assert response.status_code == 303, _errors(response.get_data(as_text=True))
    assert response.headers["Location"].endswith("/ket-qua")
    result = client.get("/ket-qua")
    assert result.status_code == 200
    return result.get_data(as_text=True)


# ------------------------------------------------------------------------------------------ pages


@pytest.mark.parametrize(
    ("url", "vietnamese", "english"),
    [
        ("/", "Khai báo y tế và thẻ sức khỏe", "Health declaration and health pass"),
        ("/khai-bao", "Thêm người thân", "Add a family member"),
        ("/nhap-canh", "Cửa khẩu nhập cảnh", "Border gate of entry"),
        ("/tim-the", "Tìm lại thẻ", "Find my pass"),
    ],
)
def test_public_pages_are_vietnamese_first_and_english_when_switched(client, url, vietnamese, english):
    page = client.get(url)
    assert page.status_code == 200
    assert vietnamese in page.get_data(as_text=True)
    assert '<html lang="vi">' in page.get_data(as_text=True)
    client.get("/lang/en")
    english_page = client.get(url).get_data(as_text=True)
    assert english in english_page and vietnamese not in english_page


def test_every_public_endpoint_is_marked_public(app):
    for endpoint in (
        "index",
        "ncovi",
        "vhd",
        "result",
        "pass_page",
        "pass_print",
        "pass_png",
        "pass_svg",
        "find_pass",
    ):
        view = app.view_functions[f"public.{endpoint}"]
        assert getattr(view, "auth_kind", None) == "public", endpoint


def test_the_form_is_plain_html_with_a_csrf_token_and_no_inline_script(client):
    page = client.get("/khai-bao").get_data(as_text=True)
    assert 'name="csrf_token"' in page
    assert "<script" not in page and "style=" not in page
    assert 'name="declarant.address.province"' in page and "Hồ Chí Minh" in page


# ------------------------------------------------------------------------------------------ NCOVI


def test_a_valid_ncovi_declaration_shows_its_pass(app, client):
    html = _submit_and_follow(client, "/khai-bao", ncovi_form())
    assert _count(app, declarations) == 1 and _count(app, passes) == 1
    assert len(set(PASS_LINK.findall(html))) == 1
    assert "Xanh" in html and "NTAD" in html
    assert "Nguyễn" not in html and "001190012345" not in html


def test_vietnamese_diacritics_round_trip_through_the_form(app, client):
    nfd = unicodedata.normalize("NFD", "Nguyễn Thị Ánh Đào")
    _submit_and_follow(client, "/khai-bao", ncovi_form(full_name=nfd))
    with app.extensions["antoan"].engine.connect() as conn:
        row = conn.execute(select(declarations.c.full_name, declarations.c.district)).one()
    assert row.full_name == "Nguyễn Thị Ánh Đào" == unicodedata.normalize("NFC", nfd)
    assert row.district == "Quận Ba Đình"


def test_declarant_with_two_family_members_gets_three_passes(app, client):
    html = _submit_and_follow(client, "/khai-bao", ncovi_form(members=2, symptoms=["fever"]))
    assert len(set(PASS_LINK.findall(html))) == 3
    with app.extensions["antoan"].engine.connect() as conn:
        rows = conn.execute(select(declarations).order_by(declarations.c.id)).all()
    assert [r.full_name for r in rows] == ["Nguyễn Thị Ánh Đào", "Trần Minh Khôi", "Trần Ngọc Ánh"]
    assert rows[0].declared_by is None
    assert [r.declared_by for r in rows[1:]] == [rows[0].id, rows[0].id]
    assert [r.colour for r in rows] == ["yellow", "green", "green"]
    assert _count(app, passes) == 3
    assert "Triệu chứng trong 14 ngày: sốt" in html  # the reason, on the declarant's own result page
    assert "Con" in html  # the members' relationship


def test_add_member_re_renders_the_form_keeps_answers_and_saves_nothing(app, client):
    form = ncovi_form(members=1)
    form["action"] = "add_member"
    response = _post(client, "/khai-bao", form)
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'name="member_count" value="2"' in html
    assert 'name="members.1.full_name"' in html
    assert 'value="Trần Minh Khôi"' in html and 'value="Nguyễn Thị Ánh Đào"' in html
    assert _errors(html) == {}
    assert _count(app, declarations) == 0


def test_remove_member_renumbers_the_remaining_members(app, client):
    form = ncovi_form(members=2)
    form["action"] = "remove_member_0"
    html = _post(client, "/khai-bao", form).get_data(as_text=True)
    assert 'name="member_count" value="1"' in html
    assert 'name="members.0.full_name" value="Trần Ngọc Ánh"' in html
    assert 'name="members.1.full_name"' not in html
    assert _count(app, declarations) == 0


NCOVI_FIELD_ERRORS = [
    ("declarant.full_name", "", "Vui lòng điền thông tin này."),
    ("declarant.full_name", "Nguyễn 3", "Họ tên chỉ được gồm chữ cái"),
    ("declarant.birth_date", "31/02/1990", "Nhập ngày theo dạng ngày/tháng/năm"),
    ("declarant.birth_date", "2999-01-01", "Ngày không được ở tương lai."),
    ("declarant.gender", "", "Vui lòng điền thông tin này."),
    ("declarant.phone", "12345", "Nhập số di động Việt Nam"),
    ("declarant.id_number", "00119001234", "Số CCCD gồm 12 chữ số."),
    ("declarant.id_number", "001090012345", "Số CCCD không khớp với giới tính"),
    ("declarant.nationality", "XX", "Vui lòng chọn một quốc gia."),
    ("declarant.address.province", "", "Vui lòng điền thông tin này."),
    ("declarant.address.district", "", "Vui lòng điền thông tin này."),
    ("declarant.address.street", "x" * 301, "Quá dài: tối đa 300 ký tự."),
    ("declarant.symptoms", ["headache"], "Vui lòng chọn một trong các lựa chọn."),
    ("declarant.vaccination.last_dose_date", "", "Nhập ngày tiêm mũi gần nhất."),
    ("declarant.vaccination.vaccine", "", "Chọn loại vắc-xin của mũi gần nhất."),
    ("declarant.tests.0.date", "2020-01-01", "Chỉ khai xét nghiệm trong 14 ngày qua"),
    ("members.0.relationship", "", "Vui lòng điền thông tin này."),
    ("members.0.birth_year", "", "Nhập ngày sinh, hoặc ít nhất là năm sinh."),  # shown at birth_date
    ("members.0.id_number", "001190012345", "Số giấy tờ này đã được dùng cho một người khác"),
]


@pytest.mark.parametrize(("field", "value", "message"), NCOVI_FIELD_ERRORS)
def test_each_invalid_ncovi_field_shows_its_message_and_saves_nothing(app, client, field, value, message):
    form = ncovi_form(members=1)
    form[field] = value
    if field.startswith("declarant.tests.0."):
        form.update({"declarant.tests.0.type": "pcr", "declarant.tests.0.result": "negative"})
    response = _post(client, "/khai-bao", form)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    errors = _errors(html)
    shown_at = "members.0.birth_date" if field == "members.0.birth_year" else field
    field_html_id = "f-" + shown_at.replace(".", "-")
    assert field_html_id in errors, errors
    assert message in errors[field_html_id]
    assert "Vui lòng sửa các ô được đánh dấu" in html  # the summary at the top
    assert _count(app, declarations) == 0 and _count(app, passes) == 0


def test_messages_are_english_after_switching(client):
    client.get("/lang/en")
    form = ncovi_form()
    form["declarant.phone"] = "12345"
    errors = _errors(_post(client, "/khai-bao", form).get_data(as_text=True))
    assert errors == {
        "f-declarant-phone": "Enter a Vietnamese mobile number such as 0912345678 or +84912345678."
    }


@pytest.mark.parametrize(
    "value",
    ["A" * 100_000, "Nguyễn\x00Văn", "\x1b[31mred", "\ufeffAn", b"An\x80\x9f".decode("latin-1")],
)
def test_very_long_and_binary_input_is_refused_cleanly(app, client, value):
    form = ncovi_form()
    form["declarant.full_name"] = value
    form["declarant.address.street"] = value
    response = _post(client, "/khai-bao", form)
    assert response.status_code == 400
    assert set(_errors(response.get_data(as_text=True))) >= {
        "f-declarant-full_name",
        "f-declarant-address-street",
    }
    assert _count(app, declarations) == 0


def test_undecodable_bytes_in_the_body_are_refused_cleanly(app, client):
    token = _token(client)
    body = "&".join(
        f"{k}={v}" for k, v in ncovi_form().items() if isinstance(v, str) and k != "declarant.full_name"
    )
    raw = body.encode() + b"&declarant.full_name=Ng%FF%FEn&csrf_token=" + token.encode()
    response = client.post("/khai-bao", data=raw, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert "f-declarant-full_name" in _errors(response.get_data(as_text=True))
    assert _count(app, declarations) == 0


def test_a_body_over_the_size_limit_is_413(client):
    response = _post(client, "/khai-bao", {**ncovi_form(), "declarant.address.street": "x" * 300_000})
    assert response.status_code == 413


_FIELDS = sorted(
    {k for k in ncovi_form(members=1) if k not in ("member_count", "action")} | {"members.7.x", "a..b"}
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.sampled_from(_FIELDS),
    text=st.text(max_size=300) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    count=st.sampled_from(["1", "0", "-3", "99", "x"]),
)
def test_random_text_in_any_field_never_causes_a_server_error(app, client, field, text, count):
    form = ncovi_form(members=1)
    form[field] = text
    form["member_count"] = count
    response = _post(client, "/khai-bao", form)
    assert response.status_code in (303, 400), response.status_code


# ------------------------------------------------------------------------------------------ VHD


def test_a_valid_vhd_declaration_shows_its_pass(app, client):
    html = _submit_and_follow(client, "/nhap-canh", vhd_form())
    (pass_id,) = set(PASS_LINK.findall(html))
    with app.extensions["antoan"].engine.connect() as conn:
        row = conn.execute(select(declarations)).one()
    assert row.kind == "vhd" and row.id_number == "C1234567"
    assert "Nguyễn Văn An" not in html and "C1234567" not in html
    assert client.get(f"/the/{pass_id}").status_code == 200


VHD_FIELD_ERRORS = [
    ("passport_number", "AB1", "Số hộ chiếu gồm từ 6 đến 20 chữ cái và chữ số."),
    ("nationality", "", "Vui lòng điền thông tin này."),
    ("transport.number", "", "Vui lòng điền thông tin này."),
    ("transport.seat", "1-2", "Nhập số ghế"),
    ("border_gate", "narnia", "Vui lòng chọn một trong các lựa chọn."),
    ("arrival_date", "2001-01-01", "Ngày nhập cảnh phải trong vòng 14 ngày qua hoặc 3 ngày tới."),
    ("countries_visited", [], "Vui lòng điền thông tin này."),
    ("quarantine_address.commune", "", "Vui lòng điền thông tin này."),
    ("tests.0.result", "", "Vui lòng điền thông tin này."),
]


@pytest.mark.parametrize(("field", "value", "message"), VHD_FIELD_ERRORS)
def test_each_invalid_vhd_field_shows_its_message_and_saves_nothing(app, client, field, value, message):
    form = vhd_form()
    form[field] = value
    response = _post(client, "/nhap-canh", form)
    assert response.status_code == 400
    errors = _errors(response.get_data(as_text=True))
    field_html_id = "f-" + field.replace(".", "-")
    assert message in errors.get(field_html_id, ""), errors
    assert _count(app, declarations) == 0


def test_a_filled_second_test_row_moves_up_when_the_first_is_blank(app, client):
    form = vhd_form()
    test = {k.replace("tests.0.", "tests.1."): v for k, v in form.items() if k.startswith("tests.0.")}
    form = {k: v for k, v in form.items() if not k.startswith("tests.0.")} | test
    _submit_and_follow(client, "/nhap-canh", form)
    with app.extensions["antoan"].engine.connect() as conn:
        answers = conn.execute(select(declarations.c.answers)).scalar_one()
    assert [t["result"] for t in answers["tests"]] == ["negative"]


# ------------------------------------------------------------------------------------------ passes


def _one_pass(client: FlaskClient, **declarant: Any) -> str:
    html = _submit_and_follow(client, "/khai-bao", ncovi_form(**declarant))
    (pass_id,) = set(PASS_LINK.findall(html))
    return pass_id


def test_the_pass_page_shows_colour_initials_validity_and_id_but_no_name(client):
    pass_id = _one_pass(client, exposures=["case_contact"])
    response = client.get(f"/the/{pass_id}")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "colour-yellow" in html and "Vàng" in html
    assert "NTAD" in html
    assert f"{pass_id[:5]}-{pass_id[5:]}" in html
    assert "Có hiệu lực đến" in html
    assert f'src="/the/{pass_id}/qr.png"' in html
    for private in ("Nguyễn", "Ánh", "001190012345", "0912345678", "Phúc Xá", "Tiếp xúc"):
        assert private not in html
    assert response.headers["Cache-Control"] == "no-store"
    assert "noindex" in response.headers["X-Robots-Tag"]


def test_the_pass_page_accepts_the_display_form_of_the_id(client):
    pass_id = _one_pass(client)
    response = client.get(f"/the/{pass_id[:5].lower()}-{pass_id[5:].lower()}")
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/the/{pass_id}")


@pytest.mark.parametrize("pass_id", ["0000000000", "not-a-pass", "A" * 300])
def test_an_unknown_pass_is_404(client, pass_id):
    for suffix in ("", "/in", "/qr.png", "/qr.svg"):
        assert client.get(f"/the/{pass_id}{suffix}").status_code == 404


def test_the_print_page_uses_print_css_and_no_inline_script(client):
    pass_id = _one_pass(client)
    html = client.get(f"/the/{pass_id}/in").get_data(as_text=True)
    assert "public.css" in html and "public_print.js" in html
    assert "<script>" not in html
    css = client.get("/static/public.css").get_data(as_text=True)
    assert "@media print" in css


def test_png_and_svg_downloads(client):
    pass_id = _one_pass(client)
    png = client.get(f"/the/{pass_id}/qr.png")
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert png.data.startswith(b"\x89PNG\r\n\x1a\n")
    assert "attachment" in png.headers["Content-Disposition"]
    svg = client.get(f"/the/{pass_id}/qr.svg")
    assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"
    assert b"<svg" in svg.data
    assert svg.headers["Cache-Control"] == "no-store"


def test_the_pass_png_decodes_with_the_kiosk_decoder_and_verifies(app, client):
    pass_id = _one_pass(client, symptoms=["cough"])
    png = client.get(f"/the/{pass_id}/qr.png").data
    gray = cv2.imdecode(np.frombuffer(png, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    (decoded,) = make_decoder("layered").decode(gray)
    now = datetime.now(UTC)
    trust = app.extensions["antoan"].keyring.trust_list(now)
    verdict = verify_pass(decoded.raw, trust=trust, now=now)
    assert verdict.claims.pass_id == pass_id
    assert verdict.colour is Colour.YELLOW
    assert verdict.claims.initials == "NTAD" and verdict.claims.birth_year == 1990
    assert verdict.claims.kind == "ncovi"


def test_an_expired_pass_page_shows_no_qr_and_its_images_are_gone(app, client):
    web = app.extensions["antoan"]
    long_ago = datetime.now(UTC) - timedelta(days=web.config.passes.validity_days + 1)
    model = decl.validate_ncovi(
        {"declarant": declarant_data(vaccination={"doses": 0})}, today=decl.today_in_vietnam(long_ago)
    )
    with web.engine.begin() as conn:
        (saved,) = decl.save_ncovi(conn, model, keyring=web.keyring, settings=web.config.passes, now=long_ago)
    pass_id = saved.pass_.pass_id
    response = client.get(f"/the/{pass_id}")
    assert response.status_code == 410
    html = response.get_data(as_text=True)
    assert "đã hết hạn" in html and "qr.png" not in html
    assert client.get(f"/the/{pass_id}/qr.png").status_code == 404
    assert client.get(f"/the/{pass_id}/qr.svg").status_code == 404


def test_the_result_page_without_a_declaration_goes_to_the_start(client):
    response = client.get("/ket-qua")
    assert response.status_code == 302 and response.headers["Location"].endswith("/")


# ------------------------------------------------------------------------------------------ find my pass


def test_find_pass_with_the_right_birth_date_opens_the_pass(client):
    pass_id = _one_pass(client)
    token = _token(client, "/tim-the")
    display = f"{pass_id[:5]}-{pass_id[5:]}".lower()
    for birth in ("15/03/1990", "1990-03-15"):
        response = client.post(
            "/tim-the", data={"csrf_token": token, "pass_id": display, "birth_date": birth}
        )
        assert response.status_code == 303
        assert response.headers["Location"].endswith(f"/the/{pass_id}")


def test_find_pass_with_a_wrong_birth_date_or_unknown_id_says_the_same(client):
    pass_id = _one_pass(client)
    token = _token(client, "/tim-the")
    wrong_date = client.post(
        "/tim-the", data={"csrf_token": token, "pass_id": pass_id, "birth_date": "16/03/1990"}
    )
    unknown = client.post(
        "/tim-the", data={"csrf_token": token, "pass_id": "0000000000", "birth_date": "15/03/1990"}
    )
    assert wrong_date.status_code == unknown.status_code == 404
    message = "Không có thẻ nào khớp với mã thẻ và ngày sinh này."
    assert message in wrong_date.get_data(as_text=True) and message in unknown.get_data(as_text=True)
    assert pass_id not in wrong_date.headers.get("Location", "")


def test_find_pass_for_a_member_declared_with_only_a_birth_year(client):
    html = _submit_and_follow(client, "/khai-bao", ncovi_form(members=1))
    token = _token(client, "/tim-the")
    found = []
    for pass_id in dict.fromkeys(PASS_LINK.findall(html)):
        response = client.post(
            "/tim-the", data={"csrf_token": token, "pass_id": pass_id, "birth_date": "2015"}
        )
        found.append(response.status_code)
    assert found == [404, 303]  # the declarant gave a full date; the child only a year


@pytest.mark.parametrize(
    ("pass_id", "birth", "field", "message"),
    [
        ("", "15/03/1990", "f-pass_id", "Nhập mã thẻ in dưới mã QR."),
        ("ABC", "15/03/1990", "f-pass_id", "Mã thẻ gồm 10 chữ cái và chữ số"),
        ("ABCDE-FGHJK", "", "f-birth_date", "Nhập ngày sinh của người được cấp thẻ."),
        ("ABCDE-FGHJK", "15/13/1990", "f-birth_date", "Nhập ngày theo dạng"),
        ("ABCDE\x00FGHJK", "\x00", "f-pass_id", "Mã thẻ gồm 10 chữ cái và chữ số"),
    ],
)
def test_find_pass_field_errors(client, pass_id, birth, field, message):
    token = _token(client, "/tim-the")
    response = client.post("/tim-the", data={"csrf_token": token, "pass_id": pass_id, "birth_date": birth})
    assert response.status_code == 400
    assert message in _errors(response.get_data(as_text=True)).get(field, "")


# ------------------------------------------------------------------------------------------ protection


def test_a_post_without_the_csrf_token_is_400_and_saves_nothing(app, client):
    for url, form in (
        ("/khai-bao", ncovi_form()),
        ("/nhap-canh", vhd_form()),
        ("/tim-the", {"pass_id": "x"}),
    ):
        client.get(url)
        assert client.post(url, data=form).status_code == 400
    assert _count(app, declarations) == 0


def test_public_posts_are_rate_limited(db_url):
    app = create_app(_config(db_url, rate="3 per minute"))
    try:
        client = app.test_client()
        token = _token(client, "/tim-the")
        form = {"csrf_token": token, "pass_id": "0000000000", "birth_date": "01/01/1990"}
        codes = [client.post("/tim-the", data=form).status_code for _ in range(4)]
        assert codes == [404, 404, 404, 429]
        assert client.get("/tim-the").status_code == 200  # only POSTs are limited
        # Each form has its own limit: the NCOVI form still answers (400: an empty form).
        assert client.post("/khai-bao", data={"csrf_token": token}).status_code == 400
    finally:
        app.extensions["antoan"].engine.dispose()


# ------------------------------------------------------------------------------------------ form plumbing


def test_unflatten_builds_nested_answers_and_keeps_list_fields():
    from werkzeug.datastructures import MultiDict

    form = MultiDict(
        [
            ("declarant.full_name", "An"),
            ("declarant.symptoms", "fever"),
            ("declarant.symptoms", "cough"),
            ("members.1.full_name", "Bình"),
            ("members.0.full_name", "Chi"),
            ("declarant.address.street", "  "),
            ("csrf_token", "t"),
        ]
    )
    data = unflatten(flat_values(form))
    assert data == {
        "declarant": {"full_name": "An", "symptoms": ["fever", "cough"]},
        "members": [{"full_name": "Chi"}, {"full_name": "Bình"}],
    }
    gap = unflatten({"members.2.full_name": ["Dũng"]})
    assert gap == {"members": [{}, {}, {"full_name": "Dũng"}]}
