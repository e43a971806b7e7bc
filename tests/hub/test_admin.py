"""Staff administration pages: users, API tokens, declaration search and detail (audited), the audit log."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert, select, update

from hub import accounts, audit
from hub.accounts import Role
from hub.db.schema import api_tokens, audit_log, declarations
from hub.passes import issue_pass, set_status
from hub.web import create_app
from hub.web.admin import NAME_CANDIDATES, PAGE_SIZE, fold, name_like_pattern
from tests.hub.staff_helpers import PASSWORD, bearer, engine_of, hub_config, login, make_user, post

NOW = datetime(2021, 8, 20, 9, 0, tzinfo=UTC)


@pytest.fixture
def app(db_url):
    app = create_app(hub_config(db_url, login_rate="1000 per minute"))
    yield app
    engine_of(app).dispose()


@pytest.fixture
def admin(app: Flask) -> FlaskClient:
    make_user(app, "quantri", Role.ADMIN, display_name="Lê Quản Trị")
    client = app.test_client()
    assert login(client, "quantri").status_code == 302
    return client


def _user(app: Flask, username: str) -> accounts.User | None:
    with engine_of(app).connect() as conn:
        return accounts.get_user_by_name(conn, username)


def _audit(app: Flask, action: str | None = None):
    query = select(audit_log).order_by(audit_log.c.id)
    if action:
        query = query.where(audit_log.c.action == action)
    with engine_of(app).connect() as conn:
        return conn.execute(query).all()


# ------------------------------------------------------------------------------------------------- users


def test_an_admin_creates_a_user_who_can_then_log_in(app, admin):
    new = "mật-khẩu-ban-đầu-1"
    response = post(
        admin,
        "/admin/users",
        {
            "username": "bich.tran",
            "display_name": "Trần Thị Bích",
            "role": "health_official",
            "password": new,
            "password_confirm": new,
        },
    )
    assert response.status_code == 302
    created = _user(app, "bich.tran")
    assert created.role is Role.HEALTH_OFFICIAL and created.display_name == "Trần Thị Bích"
    assert "Trần Thị Bích" in admin.get("/admin/users").get_data(as_text=True)
    other = app.test_client()
    assert login(other, "bich.tran", new).status_code == 302
    assert other.get("/admin/declarations").status_code == 200
    assert other.get("/admin/users").status_code == 403
    (entry,) = _audit(app, "user_create")
    assert entry.actor == "user:quantri" and entry.detail == {
        "username": "bich.tran",
        "role": "health_official",
    }


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("username", "", "Hãy nhập tên đăng nhập."),
        ("username", "a b", "Từ 3 đến 64 ký tự"),
        ("username", "x" * 65, "Từ 3 đến 64 ký tự"),
        ("role", "superuser", "Hãy chọn một vai trò."),
        ("password", "ngắn", "Mật khẩu phải có từ 10 đến 256 ký tự."),
        ("password_confirm", "khác-hẳn-mật-khẩu", "Hai mật khẩu không giống nhau."),
        ("display_name", "T" * 201, "Tối đa 200 ký tự."),
    ],
)
def test_user_form_shows_each_error_next_to_its_field(app, admin, field, value, message):
    data = {
        "username": "nguoi.moi",
        "display_name": "Người Mới",
        "role": "venue_manager",
        "password": PASSWORD,
        "password_confirm": PASSWORD,
    }
    data[field] = value
    if field == "password":
        data["password_confirm"] = value
    response = post(admin, "/admin/users", data)
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    errors = re.search(rf'<ul class="errors" id="{field}-errors">(.*?)</ul>', html, re.S)
    assert errors and message in errors.group(1)
    assert _user(app, "nguoi.moi") is None


def test_a_taken_username_is_a_field_error(app, admin):
    data = {"username": "QuanTri", "role": "admin", "password": PASSWORD, "password_confirm": PASSWORD}
    response = post(admin, "/admin/users", data)
    assert response.status_code == 400
    assert "Tên đăng nhập này đã có người dùng." in response.get_data(as_text=True)


def test_role_change_deactivate_reactivate_and_password_reset(app, admin):
    user = make_user(app, "venue.1", Role.VENUE_MANAGER)
    their = app.test_client()
    login(their, "venue.1")
    assert post(admin, f"/admin/users/{user.id}/role", {"role": "district_it"}).status_code == 302
    assert _user(app, "venue.1").role is Role.DISTRICT_IT
    assert their.get("/admin/").status_code == 302  # the role change ended their session

    login(their, "venue.1")
    assert post(admin, f"/admin/users/{user.id}/active", {"active": "0"}).status_code == 302
    assert not _user(app, "venue.1").active
    assert their.get("/admin/").status_code == 302
    assert login(app.test_client(), "venue.1").status_code == 400
    assert "Đã vô hiệu hóa" in admin.get("/admin/users").get_data(as_text=True)

    assert post(admin, f"/admin/users/{user.id}/active", {"active": "1"}).status_code == 302
    new = "đặt-lại-mật-khẩu-9"
    response = post(admin, f"/admin/users/{user.id}/password", {"password": new, "password_confirm": new})
    assert response.status_code == 302
    assert login(app.test_client(), "venue.1", PASSWORD).status_code == 400
    assert login(app.test_client(), "venue.1", new).status_code == 302
    actions = [e.action for e in _audit(app) if e.actor == "user:quantri"]
    assert actions[-4:] == ["user_role", "user_deactivate", "user_activate", "user_password_reset"]


def test_unknown_user_is_404(admin):
    assert admin.get("/admin/users/424242").status_code == 404
    assert post(admin, "/admin/users/424242/active", {"active": "0"}).status_code == 404


def test_the_last_active_admin_can_be_neither_demoted_nor_deactivated(app, admin):
    me = _user(app, "quantri")
    response = post(admin, f"/admin/users/{me.id}/role", {"role": "health_official"})
    assert response.status_code == 409
    assert "quản trị viên cuối cùng" in response.get_data(as_text=True)
    response = post(admin, f"/admin/users/{me.id}/active", {"active": "0"})
    assert response.status_code == 409
    assert _user(app, "quantri").role is Role.ADMIN and _user(app, "quantri").active
    assert admin.get("/admin/users").status_code == 200  # still logged in, still admin

    # A deactivated admin does not count: still the last active one.
    other = make_user(app, "quantri.2", Role.ADMIN)
    with engine_of(app).begin() as conn:
        accounts.set_active(conn, other.id, False)
    assert post(admin, f"/admin/users/{me.id}/role", {"role": "health_official"}).status_code == 409

    # With a second active admin, stepping down is allowed (and this session keeps working, as an official).
    with engine_of(app).begin() as conn:
        accounts.set_active(conn, other.id, True)
    response = post(admin, f"/admin/users/{me.id}/role", {"role": "health_official"})
    assert response.status_code == 302
    assert _user(app, "quantri").role is Role.HEALTH_OFFICIAL
    assert admin.get("/admin/declarations").status_code == 200
    assert admin.get("/admin/users").status_code == 403


def test_an_admin_may_deactivate_another_admin_but_not_the_last(app, admin):
    other = make_user(app, "quantri.2", Role.ADMIN)
    assert post(admin, f"/admin/users/{other.id}/active", {"active": "0"}).status_code == 302
    me = _user(app, "quantri")
    assert post(admin, f"/admin/users/{me.id}/active", {"active": "0"}).status_code == 409


# -------------------------------------------------------------------------------------------- API tokens

_TOKEN_RE = re.compile(r'<code class="token" id="new-token">(at_[^<]+)</code>')


def test_a_token_is_shown_once_works_against_the_api_and_stops_when_revoked(app, admin):
    response = post(
        admin, "/admin/tokens", {"name": "giám sát quận 3", "role": "district_it", "expires_days": ""}
    )
    assert response.status_code == 200
    token = _TOKEN_RE.search(response.get_data(as_text=True)).group(1)
    api = app.test_client()
    stats = api.get("/api/stats", headers=bearer(token))
    assert stats.status_code == 200 and stats.get_json()["events_stored"] == 0

    listing = admin.get("/admin/tokens").get_data(as_text=True)
    assert "giám sát quận 3" in listing and token not in listing
    (entry,) = _audit(app, "token_create")
    assert token not in str(entry.detail)

    token_id = int(entry.target_id)
    assert post(admin, f"/admin/tokens/{token_id}/revoke").status_code == 302
    assert api.get("/api/stats", headers=bearer(token)).status_code == 401
    assert "Đã thu hồi" in admin.get("/admin/tokens").get_data(as_text=True)
    assert post(admin, f"/admin/tokens/{token_id}/revoke").status_code == 404


def test_a_token_with_an_expiry(app, admin):
    response = post(admin, "/admin/tokens", {"name": "tạm", "role": "admin", "expires_days": "30"})
    assert response.status_code == 200
    with engine_of(app).connect() as conn:
        expires = conn.execute(select(api_tokens.c.expires_at)).scalar_one()
    expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"name": "", "role": "admin"}, "name", "Hãy đặt tên cho mã truy cập."),
        ({"name": "x", "role": "root"}, "role", "Hãy chọn một vai trò."),
        ({"name": "x", "role": "admin", "expires_days": "0"}, "expires_days", "từ 1 đến 3650"),
        ({"name": "x", "role": "admin", "expires_days": "ba mươi"}, "expires_days", "từ 1 đến 3650"),
    ],
)
def test_token_form_errors(app, admin, data, field, message):
    response = post(admin, "/admin/tokens", data)
    assert response.status_code == 400
    errors = re.search(rf'id="{field}-errors">(.*?)</ul>', response.get_data(as_text=True), re.S)
    assert errors and message in errors.group(1)
    assert not _TOKEN_RE.search(response.get_data(as_text=True))


# ------------------------------------------------------------------------------------------ declarations


def _declare(conn, full_name: str, id_number: str, **fields) -> int:
    values = {
        "kind": "ncovi",
        "submission_id": str(uuid.uuid4()),
        "id_number": id_number,
        "full_name": full_name,
        "birth_year": 1985,
        "gender": "nu",
        "phone": None,
        "nationality": "VN",
        "province": "Hà Nội",
        "answers": {"symptoms": {"fever": False, "cough": True}, "vaccinated": "1 mũi"},
        "colour": "green",
        "colour_reasons": [],
        "created_at": NOW,
        **fields,
    }
    return conn.execute(insert(declarations).values(values).returning(declarations.c.id)).scalar_one()


@pytest.fixture
def people(app: Flask) -> dict[str, int]:
    """A family submission, an older superseded declaration, and unrelated people."""
    ids = {}
    with engine_of(app).begin() as conn:
        family = str(uuid.uuid4())
        ids["an"] = _declare(
            conn,
            "Nguyễn Văn An",
            "001085012345",
            phone="+84912345678",
            submission_id=family,
            colour="yellow",
            colour_reasons=["cough"],
            created_at=NOW,
        )
        conn.execute(update(declarations).where(declarations.c.id == ids["an"]).values(declared_by=ids["an"]))
        ids["binh"] = _declare(
            conn,
            "Nguyễn Thị Bình",
            "001185054321",
            submission_id=family,
            declared_by=ids["an"],
            relationship="vợ",
            created_at=NOW,
        )
        ids["an_old"] = _declare(
            conn,
            "Nguyễn Văn An",
            "001085012345",
            phone="+84912345678",
            created_at=NOW - timedelta(days=3),
            superseded_at=NOW,
            superseded_by=ids["an"],
        )
        ids["duc"] = _declare(conn, "Đặng Đức Thắng", "079090000111", phone="+84983111222")
        ids["john"] = _declare(conn, "John Smith", "B1234567", nationality="GB", kind="vhd")
    return ids


def _search(client: FlaskClient, q: str, **extra):
    response = post(client, "/admin/declarations", {"q": q, "by": extra.pop("by", "auto"), **extra})
    assert response.status_code == 200, response.get_data(as_text=True)[-2000:]
    html = response.get_data(as_text=True)
    return [int(i) for i in re.findall(r'href="/admin/declarations/(\d+)"', html)], html


def test_name_search_is_accent_insensitive(admin, people):
    assert sorted(_search(admin, "nguyen")[0]) == sorted([people["an"], people["binh"]])
    assert _search(admin, "NGUYEN VAN an")[0] == [people["an"]]
    assert _search(admin, "Nguyễn Thị")[0] == [people["binh"]]
    assert _search(admin, "dang duc")[0] == [people["duc"]]
    assert _search(admin, "Đức thắng")[0] == [people["duc"]]
    assert _search(admin, "smith")[0] == [people["john"]]
    ids, html = _search(admin, "nguyen xuan")
    assert ids == [] and "Không tìm thấy tờ khai nào." in html


def test_search_by_id_number_and_phone(admin, people):
    assert _search(admin, "001085012345")[0] == [people["an"]]
    assert sorted(_search(admin, "0010850")[0]) == [people["an"]]
    assert _search(admin, "b1234567")[0] == [people["john"]]
    assert _search(admin, "0912 345 678")[0] == [people["an"]]
    assert _search(admin, "0983111222", by="phone")[0] == [people["duc"]]
    assert _search(admin, "+84983111222")[0] == [people["duc"]]
    assert _search(admin, "001085012345", by="phone")[0] == []


def test_superseded_declarations_only_on_request(admin, people):
    assert _search(admin, "001085012345")[0] == [people["an"]]
    ids, html = _search(admin, "001085012345", include_superseded="y")
    assert ids == [people["an"], people["an_old"]]
    assert "đã được thay thế" in html


def test_every_search_is_audited_with_its_query(app, admin, people):
    _search(admin, "nguyen")
    _search(admin, "0983111222", by="phone")
    entries = _audit(app, "declaration_search")
    assert len(entries) == 2
    assert [e.actor for e in entries] == ["user:quantri", "user:quantri"]
    assert entries[0].role == "admin"
    assert entries[0].detail["query"] == "nguyen" and entries[0].detail["by"] == "name"
    assert sorted(entries[0].detail["results"]) == sorted([people["an"], people["binh"]])
    assert entries[1].detail["query"] == "0983111222" and entries[1].detail["by"] == "phone"
    # A refused search (invalid form) reads nothing and logs nothing.
    assert post(admin, "/admin/declarations", {"q": "x"}).status_code == 400
    assert len(_audit(app, "declaration_search")) == 2


def test_search_pages_through_results(app, admin):
    with engine_of(app).begin() as conn:
        for i in range(PAGE_SIZE + 5):
            _declare(conn, f"Phạm Thị Mai {i}", f"0011900{i:05d}", created_at=NOW + timedelta(minutes=i))
    first, html = _search(admin, "pham thi mai")
    assert len(first) == PAGE_SIZE and "Trang sau" in html and "Trang trước" not in html
    second, html = _search(admin, "pham thi mai", page="2")
    assert len(second) == 5 and "Trang trước" in html and "Trang sau" not in html
    assert not set(first) & set(second)
    assert [e.detail["page"] for e in _audit(app, "declaration_search")] == [1, 2]


def test_name_search_says_when_it_reached_its_candidate_limit(app, admin, monkeypatch):
    monkeypatch.setattr("hub.web.admin.NAME_CANDIDATES", 3)
    with engine_of(app).begin() as conn:
        for i in range(4):
            _declare(conn, f"Võ Văn Tư {i}", f"0011800{i:05d}")
    ids, html = _search(admin, "vo van tu")
    assert len(ids) == 3
    assert "chỉ các tờ khai mới nhất được so sánh" in html
    assert NAME_CANDIDATES >= 1000


def test_declaration_page_shows_everything_and_is_audited(app, admin, people):
    with engine_of(app).begin() as conn:
        web = app.extensions["antoan"]
        issued = issue_pass(
            conn,
            declaration_id=people["an"],
            kind="ncovi",
            full_name="Nguyễn Văn An",
            birth_year=1985,
            colour="yellow",
            keyring=web.keyring,
            settings=web.config.passes,
            now=NOW,
        )
        set_status(conn, issued.pass_id, "red", "F1", NOW + timedelta(hours=1))
    response = admin.get(f"/admin/declarations/{people['an']}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Nguyễn Văn An" in html and "001085012345" in html and "+84912345678" in html
    assert "cough" in html and "1 mũi" in html  # answers and reasons
    assert f"/admin/declarations/{people['binh']}" in html and "vợ" in html  # family
    assert f"/admin/declarations/{people['an_old']}" in html  # history
    assert issued.display_id in html
    assert 'colour-yellow">Vàng' in html and 'colour-red">Đỏ' in html  # signed colour, colour now
    (entry,) = _audit(app, "declaration_view")
    assert entry.target_type == "declaration" and entry.target_id == str(people["an"])
    assert entry.actor == "user:quantri"


def test_a_family_member_links_back_to_the_declarant(admin, people):
    html = admin.get(f"/admin/declarations/{people['binh']}").get_data(as_text=True)
    assert "Được khai hộ bởi" in html and f"/admin/declarations/{people['an']}" in html
    old = admin.get(f"/admin/declarations/{people['an_old']}").get_data(as_text=True)
    assert "Đã được thay thế" in old and f'href="/admin/declarations/{people["an"]}"' in old


def test_unknown_declaration_is_404_and_not_audited(app, admin):
    assert admin.get("/admin/declarations/999999").status_code == 404
    assert _audit(app, "declaration_view") == []


def test_a_health_official_searches_and_an_it_officer_cannot(app, people):
    make_user(app, "yte", Role.HEALTH_OFFICIAL)
    make_user(app, "cntt", Role.DISTRICT_IT)
    official, it = app.test_client(), app.test_client()
    login(official, "yte")
    login(it, "cntt")
    assert _search(official, "nguyen van an")[0] == [people["an"]]
    assert post(it, "/admin/declarations", {"q": "nguyen"}).status_code == 403
    assert it.get(f"/admin/declarations/{people['an']}").status_code == 403
    assert [e.actor for e in _audit(app, "declaration_search")] == ["user:yte"]


def test_declarations_saved_by_the_citizen_forms_are_found_with_family_history_and_passes(app, admin):
    from hub.declarations import save_ncovi, validate_ncovi
    from tests.hub.test_declarations import TODAY, ncovi_data

    web = app.extensions["antoan"]
    now = datetime(2021, 9, 1, 3, 0, tzinfo=UTC)
    model = validate_ncovi(ncovi_data(members=1), today=TODAY)
    with engine_of(app).begin() as conn:
        first = save_ncovi(conn, model, keyring=web.keyring, settings=web.config.passes, now=now)
    with engine_of(app).begin() as conn:
        again = save_ncovi(
            conn, model, keyring=web.keyring, settings=web.config.passes, now=now + timedelta(days=1)
        )
    declarant, member = again[0].declaration_id, again[1].declaration_id

    assert _search(admin, "nguyen thi anh dao")[0] == [declarant]
    assert _search(admin, "0912345678")[0] == [declarant]
    assert _search(admin, "tran minh khoi")[0] == [member]
    html = admin.get(f"/admin/declarations/{declarant}").get_data(as_text=True)
    assert f'href="/admin/declarations/{member}"' in html  # the family member declared in the same submission
    assert (
        f'href="/admin/declarations/{first[0].declaration_id}"' in html
    )  # the superseded one, in the history
    assert again[0].pass_.display_id in html and first[0].pass_.display_id not in html
    # Stored choices and answers read in Vietnamese: gender, vaccination, the family relationship.
    assert "<dd>Nữ</dd>" in html and "<dt>Số mũi</dt>" in html and "Con" in html
    assert "<dt>form</dt>" not in html  # internal bookkeeping stays hidden
    member_html = admin.get(f"/admin/declarations/{member}").get_data(as_text=True)
    assert "Được khai hộ bởi" in member_html and f'href="/admin/declarations/{declarant}"' in member_html


def test_reasons_symptoms_and_exposures_are_labelled(app, admin):
    from hub.pass_rules import reason_label, symptom_label

    with engine_of(app).begin() as conn:
        declaration = _declare(
            conn,
            "Hoàng Thị Lan",
            "001190000777",
            colour="yellow",
            colour_reasons=["symptom:fever", "future-rule"],
            answers={"form": "ncovi", "symptoms": ["fever", "new_symptom"], "exposures": []},
        )
    html = admin.get(f"/admin/declarations/{declaration}").get_data(as_text=True)
    assert reason_label("symptom:fever") in html and "future-rule" in html
    assert symptom_label("fever") in html and "new_symptom" in html
    assert "Triệu chứng trong 14 ngày" in html


def test_fold_and_like_pattern():
    assert fold("  Nguyễn   Đức THẮNG ") == "nguyen duc thang"
    assert fold("Ngô Bảo Châu") == fold("ngo bao chau")
    assert name_like_pattern("nguyen") == "%ng___n%"
    assert name_like_pattern("thang") == "%th_ng%"


# --------------------------------------------------------------------------------------------- audit log


def test_audit_log_newest_first_filtered_and_paged(app, admin):
    for i in range(PAGE_SIZE + 3):
        with engine_of(app).begin() as conn:
            audit.record(conn, actor="user:someone" if i % 2 else "system", role=None, action=f"act-{i}")
    html = admin.get("/admin/audit").get_data(as_text=True)
    actions = re.findall(r"<td>(act-\d+)</td>", html)
    assert actions == [f"act-{i}" for i in range(PAGE_SIZE + 2, 2, -1)]
    older = re.search(r'href="(/admin/audit\?before=\d+)"', html).group(1)
    rest = admin.get(older).get_data(as_text=True)
    assert re.findall(r"<td>(act-\d+)</td>", rest) == ["act-2", "act-1", "act-0"]
    assert "<td>login</td>" in rest and "/admin/audit?before=" not in rest
    only = admin.get("/admin/audit?actor=user:someone").get_data(as_text=True)
    assert set(re.findall(r"<td>(act-(\d+))</td>", only)) and all(
        int(n) % 2 for _a, n in re.findall(r"<td>(act-(\d+))</td>", only)
    )
    assert admin.get("/admin/audit?before=abc").status_code == 400
    assert len(_audit(app, "audit_view")) == 3
