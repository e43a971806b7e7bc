"""The JSON API for machines (provisioning, tracing, border-gate terminals): bearer tokens, under ``/api``.

Every view is ``@token_required(roles…)`` and declares itself with :func:`hub.openapi.operation`, from
which ``GET /api/openapi.json`` is generated. Versioned under ``/api/v1/`` (``/api/stats`` predates the
versioning and stays). Errors are JSON ``{"error": code, "message": text}`` (plus ``fields`` for
invalid input), in English: 400 unreadable input, 404 unknown object, 409 a state that forbids the
change, 422 input that breaks a rule. Reads and writes of personal data are audited.

Who may do what:

- any API token: ``/api/stats``, the trust list, the status list, the OpenAPI document;
- ``admin``, ``health_official``: pass details and status changes (tracing), declarations (submitting
  them, for border-gate and health-post terminals run by health staff; searching them by id number);
- ``admin``, ``district_it``: the kiosk fleet;
- nobody (``@public_view``, rate-limited): kiosk enrolment. ``GET /api/v1/ca.pem`` (kiosks accept it
  only if its fingerprint is the one pinned in their bundle), ``POST /api/v1/enrol`` (the single-use
  token in the body is the credential) and ``POST /api/v1/renew`` (the current certificate and a
  signature by its key are the credential).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select

from hub import devices as device_store
from hub import passes as pass_store
from hub.accounts import Role
from hub.db import from_db_time
from hub.db.schema import declarations as declarations_table
from hub.db.schema import pass_status
from hub.declarations import (
    DeclarationError,
    NcoviDeclaration,
    VhdDeclaration,
    save_ncovi,
    save_vhd,
    validate_ncovi,
    validate_vhd,
)
from hub.keys import KeyRingError
from hub.openapi import Param, build_document, operation
from hub.web.auth import public_view, token_required
from hub.web.extensions import audit, hub_web, limiter, public_form_rate
from protocol.healthpass import Colour
from provisioning.pki import CaLayout, HubCA, PkiError

bp = Blueprint("api", __name__, url_prefix="/api")

API_VERSION = "1"
SEARCH_LIMIT = 100
_ID_SEPARATORS = str.maketrans("", "", ".-")
_OPENAPI_CACHE = "antoan_openapi"

ColourName = Literal["green", "yellow", "red"]
KindName = Literal["ncovi", "vhd"]

TRACING_ROLES = (Role.ADMIN, Role.HEALTH_OFFICIAL)
FLEET_ROLES = (Role.ADMIN, Role.DISTRICT_IT)


# ------------------------------------------------------------------------------------------- models


class ApiError(BaseModel):
    """Every error answer of the API."""

    error: str = Field(description="A short machine-readable code, e.g. not_found, invalid.")
    message: str = Field(description="What went wrong and what to do, in English.")
    fields: dict[str, str] | None = Field(
        default=None, description="For invalid input: the field path (dotted) and what is wrong with it."
    )
    codes: dict[str, str] | None = Field(
        default=None, description="For an invalid declaration: the field path and a stable problem code."
    )


class KioskState(BaseModel):
    """A kiosk's latest state as the bridge stored it from its retained state message."""

    kiosk_id: str
    status: str = Field(description="online or offline (the broker's last will).")
    version: str
    outbox_depth: int | None
    oldest_unacked_age_s: float | None
    list_ages: dict[str, float | None] = Field(description="Age in seconds of each downlink list it holds.")
    state_sent_at: datetime | None
    last_seen: datetime | None


class Stats(BaseModel):
    events_stored: int
    dead_letters: int
    kiosks: list[KioskState]


class KioskFleet(BaseModel):
    kiosks: list[KioskState]
    count: int
    online: int


class TrustedKeyDoc(BaseModel):
    kid: str = Field(description="First 8 bytes of SHA-256 of the public key, hex.")
    alg: Literal["ES256", "EdDSA"]
    public_key: str = Field(description="SubjectPublicKeyInfo DER, base64.")
    not_before: datetime
    not_after: datetime


class TrustListDoc(BaseModel):
    """The trust list exactly as the retained MQTT message ``antoan/v1/broadcast/trust`` carries it."""

    v: Literal[1]
    version: int = Field(ge=0)
    issued_at: datetime
    keys: list[TrustedKeyDoc]


class StatusListDoc(BaseModel):
    """The whole status list: the union of the 32 retained MQTT shards ``antoan/v1/broadcast/status/<c>``.

    Same JSON as a shard but without ``shard`` and with every entry (HTTP has no message size limit).
    """

    v: Literal[1]
    version: int = Field(ge=0)
    issued_at: datetime
    colours: dict[str, ColourName] = Field(description="Pass id → colour, for passes whose colour changed.")


class PassStatusEntry(BaseModel):
    colour: ColourName
    reason: str
    changed_at: datetime


class PassInfo(BaseModel):
    """A pass as kiosks see it: no name, no id number, nothing personal."""

    pass_id: str = Field(description="Canonical form: 10 Crockford base32 characters.")
    display_id: str = Field(description="As printed for citizens: ABCDE-FGHJK.")
    kind: KindName
    signed_colour: ColourName = Field(description="The colour signed into the pass at issue.")
    colour: ColourName = Field(description="The colour kiosks show now: the worse of signed and listed.")
    status: PassStatusEntry | None = Field(description="The status-list entry, when the colour changed.")
    kid: str
    issued_at: datetime
    expires_at: datetime
    expired: bool


class StatusChange(BaseModel):
    """A colour change for a pass (e.g. an F1 found by tracing)."""

    model_config = ConfigDict(extra="forbid")

    colour: Literal["yellow", "red"] = Field(
        description="The listed colour. Kiosks show the worse of this and the signed colour; "
        "to take a pass off the list, DELETE its status."
    )
    reason: str = Field(
        min_length=1, max_length=pass_store.MAX_REASON_CHARS, description="Why, for the record."
    )

    @field_validator("reason")
    @classmethod
    def _printable(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("reason must not be blank")
        if any(ord(c) < 32 for c in value):
            raise ValueError("reason must not contain control characters")
        return value


class DeclarationPass(BaseModel):
    pass_id: str
    display_id: str
    kind: KindName
    colour: ColourName
    issued_at: datetime
    expires_at: datetime


class DeclarationRecord(BaseModel):
    """One stored declaration (one person), newest first in a search. Personal data: reads are audited."""

    id: int
    kind: KindName
    submission_id: str
    declared_by: int | None = Field(description="The declarant's declaration id for a family member.")
    relationship: str | None
    id_number: str
    full_name: str
    birth_date: date | None
    birth_year: int
    gender: str
    phone: str | None
    nationality: str
    province: str | None
    district: str | None
    commune: str | None
    address: str | None
    answers: dict[str, Any]
    colour: ColourName
    colour_reasons: list[str]
    created_at: datetime
    superseded_at: datetime | None
    superseded_by: int | None
    passes: list[DeclarationPass]


class SubmittedPass(BaseModel):
    """The pass issued for one person of a submitted declaration (print ``qr_text`` as the QR code)."""

    declaration_id: int
    pass_id: str
    display_id: str
    kind: KindName
    colour: ColourName
    reasons: list[str] = Field(description="Why this colour: stable codes from hub/pass_rules.py.")
    kid: str
    qr_text: str = Field(description="The signed pass, the text of its QR code (alphanumeric mode).")
    issued_at: datetime
    expires_at: datetime


class Submission(BaseModel):
    """What a declaration submission produced: one pass per person, the declarant first."""

    kind: KindName
    passes: list[SubmittedPass]


class DeclarationSearch(BaseModel):
    id_number: str
    declarations: list[DeclarationRecord]
    truncated: bool = Field(description=f"True when more than {SEARCH_LIMIT} declarations matched.")


# ------------------------------------------------------------------------------------------- helpers


def _now() -> datetime:
    return datetime.now(UTC)


def _error(
    status: int,
    error: str,
    message: str,
    fields: Mapping[str, str] | None = None,
    codes: Mapping[str, str] | None = None,
):
    body = ApiError(
        error=error,
        message=message,
        fields=dict(fields) if fields else None,
        codes=dict(codes) if codes else None,
    )
    return jsonify(body.model_dump(exclude_none=True)), status


def _json(model: BaseModel, status: int = 200):
    return jsonify(model.model_dump(mode="json")), status


def _raw_json(data: bytes) -> Response:
    return Response(data, mimetype="application/json")


def _validation_fields(exc: ValidationError) -> dict[str, str]:
    fields: dict[str, str] = {}
    for err in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(part) for part in err["loc"]) or "(body)"
        fields.setdefault(path, err["msg"])
    return fields


def _nul_path(value: Any) -> str | None:
    """The path of the first key or string holding a NUL character (PostgreSQL text cannot store it)."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:  # iterative: a deeply nested body must not exhaust the stack
        path, node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return path or "(body)"
        elif isinstance(node, Mapping):
            for key, item in node.items():
                child = f"{path}.{key}" if path else str(key)
                if "\x00" in str(key):
                    return child
                stack.append((child, item))
        elif isinstance(node, list):
            stack.extend((f"{path}.{i}" if path else str(i), item) for i, item in enumerate(node))
    return None


def _json_body() -> tuple[dict[str, Any] | None, Any]:
    """(body, None) for a JSON object body, else (None, the 400 or 422 answer)."""
    try:
        data = json.loads(request.get_data()) if request.is_json else None
    except (ValueError, RecursionError):  # malformed, not UTF-8, or nested too deeply
        data = None
    if not isinstance(data, dict):
        return None, _error(400, "bad_request", "send a JSON object with Content-Type: application/json")
    nul = _nul_path(data)
    if nul is not None:
        return None, _error(422, "invalid", "text must not contain NUL characters", {nul: "contains NUL"})
    return data, None


def _pass_info(conn, issued: pass_store.IssuedPass, now: datetime) -> PassInfo:
    listed = conn.execute(select(pass_status).where(pass_status.c.pass_id == issued.pass_id)).first()
    status = (
        None
        if listed is None
        else PassStatusEntry(
            colour=listed.colour, reason=listed.reason, changed_at=from_db_time(listed.changed_at)
        )
    )
    colour = issued.colour if status is None else Colour.worst(issued.colour, status.colour)
    return PassInfo(
        pass_id=issued.pass_id,
        display_id=issued.display_id,
        kind=issued.kind.value,
        signed_colour=issued.colour.value,
        colour=colour.value,
        status=status,
        kid=issued.kid,
        issued_at=issued.issued_at,
        expires_at=issued.expires_at,
        expired=issued.expires_at <= now,
    )


def _find_pass(conn, pass_id: str):
    """(pass, None) or (None, the 400/404 answer)."""
    if pass_store.normalise_pass_id(pass_id) is None:
        return None, _error(
            400, "bad_pass_id", "a pass id has 10 letters and digits, like ABCDE-FGHJK (hyphen optional)"
        )
    found = pass_store.get_pass(conn, pass_id)
    if found is None:
        return None, _error(404, "not_found", "no pass with this id")
    return found, None


PASS_ID_PARAM = Param(
    "pass_id",
    {"type": "string", "minLength": 1, "maxLength": 64, "examples": ["ABCDE-FGHJK"]},
    "The pass id, in any form a citizen types it: case, spaces and hyphens are ignored.",
)
ID_NUMBER_PARAM = Param(
    "id_number",
    {
        "type": "string",
        "minLength": 1,
        "maxLength": 32,
        "pattern": "^[0-9A-Za-z]+$",
        "examples": ["001090000123"],
    },
    "CCCD/CMND or passport number (case-insensitive).",
)


# ------------------------------------------------------------------------------------------- views


@bp.get("/stats")
@operation(
    summary="Ingest statistics",
    responses={200: ("Events stored, dead letters and every kiosk's last state.", Stats)},
    tags=["fleet"],
)
@token_required()
def stats():
    """Ingest statistics: events stored, dead letters, every kiosk's last state."""
    return jsonify(hub_web().store.stats())


@bp.get("/openapi.json")
@operation(
    summary="This API's OpenAPI 3.1 document",
    responses={200: ("The OpenAPI document, generated from the code.", {"type": "object"})},
    tags=["meta"],
)
@token_required()
def openapi_document():
    """The OpenAPI 3.1 document of this API (any token: it holds no personal data, only the API's shape)."""
    return jsonify(openapi_for(current_app))


def openapi_for(app) -> dict[str, Any]:
    """The app's OpenAPI document, built once per app."""
    doc = app.extensions.get(_OPENAPI_CACHE)
    if doc is None:
        doc = build_document(
            app,
            title="AnToan Check-in hub API",
            version=API_VERSION,
            description=(__doc__ or "").strip(),
            error_model=ApiError,
        )
        app.extensions[_OPENAPI_CACHE] = doc
    return doc


@bp.get("/v1/trust-list")
@operation(
    summary="Health-pass trust list",
    responses={200: ("The keys kiosks verify passes with (the retained MQTT message's JSON).", TrustListDoc)},
    tags=["passes"],
)
@token_required()
def trust_list():
    """The verification keys kiosks must trust now, with the list version (same JSON as the MQTT message)."""
    return _raw_json(hub_web().keyring.trust_list(_now()).to_json())


@bp.get("/v1/status-list")
@operation(
    summary="Pass status list",
    responses={
        200: ("Passes whose colour changed after issue (all MQTT shards in one document).", StatusListDoc)
    },
    tags=["passes"],
)
@token_required()
def status_list():
    """Unexpired passes whose colour changed after issue, with the version (the union of the MQTT shards)."""
    with hub_web().engine.connect() as conn:
        listed = pass_store.status_list(conn, _now())
    return _raw_json(listed.to_json())


@bp.get("/v1/passes/<pass_id>")
@operation(
    summary="A pass's kind, colours and validity",
    path=[PASS_ID_PARAM],
    responses={
        200: ("The pass (no personal data).", PassInfo),
        400: ("Not a pass id.", ApiError),
        404: ("No such pass.", ApiError),
    },
    tags=["passes"],
)
@token_required(*TRACING_ROLES)
def get_pass(pass_id: str):
    """A pass's kind, signed and current colour, status-list entry and validity."""
    now = _now()
    with hub_web().engine.connect() as conn:
        found, problem = _find_pass(conn, pass_id)
        if problem:
            return problem
        return _json(_pass_info(conn, found, now))


@bp.put("/v1/passes/<pass_id>/status")
@operation(
    summary="Flag a pass yellow or red",
    path=[PASS_ID_PARAM],
    request=StatusChange,
    responses={
        200: ("The pass with its new status.", PassInfo),
        400: ("Not a pass id, or the body is not a JSON object.", ApiError),
        404: ("No such pass.", ApiError),
        409: ("The pass has expired: its status no longer matters.", ApiError),
        413: ("The body is larger than the hub accepts.", ApiError),
        422: ("The body breaks a rule (see fields).", ApiError),
    },
    tags=["passes"],
)
@token_required(*TRACING_ROLES)
def set_pass_status(pass_id: str):
    """Put a pass on the status list (kiosks show it yellow or red) and bump the list version. Audited."""
    data, problem = _json_body()
    if problem:
        return problem
    try:
        change = StatusChange.model_validate(data)
    except ValidationError as exc:
        return _error(422, "invalid", "the status change is not valid", _validation_fields(exc))
    now = _now()
    with hub_web().engine.begin() as conn:
        found, problem = _find_pass(conn, pass_id)
        if problem:
            return problem
        if found.expires_at <= now:
            return _error(
                409, "expired", f"the pass expired at {found.expires_at.isoformat()}; kiosks refuse it anyway"
            )
        pass_store.set_status(conn, found.pass_id, change.colour, change.reason, now)
        audit(
            conn, "pass_status_set", "pass", found.pass_id, {"colour": change.colour, "reason": change.reason}
        )
        return _json(_pass_info(conn, found, now))


@bp.delete("/v1/passes/<pass_id>/status")
@operation(
    summary="Take a pass off the status list",
    path=[PASS_ID_PARAM],
    responses={
        200: ("The pass; its signed colour holds again.", PassInfo),
        400: ("Not a pass id.", ApiError),
        404: ("No such pass.", ApiError),
    },
    tags=["passes"],
)
@token_required(*TRACING_ROLES)
def clear_pass_status(pass_id: str):
    """Take a pass off the status list (its signed colour holds again), bump the version. Audited."""
    now = _now()
    with hub_web().engine.begin() as conn:
        found, problem = _find_pass(conn, pass_id)
        if problem:
            return problem
        pass_store.clear_status(conn, found.pass_id, now)
        audit(conn, "pass_status_cleared", "pass", found.pass_id)
        return _json(_pass_info(conn, found, now))


_SUBMIT_RESPONSES = {
    201: ("Saved; one pass per person, the declarant first.", Submission),
    400: ("The body is not a JSON object.", ApiError),
    413: ("The body is larger than the hub accepts.", ApiError),
    422: ("The declaration breaks a rule: every problem, by field path (fields, codes).", ApiError),
    503: ("The hub cannot sign passes (its signing key is unusable): tell the hub's admin.", ApiError),
}


def _submit(kind: str, validate, save):
    data, problem = _json_body()
    if problem:
        return problem
    try:
        model = validate(data)
    except DeclarationError as exc:
        return _error(
            422,
            "invalid",
            f"the declaration has {len(exc.problems)} problem(s); see fields",
            exc.errors,
            exc.codes,
        )
    web = hub_web()
    try:
        with web.engine.begin() as conn:
            saved = save(conn, model, keyring=web.keyring, settings=web.config.passes, now=_now())
            audit(
                conn,
                "declaration_submitted",
                "declaration",
                saved[0].declaration_id,
                {"kind": kind, "people": len(saved), "via": "api"},
            )
    except KeyRingError as exc:
        current_app.logger.error("cannot sign passes: %s", exc)
        return _error(503, "signing_unavailable", "the hub cannot sign passes now; tell the hub's admin")
    passes_out = [
        SubmittedPass(
            declaration_id=item.declaration_id,
            pass_id=item.pass_.pass_id,
            display_id=item.pass_.display_id,
            kind=item.pass_.kind.value,
            colour=item.colour.value,
            reasons=list(item.reasons),
            kid=item.pass_.kid,
            qr_text=item.pass_.qr_text,
            issued_at=item.pass_.issued_at,
            expires_at=item.pass_.expires_at,
        )
        for item in saved
    ]
    return _json(Submission(kind=kind, passes=passes_out), 201)


@bp.post("/v1/declarations/ncovi")
@operation(
    summary="Submit an NCOVI declaration",
    request=NcoviDeclaration,
    responses=_SUBMIT_RESPONSES,
    tags=["declarations"],
)
@token_required(*TRACING_ROLES)
def submit_ncovi():
    """Save an NCOVI declaration (a declarant and up to 10 family members) and issue their passes.

    Validated exactly as the public form is; a person's earlier declaration is superseded. For systems
    such as a health post's terminal; citizens use the public form. Audited.
    """
    return _submit("ncovi", validate_ncovi, save_ncovi)


@bp.post("/v1/declarations/vhd")
@operation(
    summary="Submit a VHD (entry) declaration",
    request=VhdDeclaration,
    responses=_SUBMIT_RESPONSES,
    tags=["declarations"],
)
@token_required(*TRACING_ROLES)
def submit_vhd():
    """Save an entrant's VHD declaration and issue the pass, e.g. from a border-gate terminal.

    Validated exactly as the public form is; the entrant's earlier declaration is superseded. Audited.
    """
    return _submit("vhd", validate_vhd, save_vhd)


@bp.get("/v1/declarations")
@operation(
    summary="Declarations of one person",
    query=[ID_NUMBER_PARAM],
    responses={
        200: ("Every declaration with this id number, newest first, with its passes.", DeclarationSearch),
        400: ("No or a malformed id_number.", ApiError),
    },
    tags=["declarations"],
)
@token_required(*TRACING_ROLES)
def search_declarations():
    """Every declaration (history included) of the person with this CCCD/CMND or passport number. Audited."""
    raw = request.args.get("id_number", "")
    # Separators are dropped as hub/declarations.py does when it stores the number.
    id_number = "".join(raw.split()).translate(_ID_SEPARATORS).upper()
    if not 1 <= len(id_number) <= 32 or not id_number.isascii() or not id_number.isalnum():
        return _error(
            400, "bad_request", "id_number must be 1 to 32 letters and digits (CCCD/CMND or passport)"
        )
    with hub_web().engine.begin() as conn:
        rows = conn.execute(
            select(declarations_table)
            .where(declarations_table.c.id_number == id_number)
            .order_by(declarations_table.c.created_at.desc(), declarations_table.c.id.desc())
            .limit(SEARCH_LIMIT + 1)
        ).all()
        truncated = len(rows) > SEARCH_LIMIT
        records = [_declaration_record(conn, row) for row in rows[:SEARCH_LIMIT]]
        audit(
            conn,
            "declarations_search",
            "id_number",
            id_number,
            {"results": len(records), "via": "api"},
        )
    return _json(DeclarationSearch(id_number=id_number, declarations=records, truncated=truncated))


def _declaration_record(conn, row) -> DeclarationRecord:
    issued = pass_store.passes_for_declaration(conn, row.id)
    return DeclarationRecord(
        id=row.id,
        kind=row.kind,
        submission_id=row.submission_id,
        declared_by=row.declared_by,
        relationship=row.relationship,
        id_number=row.id_number,
        full_name=row.full_name,
        birth_date=row.birth_date,
        birth_year=row.birth_year,
        gender=row.gender,
        phone=row.phone,
        nationality=row.nationality,
        province=row.province,
        district=row.district,
        commune=row.commune,
        address=row.address,
        answers=dict(row.answers or {}),
        colour=row.colour,
        colour_reasons=list(row.colour_reasons or []),
        created_at=from_db_time(row.created_at),
        superseded_at=None if row.superseded_at is None else from_db_time(row.superseded_at),
        superseded_by=row.superseded_by,
        passes=[
            DeclarationPass(
                pass_id=p.pass_id,
                display_id=p.display_id,
                kind=p.kind.value,
                colour=p.colour.value,
                issued_at=p.issued_at,
                expires_at=p.expires_at,
            )
            for p in issued
        ],
    )


@bp.get("/v1/kiosks")
@operation(
    summary="The kiosk fleet",
    responses={200: ("Every kiosk's latest state, by kiosk id.", KioskFleet)},
    tags=["fleet"],
)
@token_required(*FLEET_ROLES)
def kiosks():
    """Every kiosk's latest state (online/offline, version, outbox depth, list ages, last seen)."""
    states = [KioskState.model_validate(k) for k in hub_web().store.kiosks()]
    fleet = KioskFleet(kiosks=states, count=len(states), online=sum(k.status == "online" for k in states))
    return _json(fleet)


# ------------------------------------------------------------------------------- kiosk enrolment

#: ``app.extensions`` key holding :class:`hub.devices.EnrolmentSettings` that override the config's
#: (tests; until HubConfig has an ``enrolment`` section).
ENROLMENT_EXTENSION = "antoan_enrolment"
#: The CA key's passphrase, as for ``antoan-provision``.
CA_PASSPHRASE_ENV = "ANTOAN_CA_PASSPHRASE"
_PEM_MAX = 16 * 1024


class EnrolRequest(BaseModel):
    """A kiosk's first contact: its enrolment token and a CSR for the key it made."""

    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=8, max_length=128, description="The enrolment token (bundle or QR code).")
    csr: str = Field(min_length=1, max_length=_PEM_MAX, description="PEM certificate signing request.")
    kiosk_id: str | None = Field(
        default=None, max_length=64, description="The kiosk id the bundle names; must be the token's."
    )
    venue_id: str | None = Field(
        default=None, max_length=64, description="The venue id the bundle names; must be the token's."
    )


class RenewRequest(BaseModel):
    """A certificate renewal over the kiosk's existing identity."""

    model_config = ConfigDict(extra="forbid")

    certificate: str = Field(
        min_length=1, max_length=_PEM_MAX, description="The kiosk's current PEM certificate."
    )
    csr: str = Field(min_length=1, max_length=_PEM_MAX, description="PEM CSR for the kiosk's new key.")
    signature: str = Field(
        min_length=1,
        max_length=512,
        description="Base64 ECDSA-SHA256 signature over the CSR's bytes by the current certificate's key.",
    )


class MqttEndpoint(BaseModel):
    host: str
    port: int


class EnrolResult(BaseModel):
    """What an enrolled (or renewed) kiosk writes to its configuration."""

    kiosk_id: str
    venue_id: str
    venue_name: str
    certificate: str = Field(description="The kiosk's PEM client certificate (CN = kiosk id).")
    ca_certificate: str = Field(description="The hub CA's PEM certificate (the broker's too).")
    cert_not_after: datetime
    mqtt: MqttEndpoint
    identity_key: str = Field(
        description="The hub's X25519 public key (base64) that ID-card identities are sealed to."
    )


_ENROL_ERRORS = {
    400: ("The body is not a JSON object.", ApiError),
    403: ("The token or renewal proof is refused; ``error`` says why.", ApiError),
    422: ("The request is invalid (e.g. not a CSR).", ApiError),
    429: ("Too many requests from this address.", ApiError),
    409: ("The hub has no CA to sign with yet.", ApiError),
}


def _enrolment() -> device_store.EnrolmentSettings:
    override = current_app.extensions.get(ENROLMENT_EXTENSION)
    return override if override is not None else device_store.enrolment_settings(hub_web().config)


def _open_ca() -> HubCA | None:
    passphrase = os.environ.get(CA_PASSPHRASE_ENV)
    try:
        return HubCA.open(_enrolment().ca_dir, passphrase=passphrase.encode() if passphrase else None)
    except PkiError as exc:
        current_app.logger.error("enrolment unavailable: %s", exc)
        return None


def _enrol_result(done: device_store.Enrolled):
    return _json(
        EnrolResult(
            kiosk_id=done.kiosk_id,
            venue_id=done.venue_id,
            venue_name=done.venue_name,
            certificate=done.cert_pem,
            ca_certificate=done.ca_pem,
            cert_not_after=done.cert_not_after,
            mqtt=MqttEndpoint(host=done.broker_host, port=done.broker_port),
            identity_key=hub_web().identity.public_key_b64,
        ),
        201,
    )


def _device_call(model: type[BaseModel], call):
    data, problem = _json_body()
    if problem is not None:
        return problem
    try:
        body = model.model_validate(data)
    except ValidationError as exc:
        return _error(422, "invalid", "the request is invalid", _validation_fields(exc))
    ca = _open_ca()
    if ca is None:
        return _error(409, "not_ready", "this hub cannot enrol kiosks yet: its CA is not set up")
    try:
        return _enrol_result(call(body, ca))
    except device_store.EnrolmentRefused as exc:
        return _error(403, exc.code, str(exc))
    except device_store.DeviceError as exc:
        return _error(422, exc.code, str(exc))


@bp.get("/v1/ca.pem")
@operation(
    summary="The hub CA certificate",
    responses={
        200: ("The CA certificate (PEM, application/x-pem-file); pin its SHA-256 fingerprint.", None),
        404: ("The hub has no CA yet.", ApiError),
    },
    tags=["enrolment"],
)
@public_view
def ca_certificate():
    """The hub CA's certificate. Public: a kiosk accepts it only if its fingerprint is the pinned one."""
    layout = CaLayout(_enrolment().ca_dir)
    if not _ca_usable(layout):
        return _error(404, "not_found", "this hub has no CA yet: run `antoan-provision ca init`")
    return Response(layout.ca_cert.read_bytes(), mimetype="application/x-pem-file")


def _ca_usable(layout: CaLayout) -> bool:
    """Whether the CA opens with the configured passphrase, checked once per version of its files.

    This URL is public and unthrottled: opening the CA decrypts its key, which must not happen per request.
    """
    try:
        stamp = tuple(path.stat().st_mtime_ns for path in (layout.ca_cert, layout.ca_key))
    except OSError:
        return False
    return _ca_opens(str(layout.root), stamp, os.environ.get(CA_PASSPHRASE_ENV))


@functools.lru_cache(maxsize=8)
def _ca_opens(root: str, _files_stamp: tuple[int, ...], passphrase: str | None) -> bool:
    """Cached by the CA folder, its files' modification times and the passphrase."""
    try:
        HubCA.open(Path(root), passphrase=passphrase.encode() if passphrase else None)
    except PkiError as exc:
        current_app.logger.error("enrolment unavailable: %s", exc)
        return False
    return True


@bp.post("/v1/enrol")
@operation(
    summary="Enrol a kiosk",
    request=EnrolRequest,
    responses={
        201: ("The kiosk's certificate, the CA and its venue and broker.", EnrolResult),
        **_ENROL_ERRORS,
    },
    tags=["enrolment"],
)
@limiter.limit(public_form_rate)
@public_view
def enrol():
    """Spend a single-use enrolment token on a client certificate for the kiosk's own key.

    The token in the body is the credential. Refusals (403) name the reason: ``unknown_token``,
    ``token_expired``, ``token_used``, ``not_approved``, ``mismatch``, ``revoked``.
    """

    def call(body: EnrolRequest, ca: HubCA):
        return device_store.redeem(
            hub_web().engine,
            token=body.token,
            csr_pem=body.csr.encode(),
            ca=ca,
            now=_now(),
            settings=_enrolment(),
            kiosk_id=body.kiosk_id,
            venue_id=body.venue_id,
        )

    return _device_call(EnrolRequest, call)


@bp.post("/v1/renew")
@operation(
    summary="Renew a kiosk certificate",
    request=RenewRequest,
    responses={
        201: ("The kiosk's new certificate; the old one stays valid until it expires.", EnrolResult),
        **_ENROL_ERRORS,
    },
    tags=["enrolment"],
)
@limiter.limit(public_form_rate)
@public_view
def renew():
    """Issue a new certificate to a kiosk that proves it holds its current one (certificate + signature)."""

    def call(body: RenewRequest, ca: HubCA):
        return device_store.renew(
            hub_web().engine,
            cert_pem_text=body.certificate.encode(),
            csr_pem=body.csr.encode(),
            signature=body.signature,
            ca=ca,
            now=_now(),
            settings=_enrolment(),
        )

    return _device_call(RenewRequest, call)
