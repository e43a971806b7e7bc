"""The machine JSON API: lists, passes and their status, declaration search, the kiosk fleet, errors."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import func, insert, select

from hub import accounts
from hub.config import HubConfig
from hub.db.schema import audit_log, declarations
from hub.db.store import KioskStateRow
from hub.declarations import today_in_vietnam
from hub.keys import STATUS, list_version
from hub.passes import issue_pass
from hub.web import create_app
from protocol.healthpass import StatusList, TrustList, verify_pass

ROLES = [role.value for role in accounts.Role]


@pytest.fixture
def app(db_url):
    config = HubConfig.model_validate({"database": {"url": db_url}, "mqtt": {"host": "127.0.0.1", "port": 1}})
    app = create_app(config)
    yield app
    app.extensions["antoan"].engine.dispose()


@pytest.fixture
def client(app: Flask):
    return app.test_client()


@pytest.fixture
def tokens(app: Flask) -> dict[str, dict[str, str]]:
    """An Authorization header for each role."""
    out = {}
    with app.extensions["antoan"].engine.begin() as conn:
        for role in ROLES:
            _, token = accounts.create_api_token(conn, name=f"{role}-machine", role=role, created_by=None)
            out[role] = {"Authorization": f"Bearer {token}"}
    return out


def _declaration(app: Flask, *, id_number: str, created_at: datetime, name: str = "Trần Thị Bích") -> int:
    with app.extensions["antoan"].engine.begin() as conn:
        return conn.execute(
            insert(declarations)
            .values(
                kind="ncovi",
                submission_id=str(uuid.uuid4()),
                id_number=id_number,
                full_name=name,
                birth_date=date(1985, 3, 9),
                birth_year=1985,
                gender="female",
                phone="0912345678",
                nationality="VN",
                province="Hà Nội",
                answers={"symptoms": ["cough"]},
                colour="yellow",
                colour_reasons=["symptom:cough"],
                created_at=created_at,
            )
            .returning(declarations.c.id)
        ).scalar_one()


def _issue(app: Flask, declaration_id: int, *, now: datetime | None = None, colour: str = "green"):
    web = app.extensions["antoan"]
    with web.engine.begin() as conn:
        return issue_pass(
            conn,
            declaration_id=declaration_id,
            kind="ncovi",
            full_name="Trần Thị Bích",
            birth_year=1985,
            colour=colour,
            keyring=web.keyring,
            settings=web.config.passes,
            now=now or datetime.now(UTC),
        )


@pytest.fixture
def issued(app: Flask):
    declaration_id = _declaration(app, id_number="001185000123", created_at=datetime.now(UTC))
    return _issue(app, declaration_id)


def _audit_actions(app: Flask) -> list[tuple[str, str, str | None]]:
    with app.extensions["antoan"].engine.connect() as conn:
        rows = conn.execute(select(audit_log).order_by(audit_log.c.id)).all()
    return [(r.action, r.actor, r.target_id) for r in rows]


# ------------------------------------------------------------------------------------ lists


def test_trust_list_is_the_published_json_and_parses(app, client, tokens, issued):
    response = client.get("/api/v1/trust-list", headers=tokens["venue_manager"])
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    parsed = TrustList.from_json(response.data)
    assert issued.kid in {kid.hex() for kid in parsed.keys}


def test_status_list_follows_put_and_delete_with_new_versions(app, client, tokens, issued):
    empty = StatusList.from_json(client.get("/api/v1/status-list", headers=tokens["district_it"]).data)
    assert empty.colour_for(issued.pass_id) is None

    put = client.put(
        f"/api/v1/passes/{issued.display_id.lower()}/status",
        headers=tokens["health_official"],
        json={"colour": "red", "reason": "F1 của ca bệnh BN-1234"},
    )
    assert put.status_code == 200, put.get_json()
    body = put.get_json()
    assert (body["signed_colour"], body["colour"]) == ("green", "red")
    assert body["status"]["reason"] == "F1 của ca bệnh BN-1234"
    flagged = StatusList.from_json(client.get("/api/v1/status-list", headers=tokens["admin"]).data)
    assert flagged.colour_for(issued.pass_id) == "red"
    assert flagged.version > empty.version

    delete = client.delete(f"/api/v1/passes/{issued.pass_id}/status", headers=tokens["admin"])
    assert delete.status_code == 200
    assert delete.get_json()["status"] is None
    assert delete.get_json()["colour"] == "green"
    cleared = StatusList.from_json(client.get("/api/v1/status-list", headers=tokens["admin"]).data)
    assert cleared.colour_for(issued.pass_id) is None
    assert cleared.version > flagged.version

    actions = [(a, actor.split(":")[0], target) for a, actor, target in _audit_actions(app)]
    assert ("pass_status_set", "token", issued.pass_id) in actions
    assert ("pass_status_cleared", "token", issued.pass_id) in actions


# ------------------------------------------------------------------------------------ passes


def test_get_pass_shows_colours_and_validity_but_nothing_personal(client, tokens, issued):
    response = client.get(f"/api/v1/passes/{issued.display_id}", headers=tokens["health_official"])
    assert response.status_code == 200
    body = response.get_json()
    assert body["pass_id"] == issued.pass_id
    assert body["display_id"] == issued.display_id
    assert (body["kind"], body["signed_colour"], body["colour"], body["expired"]) == (
        "ncovi",
        "green",
        "green",
        False,
    )
    assert body["status"] is None
    text = response.get_data(as_text=True)
    assert "Bích" not in text and "001185000123" not in text


@pytest.mark.parametrize(
    ("pass_id", "status", "error"),
    [("not-a-pass", 400, "bad_pass_id"), ("ABCDE-FGHJK", 404, "not_found"), ("x" * 60, 400, "bad_pass_id")],
)
def test_get_pass_rejects_bad_and_unknown_ids(client, tokens, pass_id, status, error):
    response = client.get(f"/api/v1/passes/{pass_id}", headers=tokens["admin"])
    assert response.status_code == status
    assert response.get_json()["error"] == error
    assert response.get_json()["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"colour": "green", "reason": "x"}, "colour"),
        ({"colour": "purple", "reason": "x"}, "colour"),
        ({"colour": "red"}, "reason"),
        ({"colour": "red", "reason": "   "}, "reason"),
        ({"colour": "red", "reason": "x" * 201}, "reason"),
        ({"colour": "red", "reason": "a\x01b"}, "reason"),
        ({"colour": "red", "reason": "a\x00b"}, "reason"),
        ({"colour": "red", "reason": "x", "extra": 1}, "extra"),
    ],
)
def test_status_change_rejects_invalid_bodies_field_by_field(app, client, tokens, issued, body, field):
    response = client.put(f"/api/v1/passes/{issued.pass_id}/status", headers=tokens["admin"], json=body)
    assert response.status_code == 422
    assert field in response.get_json()["fields"]
    with app.extensions["antoan"].engine.connect() as conn:
        assert list_version(conn, STATUS) == 0  # nothing changed


@pytest.mark.parametrize(
    "data",
    [b"not json", b"[1, 2]", b'"red"', b"\xff\xfe binary", b"{", b"[" * 100_000 + b"]" * 100_000],
    ids=["text", "list", "string", "binary", "cut", "deeply-nested"],
)
def test_status_change_needs_a_json_object(client, tokens, issued, data):
    response = client.put(
        f"/api/v1/passes/{issued.pass_id}/status",
        headers={**tokens["admin"], "Content-Type": "application/json"},
        data=data,
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "bad_request"


def test_status_change_of_an_unknown_or_expired_pass(app, client, tokens):
    change = {"colour": "yellow", "reason": "F2"}
    unknown = client.put("/api/v1/passes/ABCDE-FGHJK/status", headers=tokens["admin"], json=change)
    assert unknown.status_code == 404
    old = _issue(
        app,
        _declaration(app, id_number="C1234567", created_at=datetime.now(UTC) - timedelta(days=30)),
        now=datetime.now(UTC) - timedelta(days=30),
    )
    expired = client.put(f"/api/v1/passes/{old.pass_id}/status", headers=tokens["admin"], json=change)
    assert expired.status_code == 409
    assert expired.get_json()["error"] == "expired"
    shown = client.get(f"/api/v1/passes/{old.pass_id}", headers=tokens["admin"]).get_json()
    assert shown["expired"] is True


def test_a_huge_body_is_refused_as_json(client, tokens, issued):
    response = client.put(
        f"/api/v1/passes/{issued.pass_id}/status",
        headers={**tokens["admin"], "Content-Type": "application/json"},
        data=b'{"reason": "' + b"x" * 300_000 + b'", "colour": "red"}',
    )
    assert response.status_code == 413
    assert response.is_json


# ------------------------------------------------------------------------------------ declarations


def _ncovi(**declarant) -> dict:
    return {
        "declarant": {
            "full_name": "Nguyễn Văn An",
            "birth_date": "1990-05-17",
            "gender": "male",
            "id_type": "cccd",
            "id_number": "001090000123",
            "phone": "0912345678",
            "address": {
                "province": "Hà Nội",
                "district": "Ba Đình",
                "commune": "Phúc Xá",
                "street": "12 Hàng Bông",
            },
            "symptoms": ["cough"],
            **declarant,
        },
        "members": [
            {
                "full_name": "Nguyễn Thị Bình",
                "relationship": "child",
                "birth_year": 2015,
                "gender": "female",
                "id_type": "cccd",
                "id_number": "001315000456",
            }
        ],
    }


def _vhd() -> dict:
    return {
        "full_name": "John Smith",
        "birth_date": "1980-01-02",
        "gender": "male",
        "nationality": "GB",
        "passport_number": "123456789",
        "transport": {"mode": "air", "number": "VN54", "seat": "12A"},
        "border_gate": "noi_bai",
        "arrival_date": today_in_vietnam().isoformat(),
        "countries_visited": ["GB"],
        "quarantine_address": {
            "province": "Hà Nội",
            "district": "Ba Đình",
            "commune": "Phúc Xá",
            "street": "1 Hàng Bông",
        },
    }


def _declaration_count(app) -> int:
    with app.extensions["antoan"].engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(declarations)).scalar_one()


def test_ncovi_submission_issues_verifiable_passes_and_supersedes(app, client, tokens):
    response = client.post("/api/v1/declarations/ncovi", headers=tokens["health_official"], json=_ncovi())
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["kind"] == "ncovi"
    declarant, child = body["passes"]
    assert (declarant["colour"], declarant["reasons"]) == ("yellow", ["symptom:cough"])
    assert (child["colour"], child["reasons"]) == ("green", [])
    trust = TrustList.from_json(client.get("/api/v1/trust-list", headers=tokens["admin"]).data)
    verified = verify_pass(declarant["qr_text"], trust=trust, now=datetime.now(UTC))
    assert verified.claims.pass_id == declarant["pass_id"]
    assert verified.colour == "yellow"

    again = client.post("/api/v1/declarations/ncovi", headers=tokens["admin"], json=_ncovi(symptoms=[]))
    assert again.status_code == 201
    history = client.get("/api/v1/declarations?id_number=001090000123", headers=tokens["admin"]).get_json()
    newest, older = history["declarations"]
    assert newest["id"] == again.get_json()["passes"][0]["declaration_id"]
    assert older["superseded_by"] == newest["id"]
    assert older["declared_by"] is None
    actions = [a for a, _actor, _target in _audit_actions(app)]
    assert actions.count("declaration_submitted") == 2


def test_vhd_submission_issues_one_pass(client, tokens):
    response = client.post("/api/v1/declarations/vhd", headers=tokens["admin"], json=_vhd())
    assert response.status_code == 201, response.get_json()
    (issued,) = response.get_json()["passes"]
    assert (issued["kind"], issued["colour"]) == ("vhd", "green")


@pytest.mark.parametrize(
    ("path", "body", "field", "code"),
    [
        ("ncovi", _ncovi(id_number="001190000123"), "declarant.id_number", None),
        ("ncovi", _ncovi(phone="12"), "declarant.phone", None),
        ("ncovi", _ncovi(full_name="A\x00n"), "declarant.full_name", None),
        ("ncovi", {"declarant": {}}, "declarant.full_name", None),
        ("ncovi", {**_ncovi(), "extra": True}, "extra", None),
        ("vhd", {**_vhd(), "border_gate": "nowhere"}, "border_gate", "choose_one"),
        ("vhd", {**_vhd(), "countries_visited": []}, "countries_visited", None),
    ],
)
def test_an_invalid_submission_saves_nothing_and_names_the_field(
    app, client, tokens, path, body, field, code
):
    response = client.post(f"/api/v1/declarations/{path}", headers=tokens["admin"], json=body)
    assert response.status_code == 422, response.get_json()
    answer = response.get_json()
    assert field in answer["fields"], answer
    if code is not None:
        assert answer["codes"][field] == code
    assert _declaration_count(app) == 0


def test_a_submission_must_be_a_json_object(app, client, tokens):
    for data in (b"", b"declarant=x", b"[]", b"\x80\x81", b'{"a":' * 20_000 + b"1" + b"}" * 20_000):
        response = client.post(
            "/api/v1/declarations/ncovi",
            headers={**tokens["admin"], "Content-Type": "application/json"},
            data=data,
        )
        assert response.status_code == 400, data
    assert _declaration_count(app) == 0


def test_declaration_search_returns_history_newest_first_and_is_audited(app, client, tokens):
    now = datetime.now(UTC)
    first = _declaration(app, id_number="B7654321", created_at=now - timedelta(days=3))
    second = _declaration(app, id_number="B7654321", created_at=now - timedelta(days=1))
    _declaration(app, id_number="OTHER1", created_at=now)
    issued = _issue(app, second)

    response = client.get("/api/v1/declarations?id_number=b765 4321", headers=tokens["health_official"])
    assert response.status_code == 200
    body = response.get_json()
    assert body["id_number"] == "B7654321"
    assert [d["id"] for d in body["declarations"]] == [second, first]
    newest = body["declarations"][0]
    assert newest["full_name"] == "Trần Thị Bích"
    assert newest["birth_date"] == "1985-03-09"
    assert newest["colour_reasons"] == ["symptom:cough"]
    assert [p["pass_id"] for p in newest["passes"]] == [issued.pass_id]
    assert body["truncated"] is False
    assert ("declarations_search", "token", "B7654321") in [
        (a, actor.split(":")[0], target) for a, actor, target in _audit_actions(app)
    ]


@pytest.mark.parametrize(
    "query", ["", "?id_number=", "?id_number=abc%00", "?id_number=" + "9" * 33, "?id_number=Đ1"]
)
def test_declaration_search_needs_a_plain_id_number(app, client, tokens, query):
    response = client.get(f"/api/v1/declarations{query}", headers=tokens["admin"])
    assert response.status_code == 400
    assert "id_number" in response.get_json()["message"]
    assert not [a for a in _audit_actions(app) if a[0] == "declarations_search"]


# ------------------------------------------------------------------------------------ fleet and access


def test_kiosk_fleet_lists_states(app, client, tokens):
    seen = datetime(2021, 8, 1, 8, 30, tzinfo=UTC)
    app.extensions["antoan"].store.commit(
        events=[],
        dead_letters=[],
        states=[
            KioskStateRow("kiosk-a", "online", "1.2.0", 3, 4.5, {"trust": 30.0, "status": None}, seen),
            KioskStateRow("kiosk-b", "offline", "1.1.0", None, None, {}, None),
        ],
    )
    response = client.get("/api/v1/kiosks", headers=tokens["district_it"])
    assert response.status_code == 200
    body = response.get_json()
    assert (body["count"], body["online"]) == (2, 1)
    assert [k["kiosk_id"] for k in body["kiosks"]] == ["kiosk-a", "kiosk-b"]
    assert body["kiosks"][0]["list_ages"] == {"trust": 30.0, "status": None}


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("get", "/api/v1/passes/ABCDE-FGHJK", {"admin", "health_official"}),
        ("put", "/api/v1/passes/ABCDE-FGHJK/status", {"admin", "health_official"}),
        ("delete", "/api/v1/passes/ABCDE-FGHJK/status", {"admin", "health_official"}),
        ("get", "/api/v1/declarations?id_number=A1", {"admin", "health_official"}),
        ("get", "/api/v1/kiosks", {"admin", "district_it"}),
        ("post", "/api/v1/declarations/ncovi", {"admin", "health_official"}),
        ("post", "/api/v1/declarations/vhd", {"admin", "health_official"}),
        ("get", "/api/v1/trust-list", set(ROLES)),
        ("get", "/api/v1/status-list", set(ROLES)),
        ("get", "/api/openapi.json", set(ROLES)),
        ("get", "/api/stats", set(ROLES)),
    ],
)
def test_each_endpoint_admits_only_its_roles(client, tokens, method, path, allowed):
    body = {"json": {"colour": "red", "reason": "F1"}} if method in ("put", "post") else {}
    anonymous = getattr(client, method)(path, **body)
    assert anonymous.status_code == 401
    assert anonymous.get_json()["error"] == "unauthorized"
    for role in ROLES:
        response = getattr(client, method)(path, headers=tokens[role], **body)
        if role in allowed:
            assert response.status_code not in (401, 403), role
        else:
            assert response.status_code == 403, role
            assert response.get_json()["error"] == "forbidden"
