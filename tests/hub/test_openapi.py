"""The OpenAPI document: made from the code, covers every /api URL, and the API keeps to it (schemathesis)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from sqlalchemy import create_engine, insert, update

from hub import accounts
from hub.config import HubConfig
from hub.db.schema import declarations, passes
from hub.openapi import (
    OPENAPI_VERSION,
    OpenApiError,
    Param,
    api_routes,
    build_document,
    openapi_path,
    operation,
    undocumented,
)
from hub.passes import issue_pass
from hub.web import create_app
from hub.web.api import openapi_for

#: The examples in the document (hub/web/api.py) name these, so the explicit phase finds real data.
EXAMPLE_PASS_ID = "ABCDEFGHJK"
EXAMPLE_ID_NUMBER = "001090000123"


def _make_app(db_path):
    config = HubConfig.model_validate(
        {"database": {"url": f"sqlite:///{db_path}"}, "mqtt": {"host": "127.0.0.1", "port": 1}}
    )
    return create_app(config)


def _token(app, role: str = "admin") -> dict[str, str]:
    with app.extensions["antoan"].engine.begin() as conn:
        _, token = accounts.create_api_token(conn, name=f"{role}-tests", role=role, created_by=None)
    return {"Authorization": f"Bearer {token}"}


def _seed(app) -> None:
    """A declaration with the example id number and a pass with the example pass id."""
    web = app.extensions["antoan"]
    now = datetime.now(UTC)
    with web.engine.begin() as conn:
        declaration_id = conn.execute(
            insert(declarations)
            .values(
                kind="ncovi",
                submission_id=str(uuid.uuid4()),
                id_number=EXAMPLE_ID_NUMBER,
                full_name="Lê Văn Cường",
                birth_date=date(1990, 1, 2),
                birth_year=1990,
                gender="male",
                nationality="VN",
                answers={},
                colour="green",
                colour_reasons=[],
                created_at=now,
            )
            .returning(declarations.c.id)
        ).scalar_one()
        issued = issue_pass(
            conn,
            declaration_id=declaration_id,
            kind="ncovi",
            full_name="Lê Văn Cường",
            birth_year=1990,
            colour="green",
            keyring=web.keyring,
            settings=web.config.passes,
            now=now,
        )
        conn.execute(update(passes).where(passes.c.pass_id == issued.pass_id).values(pass_id=EXAMPLE_PASS_ID))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    app = _make_app(tmp_path_factory.mktemp("openapi") / "hub.db")
    _seed(app)
    yield app, _token(app)
    app.extensions["antoan"].engine.dispose()


@pytest.fixture(scope="module")
def document(seeded):
    app, auth = seeded
    response = app.test_client().get("/api/openapi.json", headers=auth)
    assert response.status_code == 200
    return response.get_json()


def test_every_api_url_is_in_the_document(seeded, document):
    app, _auth = seeded
    assert undocumented(app) == []
    routes = api_routes(app)
    assert len(routes) >= 11
    for rule, method, _endpoint in routes:
        path = openapi_path(rule)
        assert path in document["paths"], rule
        assert method.lower() in document["paths"][path], f"{method} {rule}"
    documented = {(p, m) for p, methods in document["paths"].items() for m in methods}
    assert documented == {(openapi_path(rule), method.lower()) for rule, method, _ in routes}


def test_document_shape_security_and_hoisted_schemas(document):
    assert document["openapi"] == OPENAPI_VERSION
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    schemas = document["components"]["schemas"]
    refs = set()

    def walk(node):
        if isinstance(node, dict):
            assert "$defs" not in node, "nested $defs must be hoisted into components/schemas"
            if "$ref" in node:
                refs.add(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs, "schemas are shared through $ref"
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in schemas, ref
    public = {"/api/v1/ca.pem", "/api/v1/enrol", "/api/v1/renew"}  # enrolment: the token is in the body
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            if op["security"] == []:
                assert path in public, f"{method} {path} is public but not an enrolment endpoint"
                continue
            assert op["security"] == [{"bearerAuth": []}], f"{method} {path}"
            assert {"401", "403"} <= set(op["responses"]), f"{method} {path}"
            assert op["x-roles"], f"{method} {path}"
    status = document["paths"]["/api/v1/passes/{pass_id}/status"]
    assert status["put"]["x-roles"] == ["admin", "health_official"]
    assert status["put"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/StatusChange"
    }


def test_the_document_needs_a_token(seeded):
    app, _auth = seeded
    assert app.test_client().get("/api/openapi.json").status_code == 401


def test_an_undeclared_view_is_named_and_a_bad_declaration_is_refused():
    app = Flask(__name__)

    @app.get("/api/v1/plain")
    def plain():
        return {}

    @app.get("/api/v1/things/<int:thing_id>")
    @operation(summary="A thing", responses={200: ("The thing.", None)})
    def thing(thing_id: int):
        return {}

    assert undocumented(app) == ["GET /api/v1/plain"]
    doc = build_document(app, title="t", version="1")
    assert list(doc["paths"]) == ["/api/v1/things/{thing_id}"]
    (param,) = doc["paths"]["/api/v1/things/{thing_id}"]["get"]["parameters"]
    assert (param["in"], param["schema"]["type"]) == ("path", "integer")

    @app.get("/api/v1/other")
    @operation(
        summary="Other", path=[Param("nope", {"type": "string"}, "absent")], responses={200: ("ok", None)}
    )
    def other():
        return {}

    with pytest.raises(OpenApiError, match="nope"):
        build_document(app, title="t", version="1")


# ------------------------------------------------------------------------------------ schemathesis


def _document_only_app():
    """The app with no database behind it: enough to build the document (which reads no data)."""
    config = HubConfig.model_validate(
        {"database": {"url": "sqlite://"}, "web": {"secret_key": "document-only"}, "mqtt": {"port": 1}}
    )
    return create_app(config, engine=create_engine("sqlite://"))


# Loaded at import from the code itself (schemathesis' lazy fixture loader does not work with pytest 9);
# every case is then sent to the seeded app, in-process through WSGI.
schema = schemathesis.openapi.from_dict(openapi_for(_document_only_app()))


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_keeps_to_its_document(case, seeded):
    """No 5xx, every status documented, every body matches its schema (admin token: all operations)."""
    app, auth = seeded
    case.call_and_validate(
        app=app,
        headers=auth,
        checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
    )
