"""The cases part of the JSON API (``/api/v1/cases``): open a case, read it, page its contacts, decide.

Bearer tokens of ``health_official`` or ``admin`` only. Every read of a case or its contacts and every
change is written to the audit log (opening and decisions by :mod:`hub.cases`, reads here). Errors
follow :mod:`hub.web.api`: JSON ``{"error", "message"}`` in English; 400 unreadable input, 404 no such
case or contact, 422 input that breaks a rule (the engine's :class:`hub.cases.CaseError` message).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Literal

from flask import Blueprint, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select

from hub import people
from hub.cases import CaseError, counts, decide, open_case, resolve_subject
from hub.db import from_db_time, from_epoch_s, writing
from hub.db.schema import case_contacts
from hub.openapi import Param, operation
from hub.web.api import TRACING_ROLES, ApiError, _error, _json, _json_body, _validation_fields
from hub.web.auth import token_required
from hub.web.cases import (
    MAX_PAGE,
    PAGE_SIZE,
    ContactView,
    case_row,
    contact_rows,
    contact_views,
    phone_is_valid,
)
from hub.web.extensions import actor, audit, hub_web

bp = Blueprint("api_cases", __name__, url_prefix="/api/v1/cases")

F2State = Literal["pending", "running", "done", "failed"]
Decision = Literal["confirmed", "dismissed", "suggested"]

CASE_ID_PARAM = Param("case_id", {"type": "integer", "minimum": 1, "examples": [1]}, "The case number.")
PERSON_ID_PARAM = Param(
    "person_id",
    {"type": "integer", "minimum": 1, "examples": [1]},
    "The contact's person number (hub-internal).",
)


# ------------------------------------------------------------------------------------------- models


class CaseCreate(BaseModel):
    """A new case: exactly one of declaration_id, pass_id, cccd_number, phone, and at least one date."""

    model_config = ConfigDict(extra="forbid")

    declaration_id: int | None = Field(default=None, ge=1, le=2**62, description="A declaration number.")
    pass_id: str | None = Field(default=None, min_length=1, max_length=64, examples=["ABCDE-FGHJK"])
    cccd_number: str | None = Field(default=None, min_length=1, max_length=20, examples=["001090000123"])
    phone: str | None = Field(default=None, min_length=1, max_length=20, examples=["0912345678"])
    onset_date: date | None = Field(
        default=None, description="Onset of symptoms (a Vietnamese calendar day)."
    )
    test_date: date | None = Field(default=None, description="Date of the positive test.")
    note: str | None = Field(default=None, max_length=2000)


class CaseCreated(BaseModel):
    case_id: int
    f1_count: int = Field(description="F1 found at once (stored with the case).")
    f2_state: F2State = Field(description="The F2 job is queued; follow it with GET /api/v1/cases/{case_id}.")


class CaseDoc(BaseModel):
    """A case with its counts and the F2 job's progress."""

    id: int
    label: str
    opened_from: Literal["declaration", "pass", "cccd", "phone"]
    declaration_id: int | None
    onset_date: date | None
    test_date: date | None
    window_start: datetime
    window_end: datetime
    status: str
    created_by: str
    created_at: datetime
    f1_count: int
    f2_state: F2State
    f2_progress: float = Field(ge=0, le=1)
    f2_count: int
    f2_error: str | None
    counts: dict[str, int] = Field(
        description='Contacts by degree and status, e.g. {"F1": 3, "F1 confirmed": 1}.'
    )


class PersonDoc(BaseModel):
    """Who a contact is, as far as the hub knows (personal data: reads are audited)."""

    source: Literal["declaration", "card", "pass", "unknown"]
    full_name: str | None
    phone: str | None
    birth_year: int | None
    id_last4: str | None = Field(description="The last 4 characters of the ID number only.")
    pass_ids: list[str]
    declaration_id: int | None


class ReasonDoc(BaseModel):
    """One encounter: at a venue, with whom, when, for how long."""

    venue_id: str
    venue_name: str
    start: datetime
    end: datetime
    minutes: int
    via_person_id: int
    source: str = Field(description="venue (check-ins) or ble.")


class ContactDoc(BaseModel):
    person_id: int
    degree: int = Field(ge=1, le=2)
    status: Decision
    first_contact: datetime
    last_contact: datetime
    longest_overlap_minutes: int
    encounters: int = Field(description="Every encounter found; reasons holds the first of them.")
    via_person_id: int
    reasons: list[ReasonDoc]
    person: PersonDoc
    decided_by: str | None
    decided_at: datetime | None


class ContactPage(BaseModel):
    case_id: int
    degree: int
    page: int
    page_size: int
    has_next: bool
    contacts: list[ContactDoc]


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Decision = Field(
        description="confirmed or dismissed (a dismissal takes this case's colour off their passes), "
        "or suggested to undo a decision."
    )


# ------------------------------------------------------------------------------------------- helpers


def _now() -> datetime:
    return datetime.now(UTC)


def _contact_doc(view: ContactView) -> ContactDoc:
    row, person = view.row, view.person
    return ContactDoc(
        person_id=int(row.person_id),
        degree=int(row.degree),
        status=row.status,
        first_contact=from_epoch_s(row.first_contact_s),
        last_contact=from_epoch_s(row.last_contact_s),
        longest_overlap_minutes=int(row.overlap_s) // 60,
        encounters=int(row.encounters),
        via_person_id=int(row.via_person_id),
        reasons=[
            ReasonDoc(
                venue_id=r.venue_id,
                venue_name=r.venue_name,
                start=from_epoch_s(r.start_s),
                end=from_epoch_s(r.end_s),
                minutes=r.minutes,
                via_person_id=r.via_person_id,
                source=r.source,
            )
            for r in view.reasons
        ],
        person=PersonDoc(
            source=person.source,
            full_name=person.full_name,
            phone=person.phone,
            birth_year=person.birth_year,
            id_last4=person.id_last4,
            pass_ids=list(person.pass_ids),
            declaration_id=person.declaration_id,
        ),
        decided_by=row.decided_by,
        decided_at=None if row.decided_at is None else from_db_time(row.decided_at),
    )


def _int_arg(name: str, default: int, low: int, high: int) -> int | None:
    value = request.args.get(name)
    if value is None:
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        return None
    return int(value)


_NOT_FOUND = ("No such case (or no such contact of it).", ApiError)


# ------------------------------------------------------------------------------------------- views


@bp.post("")
@operation(
    summary="Open a case (F0)",
    request=CaseCreate,
    responses={
        201: ("The case is open with its F1; the F2 job is queued.", CaseCreated),
        400: ("The body is not a JSON object.", ApiError),
        413: ("The body is larger than the hub accepts.", ApiError),
        422: ("The request breaks a rule (see message, or fields).", ApiError),
    },
    tags=["cases"],
)
@token_required(*TRACING_ROLES)
def create_case():
    """Open a case from exactly one of a declaration, a pass id, a CCCD number or a phone number, with the
    onset and/or test date. The F1 are found and their passes raised at once; F2 runs as a job. Audited."""
    data, problem = _json_body()
    if problem:
        return problem
    try:
        body = CaseCreate.model_validate(data)
    except ValidationError as exc:
        return _error(422, "invalid", "the case request is not valid", _validation_fields(exc))
    if body.phone is not None and not phone_is_valid(body.phone):
        return _error(
            422, "invalid", "the phone number is not a Vietnamese phone number", {"phone": "not valid"}
        )
    web = hub_web()
    people.prepare(web.identity)
    now = _now()
    name, role = actor()

    try:
        with writing(web.engine).begin() as conn:
            subject = resolve_subject(
                conn,
                web.identity,
                declaration_id=body.declaration_id,
                pass_id=body.pass_id,
                cccd_number=body.cccd_number,
                phone=body.phone,
                now=now,
            )
        case_id = open_case(
            web.engine,
            web.identity,
            subject,
            onset_date=body.onset_date,
            test_date=body.test_date,
            rules=web.config.tracing,
            actor=name,
            role=role,
            note=(body.note or "").strip() or None,
            remote_addr=request.remote_addr,
            now=now,
            index=web.tracing_jobs.index,
        )
    except CaseError as exc:
        return _error(422, "invalid", str(exc))
    web.tracing_jobs.submit(case_id)
    with web.engine.connect() as conn:
        row = case_row(conn, case_id)
    return _json(CaseCreated(case_id=case_id, f1_count=int(row.f1_count), f2_state=row.f2_state), 201)


@bp.get("/<int:case_id>")
@operation(
    summary="A case: window, counts, F2 progress",
    path=[CASE_ID_PARAM],
    responses={200: ("The case.", CaseDoc), 404: _NOT_FOUND},
    tags=["cases"],
)
@token_required(*TRACING_ROLES)
def get_case(case_id: int):
    """A case with its window, contacts counted by degree and status, and the F2 job's progress. Audited."""
    web = hub_web()
    with writing(web.engine).begin() as conn:
        row = case_row(conn, case_id)
        if row is None:
            return _error(404, "not_found", "no case with this number")
        tally = counts(conn, case_id)
        audit(conn, "case_view", "case", case_id, {"via": "api"})
    if row.f2_state in ("pending", "running"):
        web.tracing_jobs  # noqa: B018  (resumes a job a restart interrupted)
    return _json(
        CaseDoc(
            id=row.id,
            label=row.label,
            opened_from=row.opened_from,
            declaration_id=row.declaration_id,
            onset_date=row.onset_date,
            test_date=row.test_date,
            window_start=from_epoch_s(row.window_start_s),
            window_end=from_epoch_s(row.window_end_s),
            status=row.status,
            created_by=row.created_by,
            created_at=from_db_time(row.created_at),
            f1_count=row.f1_count,
            f2_state=row.f2_state,
            f2_progress=float(row.f2_progress),
            f2_count=row.f2_count,
            f2_error=row.f2_error,
            counts=tally,
        )
    )


@bp.get("/<int:case_id>/contacts")
@operation(
    summary="One page of a case's F1 or F2",
    path=[CASE_ID_PARAM],
    query=[
        Param(
            "degree", {"type": "integer", "enum": [1, 2], "default": 1}, "1 for F1, 2 for F2.", required=False
        ),
        Param(
            "page",
            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1},
            f"Page number, {PAGE_SIZE} contacts a page.",
            required=False,
        ),
    ],
    responses={
        200: ("The contacts with who they are and why they are listed.", ContactPage),
        400: ("degree or page is not valid.", ApiError),
        404: _NOT_FOUND,
    },
    tags=["cases"],
)
@token_required(*TRACING_ROLES)
def list_contacts(case_id: int):
    """A page of the case's F1 (closest first) or F2, each with name, phone, birth year, the last 4 of the
    ID number, passes and encounters. Audited with the people returned."""
    degree = _int_arg("degree", 1, 1, 2)
    page = _int_arg("page", 1, 1, MAX_PAGE)
    if degree is None or page is None:
        return _error(400, "bad_request", f"degree must be 1 or 2 and page 1 to {MAX_PAGE}")
    web = hub_web()
    people.prepare(web.identity)
    now = _now()
    with writing(web.engine).begin() as conn:
        if case_row(conn, case_id) is None:
            return _error(404, "not_found", "no case with this number")
        rows, has_next = contact_rows(conn, case_id, degree, page)
        views, _who, _names = contact_views(conn, web.identity, rows, now=now)
        persons = sorted(v.person.person_id for v in views)
        audit(
            conn,
            "case_contacts_view",
            "case",
            case_id,
            {"via": "api", "degree": degree, "page": page, "persons": persons},
        )
    return _json(
        ContactPage(
            case_id=case_id,
            degree=degree,
            page=page,
            page_size=PAGE_SIZE,
            has_next=has_next,
            contacts=[_contact_doc(v) for v in views],
        )
    )


@bp.post("/<int:case_id>/contacts/<int:person_id>")
@operation(
    summary="Confirm, dismiss or reset a contact",
    path=[CASE_ID_PARAM, PERSON_ID_PARAM],
    request=DecisionRequest,
    responses={
        200: ("The contact with its new status.", ContactDoc),
        400: ("The body is not a JSON object.", ApiError),
        404: _NOT_FOUND,
        413: ("The body is larger than the hub accepts.", ApiError),
        422: ("The body breaks a rule (see fields).", ApiError),
    },
    tags=["cases"],
)
@token_required(*TRACING_ROLES)
def decide_contact(case_id: int, person_id: int):
    """Set a contact's status; a dismissal takes the colour this case gave their passes off the status
    list, undoing it raises the colour again. Audited."""
    data, problem = _json_body()
    if problem:
        return problem
    try:
        body = DecisionRequest.model_validate(data)
    except ValidationError as exc:
        return _error(422, "invalid", "the decision is not valid", _validation_fields(exc))
    web = hub_web()
    with web.engine.connect() as conn:
        before = conn.execute(
            select(case_contacts.c.status, case_contacts.c.degree).where(
                case_contacts.c.case_id == case_id, case_contacts.c.person_id == person_id
            )
        ).first()
    if before is None:
        return _error(404, "not_found", f"person {person_id} is not a contact of case {case_id}")
    name, role = actor()
    now = _now()
    try:
        decide(
            writing(web.engine),
            case_id,
            person_id,
            body.decision,
            actor=name,
            rules=web.config.tracing,
            role=role,
            remote_addr=request.remote_addr,
            now=now,
        )
    except CaseError as exc:
        return _error(404, "not_found", str(exc))
    people.prepare(web.identity)
    with web.engine.connect() as conn:
        row = conn.execute(
            select(case_contacts).where(
                case_contacts.c.case_id == case_id, case_contacts.c.person_id == person_id
            )
        ).one()
        (view,), _who, _names = contact_views(conn, web.identity, [row], now=now, link=False)
    return _json(_contact_doc(view))
