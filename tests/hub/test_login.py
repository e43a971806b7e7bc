"""Staff login: wrong credentials, disabled users, rate limit, session expiry, redirects, CSRF, logout."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import itsdangerous.timed
import pytest
from flask import Flask
from sqlalchemy import func, select

from hub import accounts
from hub.accounts import Role
from hub.db.schema import audit_log
from hub.web import create_app
from tests.hub.staff_helpers import PASSWORD, csrf_token, engine_of, hub_config, login, make_user, post

WRONG = "Sai tên đăng nhập hoặc mật khẩu."


@pytest.fixture
def app(db_url):
    app = create_app(hub_config(db_url, login_rate="100 per minute"))
    yield app
    engine_of(app).dispose()


@pytest.fixture
def official(app: Flask) -> accounts.User:
    return make_user(app, "canbo.yte", Role.HEALTH_OFFICIAL, display_name="Trần Thị Bích")


def _audit_actions(app: Flask) -> list[str]:
    with engine_of(app).connect() as conn:
        return list(conn.execute(select(audit_log.c.action).order_by(audit_log.c.id)).scalars())


def test_login_opens_the_staff_pages_and_is_audited(app, official):
    client = app.test_client()
    response = login(client, "canbo.yte")
    assert response.status_code == 302
    assert response.location == "/admin/"
    assert client.get("/admin/").status_code == 200
    assert _audit_actions(app) == ["login"]
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


@pytest.mark.parametrize("username", ["canbo.yte", "khong.co.ai"], ids=["wrong password", "unknown user"])
def test_wrong_password_and_unknown_user_get_the_same_answer(app, official, username):
    client = app.test_client()
    response = login(client, username, "mật-khẩu-sai-hẳn")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert WRONG in html
    assert "khong.co.ai" not in html.replace('value="khong.co.ai"', "")  # no "no such user" hint
    assert client.get("/admin/").status_code == 302
    assert _audit_actions(app) == ["login_failed"]


def test_a_disabled_user_cannot_log_in(app, official):
    with engine_of(app).begin() as conn:
        accounts.set_active(conn, official.id, False)
    response = login(app.test_client(), "canbo.yte")
    assert response.status_code == 400
    assert WRONG in response.get_data(as_text=True)


def test_disabling_a_user_ends_their_session(app, official):
    client = app.test_client()
    login(client, "canbo.yte")
    with engine_of(app).begin() as conn:
        accounts.set_active(conn, official.id, False)
    response = client.get("/admin/")
    assert response.status_code == 302 and response.location.startswith("/login")


def test_login_is_rate_limited_per_address(db_url):
    app = create_app(hub_config(db_url, login_rate="3 per minute"))
    try:
        make_user(app, "canbo.yte", Role.HEALTH_OFFICIAL)
        client = app.test_client()
        statuses = [login(client, "canbo.yte", "sai-mat-khau-123").status_code for _ in range(3)]
        assert statuses == [400, 400, 400]
        limited = login(client, "canbo.yte")  # even the right password waits
        assert limited.status_code == 429
        assert "Quá nhiều yêu cầu" in limited.get_data(as_text=True)
        assert client.get("/login").status_code == 200  # only POST is limited
    finally:
        engine_of(app).dispose()


class Clock:
    """The clock that signs and checks session cookies (itsdangerous timestamps), moved by the test."""

    def __init__(self, monkeypatch):
        self.now = int(time.time())
        monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp", lambda signer: self.now)

    def advance(self, minutes: float) -> None:
        self.now += int(minutes * 60)


def test_an_idle_session_expires_after_session_minutes(db_url, monkeypatch):
    clock = Clock(monkeypatch)
    app = create_app(hub_config(db_url, session_minutes=5))
    try:
        make_user(app, "canbo.yte", Role.HEALTH_OFFICIAL)
        client = app.test_client()
        assert login(client, "canbo.yte").status_code == 302
        clock.advance(4)
        assert client.get("/admin/").status_code == 200  # activity renews the idle limit
        clock.advance(4)
        assert client.get("/admin/").status_code == 200
        clock.advance(6)
        response = client.get("/admin/")
        assert response.status_code == 302
        assert response.location.startswith("/login")
    finally:
        engine_of(app).dispose()


def test_a_busy_session_ends_twelve_hours_after_login(app, official):
    client = app.test_client()
    login(client, "canbo.yte")
    with client.session_transaction() as session:
        session["login_at"] = (datetime.now(UTC) - timedelta(hours=11, minutes=50)).timestamp()
    assert client.get("/admin/").status_code == 200
    with client.session_transaction() as session:
        session["login_at"] = (datetime.now(UTC) - timedelta(hours=12, minutes=1)).timestamp()
    response = client.get("/admin/")
    assert response.status_code == 302 and response.location.startswith("/login")
    assert client.get("/admin/").status_code == 302  # and it stays ended


def test_changing_the_password_ends_the_other_sessions(app, official):
    here, elsewhere = app.test_client(), app.test_client()
    login(here, "canbo.yte")
    login(elsewhere, "canbo.yte")
    new = "mật-khẩu-mới-2021"
    response = post(
        here, "/admin/password", {"current_password": PASSWORD, "password": new, "password_confirm": new}
    )
    assert response.status_code == 302
    assert here.get("/admin/").status_code == 200
    ended = elsewhere.get("/admin/")
    assert ended.status_code == 302 and ended.location.startswith("/login")
    assert login(app.test_client(), "canbo.yte", PASSWORD).status_code == 400
    assert login(app.test_client(), "canbo.yte", new).status_code == 302
    assert "password_change" in _audit_actions(app)


def test_changing_the_password_needs_the_current_one(app, official):
    client = app.test_client()
    login(client, "canbo.yte")
    new = "mật-khẩu-mới-2021"
    response = post(
        client,
        "/admin/password",
        {"current_password": "đoán-bừa-thôi", "password": new, "password_confirm": new},
    )
    assert response.status_code == 400
    assert "Mật khẩu hiện tại không đúng." in response.get_data(as_text=True)
    assert login(app.test_client(), "canbo.yte", PASSWORD).status_code == 302


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("//evil.example", "/admin/"),
        ("//evil.example/admin/", "/admin/"),
        ("https://evil.example/", "/admin/"),
        ("/\\evil.example", "/admin/"),
        ("/admin/users", "/admin/users"),
    ],
)
def test_login_follows_only_local_next_urls(app, official, target, expected):
    response = login(app.test_client(), "canbo.yte", next_url=target)
    assert response.status_code == 302
    # A path on this site only: "//host" and "/\\host" are other sites to a browser.
    assert response.location.startswith("/")
    assert not response.location.startswith(("//", "/\\"))
    if expected is not None:
        assert response.location == expected


def test_login_without_a_csrf_token_is_400(app, official):
    client = app.test_client()
    response = client.post("/login", data={"username": "canbo.yte", "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/admin/").status_code == 302


def test_staff_form_without_a_csrf_token_is_400(app):
    make_user(app, "quantri", Role.ADMIN)
    client = app.test_client()
    login(client, "quantri")
    data = {"username": "moi", "role": "admin", "password": PASSWORD, "password_confirm": PASSWORD}
    assert client.post("/admin/users", data=data).status_code == 400
    assert client.post("/admin/users", data={**data, "csrf_token": "forged"}).status_code == 400
    with engine_of(app).connect() as conn:
        assert accounts.get_user_by_name(conn, "moi") is None


def test_logout_needs_post_with_csrf_and_ends_the_session(app, official):
    client = app.test_client()
    login(client, "canbo.yte")
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 400
    assert client.get("/admin/").status_code == 200
    response = client.post("/logout", data={"csrf_token": csrf_token(client)})
    assert response.status_code == 302
    assert client.get("/admin/").status_code == 302
    with engine_of(app).connect() as conn:
        logouts = conn.execute(select(func.count()).where(audit_log.c.action == "logout")).scalar_one()
    assert logouts == 1
