"""The authorization matrix: every URL of the hub web app, every role, anonymous, and every kind of bad token.

The URL list is the app's own ``url_map`` (only ``static`` is skipped), so a new URL is covered the day it is
added: a view without an ``auth_kind`` marker (public / session / token) fails here. Authorization does not
depend on the database backend, so this matrix runs on SQLite only (one app for the module, so each role
logs in once); tests/hub/test_login.py covers the login and session machinery on both backends.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from werkzeug.routing import IntegerConverter, PathConverter, Rule, UUIDConverter

from hub.accounts import Role
from hub.web import create_app
from tests.hub.staff_helpers import bearer, csrf_token, hub_config, login, make_token, make_user

IGNORED_METHODS = {"HEAD", "OPTIONS"}
AUTH_KINDS = {"public", "session", "token"}
#: Values for URL variables by name; others come from the converter (ints point at rows that do not exist).
NAMED_VALUES = {"code": "vi", "pass_id": "ABCDE-FGHJK", "kid": "0011223344556677"}


def _rules(app: Flask) -> list[Rule]:
    return sorted((r for r in app.url_map.iter_rules() if r.endpoint != "static"), key=lambda r: r.rule)


def auth_kind(app: Flask, endpoint: str) -> str | None:
    """The view's ``auth_kind`` marker (set by roles_required, token_required, public_view), or None."""
    return getattr(app.view_functions[endpoint], "auth_kind", None)


def unmarked_endpoints(app: Flask) -> list[str]:
    """Endpoints whose view carries no known auth marker: each one is a URL nobody checks."""
    return [r.endpoint for r in _rules(app) if auth_kind(app, r.endpoint) not in AUTH_KINDS]


def _value(name: str, converter) -> object:
    if name in NAMED_VALUES:
        return NAMED_VALUES[name]
    if isinstance(converter, IntegerConverter):
        return 987654
    if isinstance(converter, UUIDConverter):
        return uuid.UUID(int=1)
    if isinstance(converter, PathConverter):
        return "some/path"
    return "abc"


def _url(app: Flask, rule: Rule) -> str:
    values = {name: _value(name, conv) for name, conv in rule._converters.items()}
    return app.url_map.bind("localhost").build(rule.endpoint, values, force_external=False)


def _find(app: Flask, endpoint: str, rule: str) -> Rule:
    (found,) = [r for r in app.url_map.iter_rules(endpoint) if r.rule == rule]
    return found


def _methods(rule: Rule) -> list[str]:
    return sorted(rule.methods - IGNORED_METHODS)


def _collect_routes() -> list[tuple[str, str, str, str | None]]:
    """(endpoint, rule, method, auth kind) of the app as create_app builds it, for parametrizing."""
    app = create_app(hub_config("sqlite://", secret_key="collect-only"))
    try:
        return [(r.endpoint, r.rule, m, auth_kind(app, r.endpoint)) for r in _rules(app) for m in _methods(r)]
    finally:
        app.extensions["antoan"].engine.dispose()


def _params(routes):
    return [
        pytest.param(endpoint, rule, method, id=f"{method} {rule}") for endpoint, rule, method, _ in routes
    ]


ROUTES = _collect_routes()
ALL = _params(ROUTES)
SESSION = _params(r for r in ROUTES if r[3] == "session")
TOKEN = _params(r for r in ROUTES if r[3] == "token")
PUBLIC_GET = _params(r for r in ROUTES if r[3] == "public" and r[2] == "GET")


class World:
    """One app with a logged-in client per role, an anonymous client and tokens of every kind."""

    def __init__(self, app: Flask):
        self.app = app
        self.anonymous = app.test_client()
        self.clients = {}
        self.csrf = {}
        for role in Role:
            make_user(app, f"user-{role.value}", role)
            client = app.test_client()
            assert login(client, f"user-{role.value}").status_code == 302
            self.clients[role] = client
            self.csrf[role] = csrf_token(client)
        self.csrf[None] = csrf_token(self.anonymous)
        self.tokens = {role: make_token(app, role, name=f"token {role.value}")[1] for role in Role}
        revoked_id, self.revoked = make_token(app, Role.ADMIN, name="revoked")
        from hub import accounts

        with app.extensions["antoan"].engine.begin() as conn:
            accounts.revoke_api_token(conn, revoked_id)
        past = datetime.now(UTC) - timedelta(minutes=1)
        self.expired = make_token(app, Role.ADMIN, name="expired", expires_at=past)[1]

    def request(self, who: Role | None, method: str, url: str, headers: dict | None = None):
        client = self.anonymous if who is None else self.clients[who]
        data = {"csrf_token": self.csrf[who]} if method != "GET" else None
        return client.open(url, method=method, data=data, headers=headers or {})


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    path = tmp_path_factory.mktemp("authz") / "hub.db"
    app = create_app(
        hub_config(f"sqlite:///{path}", login_rate="1000 per minute", public_form_rate="1000 per minute")
    )
    yield World(app)
    app.extensions["antoan"].engine.dispose()


def _refused_anonymously(response) -> bool:
    if response.status_code == 401:
        return True
    return response.status_code == 302 and response.location.startswith("/login")


def _got_through(response) -> bool:
    """Not refused: neither 401/403 nor a redirect to the login page."""
    if response.status_code in (401, 403):
        return False
    return not (response.status_code in (301, 302, 303) and response.location.startswith("/login"))


# --------------------------------------------------------------------------------------------- the markers


def test_the_matrix_covers_urls_of_every_kind():
    assert {"/admin/users", "/admin/declarations", "/admin/audit"} <= {p.values[1] for p in SESSION}
    assert {"/admin/cases/", "/admin/cases/<int:case_id>", "/admin/cases/<int:case_id>/export.csv"} <= {
        p.values[1] for p in SESSION
    }
    assert {"/api/stats", "/api/v1/cases", "/api/v1/cases/<int:case_id>/contacts"} <= {
        p.values[1] for p in TOKEN
    }
    assert "/login" in {p.values[1] for p in PUBLIC_GET}


#: Cases hold who met whom: only health officials and admins, on the pages and in the API.
CASE_URL_PREFIXES = ("/admin/cases", "/api/v1/cases")


def test_case_urls_admit_only_health_officials_and_admins():
    case_routes = [r for r in ROUTES if r[1].startswith(CASE_URL_PREFIXES)]
    assert len(case_routes) >= 10
    app = create_app(hub_config("sqlite://", secret_key="x"))
    try:
        for endpoint, rule, method, _kind in case_routes:
            allowed = set(app.view_functions[endpoint].allowed_roles)
            assert allowed == {Role.HEALTH_OFFICIAL, Role.ADMIN}, f"{method} {rule}"
    finally:
        app.extensions["antoan"].engine.dispose()


def test_every_view_carries_an_auth_marker():
    app = create_app(hub_config("sqlite://", secret_key="x"))
    try:
        assert unmarked_endpoints(app) == []
    finally:
        app.extensions["antoan"].engine.dispose()


def test_a_new_view_without_a_marker_is_caught():
    app = create_app(hub_config("sqlite://", secret_key="x"))
    try:
        app.add_url_rule("/admin/forgotten", "forgotten", lambda: "personal data")
        assert unmarked_endpoints(app) == ["forgotten"]
    finally:
        app.extensions["antoan"].engine.dispose()


@pytest.mark.parametrize(("endpoint", "rule", "method"), ALL)
def test_url_is_guarded_by_its_prefix(world, endpoint, rule, method):
    kind = auth_kind(world.app, endpoint)
    assert kind in AUTH_KINDS, f"{rule} ({endpoint}) has no auth marker"
    if rule.startswith("/admin"):
        assert kind == "session", f"{rule} is under /admin but is {kind}"
    if rule.startswith("/api/"):
        assert kind in ("token", "public"), f"{rule} is under /api but is {kind}"
    if kind != "public":
        allowed = world.app.view_functions[endpoint].allowed_roles
        assert allowed and set(allowed) <= set(Role)


# -------------------------------------------------------------------------------------- the role matrix


@pytest.mark.parametrize(("endpoint", "rule", "method"), SESSION)
def test_session_url_refuses_anonymous_and_other_roles_and_admits_its_roles(world, endpoint, rule, method):
    url = _url(world.app, _find(world.app, endpoint, rule))
    allowed = set(world.app.view_functions[endpoint].allowed_roles)
    anonymous = world.request(None, method, url)
    assert _refused_anonymously(anonymous), (url, anonymous.status_code, anonymous.location)
    for role in Role:
        response = world.request(role, method, url)
        if role in allowed:
            assert _got_through(response), (url, role, response.status_code, response.location)
        else:
            assert response.status_code == 403, (url, role, response.status_code)
    # A bearer token is no way into a staff page.
    with_token = world.request(None, method, url, headers=bearer(world.tokens[Role.ADMIN]))
    assert _refused_anonymously(with_token)


@pytest.mark.parametrize(("endpoint", "rule", "method"), TOKEN)
def test_token_url_refuses_every_bad_token_and_other_roles_and_admits_its_roles(
    world, endpoint, rule, method
):
    url = _url(world.app, _find(world.app, endpoint, rule))
    client = world.anonymous
    refused = {
        "no token": {},
        "not bearer": {"Authorization": f"Basic {world.tokens[Role.ADMIN]}"},
        "garbage": bearer("not-a-token"),
        "unknown": bearer("at_" + uuid.uuid4().hex),
        "revoked": bearer(world.revoked),
        "expired": bearer(world.expired),
    }
    for label, headers in refused.items():
        response = client.open(url, method=method, headers=headers)
        assert response.status_code == 401, (url, label, response.status_code)
    # A logged-in admin's session cookie is no way into the API either.
    assert world.clients[Role.ADMIN].open(url, method=method).status_code == 401
    allowed = set(world.app.view_functions[endpoint].allowed_roles)
    for role in Role:
        response = client.open(url, method=method, headers=bearer(world.tokens[role]))
        if role in allowed:
            assert response.status_code not in (401, 403), (url, role, response.status_code)
        else:
            assert response.status_code == 403, (url, role, response.status_code)


@pytest.mark.parametrize(("endpoint", "rule", "method"), PUBLIC_GET)
def test_public_page_is_open_to_anonymous_visitors(world, endpoint, rule, method):
    url = _url(world.app, _find(world.app, endpoint, rule))
    response = world.anonymous.get(url)
    assert _got_through(response), (url, response.status_code)
