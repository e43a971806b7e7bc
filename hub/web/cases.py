"""Health officials' case pages under ``/admin/cases``: open a case (F0), its F1/F2 with reasons, CSV.

Who: ``health_official`` and ``admin`` (every view carries :func:`hub.web.auth.roles_required`).

- ``/admin/cases/`` the cases, newest first, with their F1 count and the F2 job's state;
- ``/admin/cases/new`` open a case from exactly one of a declaration number, a pass id, a CCCD number or
  a phone number, with the onset and/or test date (:func:`hub.cases.resolve_subject`,
  :func:`hub.cases.open_case`); the F2 job is then handed to the app's :class:`hub.cases.TracingJobs`;
- ``/admin/cases/<id>`` the case: the F0, the window, the venues the F0 visited in it, the F1 and F2
  (paged) with who they are (:mod:`hub.people`, only for the rows shown), each encounter (venue, time in
  Vietnam, overlap, via whom), and confirm / dismiss / reset buttons (:func:`hub.cases.decide`);
- ``/admin/cases/<id>/progress`` the F2 job's state as JSON (polled by ``static/cases.js``);
- ``/admin/cases/<id>/export.csv`` (POST) every contact as CSV for the district health office: UTF-8 with
  a BOM (Excel shows Vietnamese), formula injection neutralised, streamed in chunks.

Every list, case view and export writes an audit entry (who, which case, which people were shown) in
the transaction of the read. On SQLite those transactions, and the engine calls that read before they
write (:func:`hub.cases.resolve_subject`, :func:`hub.cases.decide`, the F2 job), run through
:func:`hub.db.writing`: SQLite refuses at once, without waiting, a transaction that has read and then asks
to write while another connection (the F2 worker, the bridge) holds the write lock or has committed since.
The progress endpoint holds only counts and is not audited (it is polled every few seconds).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_babel import format_datetime
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from pydantic_core import PydanticCustomError
from sqlalchemy import Connection, Engine, select
from wtforms import StringField, TextAreaField
from wtforms.validators import AnyOf, Length, Optional, Regexp

from hub import people
from hub.accounts import Role
from hub.cases import VIETNAM, CaseError, counts, decide, open_case, resolve_subject
from hub.db import from_epoch_s, writing
from hub.db.schema import case_contacts, cases, venues
from hub.declarations import normalise_phone
from hub.identity import HubIdentity, link_declarations
from hub.passes import display_pass_id
from hub.presence import kiosk_of_venue
from hub.tracing import Presence, presences_of
from hub.venue_flags import clear_after
from hub.web.auth import roles_required
from hub.web.extensions import actor, audit, hub_web

bp = Blueprint("cases", __name__, url_prefix="/admin/cases")

CASE_ROLES = (Role.HEALTH_OFFICIAL, Role.ADMIN)
#: Contacts per page of the F1 and F2 lists.
PAGE_SIZE = 50
#: Cases per page of the case list.
LIST_PAGE_SIZE = 30
#: Highest page number accepted (a 300k F2 list has 6000 pages of 50).
MAX_PAGE = 20_000
#: Contacts read, described and written per step of the CSV export.
EXPORT_CHUNK = 1000
DECISIONS = ("confirmed", "dismissed", "suggested")
RUNNING = ("pending", "running")


def N_(message: str) -> str:
    """Mark a message for extraction; it is translated where it is shown."""
    return message


F2_STATE_LABELS = {
    "pending": _l("waiting to start"),
    "running": _l("running"),
    "done": _l("done"),
    "failed": _l("failed"),
}
STATUS_LABELS = {
    "suggested": _l("Suggested"),
    "confirmed": _l("Confirmed"),
    "dismissed": _l("Dismissed"),
}
OPENED_FROM_LABELS = {
    "declaration": _l("declaration"),
    "pass": _l("pass"),
    "cccd": _l("CCCD number"),
    "phone": _l("phone number"),
}
SOURCE_LABELS = {
    "declaration": _l("declaration"),
    "card": _l("ID card scanned at a kiosk"),
    "pass": _l("pass only (not declared here)"),
    "unknown": _l("unknown"),
}

# The engine's CaseError messages (English, hub/cases.py), each with the field it concerns and the
# message shown instead. tests/hub/test_cases_web.py triggers every one of them through the form.
_CASE_ERRORS: tuple[tuple[re.Pattern[str], str | None, str], ...] = (
    (
        re.compile(r"^give exactly one of"),
        None,
        N_("Give exactly one of: a declaration number, a pass id, a CCCD number or a phone number."),
    ),
    (
        re.compile(r"^the pass id is not in the form"),
        "pass_id",
        N_("This is not a pass id: it has 10 letters and digits, like ABCDE-FGHJK."),
    ),
    (
        re.compile(r"^the CCCD number is not a valid"),
        "cccd_number",
        N_("This is not a valid CCCD number (12 digits)."),
    ),
    (
        re.compile(r"^the phone number is not a Vietnamese"),
        "phone",
        N_("This is not a Vietnamese phone number."),
    ),
    (
        re.compile(r"^no current declaration has this phone number"),
        "phone",
        N_("No current declaration has this phone number; open the case from the declaration."),
    ),
    (
        re.compile(r"^(?P<n>\d+) people declared this phone number"),
        "phone",
        N_(
            "%(n)s people declared this phone number (a family); open the case from the person's declaration."
        ),
    ),
    (
        re.compile(r"^there is no declaration"),
        "declaration_id",
        N_("There is no declaration with this number."),
    ),
    (
        re.compile(r"^give the onset date or the test date"),
        "onset_date",
        N_("Give the onset date or the test date: the look-back window starts from it."),
    ),
    (
        re.compile(r"^the onset or test date is in the future"),
        "onset_date",
        N_("The onset or test date is in the future."),
    ),
)


def case_error_message(exc: CaseError) -> tuple[str | None, str]:
    """``(form field or None, message in the current language)`` for an engine :class:`CaseError`."""
    text = str(exc)
    for pattern, field_name, message in _CASE_ERRORS:
        match = pattern.match(text)
        if match:
            return field_name, _(message, **match.groupdict())
    return None, _("The case could not be opened: %(reason)s", reason=text)


def _now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------------------------------------- forms

_DATE_RE = r"^\d{4}-\d{2}-\d{2}$"


def _parse_date(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def phone_is_valid(phone: str) -> bool:
    """Whether :func:`hub.declarations.normalise_phone` takes ``phone`` as a Vietnamese number.

    :func:`hub.cases.resolve_subject` lets that function's own (pydantic) error through for a malformed
    phone, instead of a :class:`CaseError`, so the phone is checked before the engine sees it.
    """
    try:
        return normalise_phone(phone) is not None
    except PydanticCustomError:
        return False


class CaseForm(FlaskForm):
    """A new case: who (exactly one way of naming them), when (onset and/or test date), a note."""

    declaration_id = StringField(
        _l("Declaration number"),
        validators=[Optional(), Regexp(r"^\d{1,15}$", message=_l("A declaration number has digits only."))],
    )
    pass_id = StringField(_l("Pass id"), validators=[Optional(), Length(max=32, message=_l("Too long."))])
    cccd_number = StringField(
        _l("CCCD number"), validators=[Optional(), Length(max=20, message=_l("Too long."))]
    )
    phone = StringField(_l("Phone"), validators=[Optional(), Length(max=20, message=_l("Too long."))])
    onset_date = StringField(
        _l("Onset of symptoms"),
        validators=[Optional(), Regexp(_DATE_RE, message=_l("Enter a date as YYYY-MM-DD."))],
        render_kw={"type": "date"},
    )
    test_date = StringField(
        _l("Positive test"),
        validators=[Optional(), Regexp(_DATE_RE, message=_l("Enter a date as YYYY-MM-DD."))],
        render_kw={"type": "date"},
    )
    note = TextAreaField(
        _l("Note"), validators=[Optional(), Length(max=2000, message=_l("At most 2000 characters."))]
    )

    SUBJECT_FIELDS = ("declaration_id", "pass_id", "cccd_number", "phone")

    def validate(self, extra_validators=None) -> bool:
        ok = super().validate(extra_validators)
        given = [name for name in self.SUBJECT_FIELDS if (getattr(self, name).data or "").strip()]
        if len(given) != 1:
            self.form_errors.append(
                _("Give exactly one of: a declaration number, a pass id, a CCCD number or a phone number.")
            )
            ok = False
        for name in ("onset_date", "test_date"):
            date_field = getattr(self, name)
            if date_field.data and not date_field.errors and _parse_date(date_field.data) is None:
                date_field.errors.append(_("There is no such date."))
                ok = False
        if (self.phone.data or "").strip() and not self.phone.errors and not phone_is_valid(self.phone.data):
            self.phone.errors.append(_("This is not a Vietnamese phone number."))
            ok = False
        if not (self.onset_date.data or self.test_date.data):
            self.onset_date.errors.append(_("Give the onset date or the test date."))
            ok = False
        return ok

    def subject(self) -> dict:
        """The keyword arguments of :func:`hub.cases.resolve_subject` (exactly one is set)."""
        declaration = (self.declaration_id.data or "").strip()
        return {
            "declaration_id": int(declaration) if declaration else None,
            "pass_id": (self.pass_id.data or "").strip() or None,
            "cccd_number": (self.cccd_number.data or "").strip() or None,
            "phone": (self.phone.data or "").strip() or None,
        }


class DecisionForm(FlaskForm):
    """A contact's new status (the pressed button's value) and the pages to return to."""

    decision = StringField(validators=[AnyOf(DECISIONS)])
    f1_page = StringField(validators=[Optional(), Regexp(r"^\d{1,5}$")])
    f2_page = StringField(validators=[Optional(), Regexp(r"^\d{1,5}$")])


class ExportForm(FlaskForm):
    """The export button: only the CSRF token (an export is written to the audit log)."""


# ------------------------------------------------------------------------------------- reading a case


@dataclass(frozen=True, slots=True)
class VenueWindow:
    """The F0's presences at one venue within the case window."""

    venue_id: str
    name: str
    first_arrive_s: int
    last_depart_s: int
    visits: int


@dataclass(frozen=True, slots=True)
class Reason:
    """One encounter that made someone a contact, ready to show."""

    venue_id: str
    venue_name: str
    start_s: int
    end_s: int
    minutes: int
    via_person_id: int
    source: str


@dataclass(slots=True)
class ContactView:
    """A contact row with who they are and why they are listed."""

    row: object
    person: people.Person
    reasons: list[Reason] = field(default_factory=list)

    @property
    def more(self) -> int:
        """Encounters beyond the stored reasons."""
        return max(0, int(self.row.encounters) - len(self.reasons))


def venue_name(venue_id: str, names: dict[str, str]) -> str:
    """A venue's name; kiosks without a venue count as a venue of their own (``kiosk:<id>``)."""
    if venue_id in names:
        return names[venue_id]
    kiosk_id = kiosk_of_venue(venue_id)
    return venue_id if kiosk_id is None else _("Kiosk %(id)s (no venue)", id=kiosk_id)


def venue_names(conn: Connection, venue_ids: Iterable[str]) -> dict[str, str]:
    """Names of the venues in ``venue_ids`` that are registered."""
    wanted = sorted(set(venue_ids))
    found: dict[str, str] = {}
    for start in range(0, len(wanted), 500):
        rows = conn.execute(
            select(venues.c.venue_id, venues.c.name).where(venues.c.venue_id.in_(wanted[start : start + 500]))
        )
        found.update(dict(rows.all()))
    return found


def venue_windows(presences: list[Presence], names: dict[str, str]) -> list[VenueWindow]:
    """The F0's presences grouped by venue (first arrival, last departure, visits), in time order."""
    grouped: dict[str, list[Presence]] = {}
    for p in presences:
        grouped.setdefault(p.venue_id, []).append(p)
    windows = [
        VenueWindow(
            venue_id=venue_id,
            name=venue_name(venue_id, names),
            first_arrive_s=min(p.arrive_s for p in group),
            last_depart_s=max(p.depart_s for p in group),
            visits=len(group),
        )
        for venue_id, group in grouped.items()
    ]
    return sorted(windows, key=lambda w: (w.first_arrive_s, w.venue_id))


def case_row(conn: Connection, case_id: int):
    """The case's row, or None."""
    return conn.execute(select(cases).where(cases.c.id == case_id)).first()


def contact_rows(conn: Connection, case_id: int, degree: int, page: int, page_size: int | None = None):
    """One page of a case's contacts of ``degree`` and whether there is a next page.

    F1 (tens to hundreds) are ordered by their longest encounter, the closest contacts first; F2 (up to
    hundreds of thousands) in the order the job stored them, which the ``(case, degree)`` index serves.
    ``page_size`` defaults to :data:`PAGE_SIZE`.
    """
    page_size = page_size or PAGE_SIZE
    order = (case_contacts.c.overlap_s.desc(), case_contacts.c.id) if degree == 1 else (case_contacts.c.id,)
    rows = conn.execute(
        select(case_contacts)
        .where(case_contacts.c.case_id == case_id, case_contacts.c.degree == degree)
        .order_by(*order)
        .offset((page - 1) * page_size)
        .limit(page_size + 1)
    ).all()
    return rows[:page_size], len(rows) > page_size


def _reasons_of(row, names: dict[str, str]) -> list[Reason]:
    reasons = []
    for item in row.reasons or []:
        if not isinstance(item, dict):
            continue
        venue_id = str(item.get("venue_id", ""))
        reasons.append(
            Reason(
                venue_id=venue_id,
                venue_name=venue_name(venue_id, names),
                start_s=int(item.get("start_s", 0)),
                end_s=int(item.get("end_s", 0)),
                minutes=int(item.get("minutes", 0)),
                via_person_id=int(item.get("via", 0)),
                source=str(item.get("source", "venue")),
            )
        )
    return reasons


def contact_views(
    conn: Connection,
    identity: HubIdentity,
    rows: list,
    *,
    extra_people: Iterable[int] = (),
    now: datetime,
    link: bool = True,
) -> tuple[list[ContactView], dict[int, people.Person], dict[str, str]]:
    """The rows with their people and reasons; also every person described (vias and ``extra_people``)
    and the venue names, so the caller can label them. Cards are opened only for these people; ``link``
    as in :func:`hub.people.describe` (it may write)."""
    vias = {int(r.get("via", 0)) for row in rows for r in (row.reasons or []) if isinstance(r, dict)}
    wanted = {int(r.person_id) for r in rows} | vias | set(extra_people)
    who = people.describe(conn, identity, wanted, now=now, link=link)
    names = venue_names(
        conn, {str(r.get("venue_id", "")) for row in rows for r in (row.reasons or []) if isinstance(r, dict)}
    )
    views = [
        ContactView(row=row, person=who[int(row.person_id)], reasons=_reasons_of(row, names)) for row in rows
    ]
    return views, who, names


def person_label(person: people.Person | None, person_id: int) -> str:
    """How a person is named on a page: their name, else their pass, else their number here."""
    if person is not None and person.full_name:
        return person.full_name
    if person is not None and person.pass_ids:
        return _("Pass %(id)s", id=display_pass_id(person.pass_ids[0]))
    return _("Person #%(id)s", id=person_id)


# ------------------------------------------------------------------------------------ template helpers


@bp.app_template_filter("case_time")
def case_time(epoch_s: int | None) -> str:
    """Epoch seconds as ``yyyy-MM-dd HH:mm`` in the hub's time zone (Vietnam)."""
    if epoch_s is None:
        return "—"
    return format_datetime(from_epoch_s(epoch_s), "yyyy-MM-dd HH:mm")


@bp.app_context_processor
def _case_labels() -> dict:
    return {
        "case_f2_state_label": lambda state: str(F2_STATE_LABELS.get(state, state)),
        "case_status_label": lambda status: str(STATUS_LABELS.get(status, status)),
        "case_opened_from_label": lambda source: str(OPENED_FROM_LABELS.get(source, source)),
        "case_source_label": lambda source: str(SOURCE_LABELS.get(source, source)),
    }


def progress_text(state: str, progress: float, f2_count: int) -> str:
    """The F2 job's state in a sentence (the page and the polling script show it)."""
    if state == "done":
        return _("F2 done: %(n)s people found.", n=f2_count)
    if state == "failed":
        return _("F2 failed; it is logged on the hub. Open the case again later or tell the admin.")
    if state == "running":
        return _("F2 running: %(percent)s%% done.", percent=int(progress * 100))
    return _("F2 is waiting to start.")


def _page_arg(name: str) -> int:
    value = request.args.get(name, "1")
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        abort(400)
    return int(value)


def _resume_jobs_if(state: str) -> None:
    # The worker starts on first use; a job a restart interrupted resumes when someone looks at it.
    if state in RUNNING:
        hub_web().tracing_jobs  # noqa: B018


# ------------------------------------------------------------------------------------------------- pages


@bp.get("/")
@roles_required(*CASE_ROLES)
def index():
    """The cases, newest first, with F1 counts and F2 progress; viewing the list is audited."""
    before = request.args.get("before", "")
    if before and not before.isdigit():
        abort(400)
    query = select(cases).order_by(cases.c.id.desc()).limit(LIST_PAGE_SIZE + 1)
    if before:
        query = query.where(cases.c.id < int(before))
    with writing(hub_web().engine).begin() as conn:
        rows = conn.execute(query).all()
        shown = rows[:LIST_PAGE_SIZE]
        audit(conn, "case_list", "case", None, {"cases": [r.id for r in shown], "before": before or None})
    for row in shown:
        _resume_jobs_if(row.f2_state)
    next_before = shown[-1].id if len(rows) > LIST_PAGE_SIZE else None
    return render_template(
        "admin/cases.html", rows=shown, next_before=next_before, progress_text=progress_text
    )


@bp.route("/new", methods=["GET", "POST"])
@roles_required(*CASE_ROLES)
def new_case():
    """Open a case: find the person, compute the F1 (at once) and queue the F2 job."""
    form = CaseForm()
    if form.validate_on_submit():
        web = hub_web()
        people.prepare(web.identity)
        now = _now()
        name, role = actor()

        try:
            with writing(web.engine).begin() as conn:
                subject = resolve_subject(conn, web.identity, now=now, **form.subject())
            case_id = open_case(
                web.engine,
                web.identity,
                subject,
                onset_date=_parse_date(form.onset_date.data),
                test_date=_parse_date(form.test_date.data),
                rules=web.config.tracing,
                actor=name,
                role=role,
                note=(form.note.data or "").strip() or None,
                remote_addr=request.remote_addr,
                now=now,
                index=web.tracing_jobs.index,
            )
        except CaseError as exc:
            field_name, message = case_error_message(exc)
            if field_name == "onset_date" and not form.onset_date.data:
                field_name = "test_date"
            target = getattr(form, field_name).errors if field_name else form.form_errors
            target.append(message)
        else:
            web.tracing_jobs.submit(case_id)
            with web.engine.connect() as conn:
                f1 = conn.execute(select(cases.c.f1_count).where(cases.c.id == case_id)).scalar_one()
            flash(
                _("Case %(id)s opened: %(n)s F1 found; the F2 search has started.", id=case_id, n=f1),
                "success",
            )
            return redirect(url_for("cases.detail", case_id=case_id))
    failed = request.method == "POST"
    return render_template("admin/case_new.html", form=form), 400 if failed else 200


@bp.get("/<int:case_id>")
@roles_required(*CASE_ROLES)
def detail(case_id: int):
    """One case: the F0, the venues of the window, F1 and F2 (paged) with reasons and decisions. Audited."""
    f1_page, f2_page = _page_arg("f1_page"), _page_arg("f2_page")
    web = hub_web()
    people.prepare(web.identity)
    now = _now()
    with writing(web.engine).begin() as conn:
        case = case_row(conn, case_id)
        if case is None:
            abort(404)
        own = presences_of(conn, int(case.person_id), int(case.window_start_s), int(case.window_end_s))
        f1_rows, f1_next = contact_rows(conn, case_id, 1, f1_page)
        f2_rows, f2_next = contact_rows(conn, case_id, 2, f2_page)
        views, who, names = contact_views(
            conn, web.identity, [*f1_rows, *f2_rows], extra_people=[int(case.person_id)], now=now
        )
        names.update(venue_names(conn, {p.venue_id for p in own}))
        tally = counts(conn, case_id)
        audit(
            conn,
            "case_view",
            "case",
            case_id,
            {"f1_page": f1_page, "f2_page": f2_page, "persons": sorted(v.person.person_id for v in views)},
        )
    _resume_jobs_if(case.f2_state)
    windows = venue_windows(own, names)
    # What this case adds to the safety map (hub/venue_flags.py): an open case flags a venue until the
    # look-back has passed since the F0's last departure there.
    flagged_until = {
        w.venue_id: until
        for w in windows
        if case.status == "open"
        and (until := clear_after(w.last_depart_s, web.config.tracing)) > now.timestamp()
    }
    return render_template(
        "admin/case.html",
        case=case,
        f0=who[int(case.person_id)],
        windows=windows,
        flagged_until=flagged_until,
        f1=views[: len(f1_rows)],
        f2=views[len(f1_rows) :],
        f1_page=f1_page,
        f2_page=f2_page,
        f1_next=f1_next,
        f2_next=f2_next,
        tally=tally,
        who=who,
        person_label=person_label,
        progress_text=progress_text(case.f2_state, float(case.f2_progress), int(case.f2_count)),
        decision_form=DecisionForm(formdata=None),
        export_form=ExportForm(formdata=None),
        running=case.f2_state in RUNNING,
        display_pass_id=display_pass_id,
    )


@bp.get("/<int:case_id>/progress")
@roles_required(*CASE_ROLES)
def progress(case_id: int):
    """The F2 job's state, progress and counts as JSON (no personal data, so not audited)."""
    with hub_web().engine.connect() as conn:
        row = conn.execute(
            select(cases.c.f2_state, cases.c.f2_progress, cases.c.f2_count, cases.c.f1_count).where(
                cases.c.id == case_id
            )
        ).first()
    if row is None:
        abort(404)
    _resume_jobs_if(row.f2_state)
    return jsonify(
        state=row.f2_state,
        progress=float(row.f2_progress),
        f1_count=int(row.f1_count),
        f2_count=int(row.f2_count),
        text=progress_text(row.f2_state, float(row.f2_progress), int(row.f2_count)),
    )


@bp.post("/<int:case_id>/contacts/<int:person_id>")
@roles_required(*CASE_ROLES)
def decide_contact(case_id: int, person_id: int):
    """Confirm, dismiss or reset a contact; a dismissal takes the case's colour off their passes."""
    form = DecisionForm()
    if not form.validate_on_submit():
        abort(400)
    web = hub_web()
    with web.engine.connect() as conn:
        before = conn.execute(
            select(case_contacts.c.status, case_contacts.c.degree).where(
                case_contacts.c.case_id == case_id, case_contacts.c.person_id == person_id
            )
        ).first()
    if before is None:
        abort(404)
    name, role = actor()
    now = _now()
    try:
        decide(
            writing(web.engine),
            case_id,
            person_id,
            form.decision.data,
            actor=name,
            rules=web.config.tracing,
            role=role,
            remote_addr=request.remote_addr,
            now=now,
        )
    except CaseError:
        abort(404)
    flash(
        _(
            "Contact #%(person)s: %(status)s.",
            person=person_id,
            status=STATUS_LABELS[form.decision.data],
        ),
        "success",
    )
    return redirect(
        url_for(
            "cases.detail",
            case_id=case_id,
            f1_page=form.f1_page.data or 1,
            f2_page=form.f2_page.data or 1,
            _anchor=f"p{person_id}",
        )
    )


# ----------------------------------------------------------------------------------------------- export

#: Column headers of the export, in Vietnamese (the district health office's language).
EXPORT_HEADERS = (
    "Mức độ",
    "Mã người",
    "Họ và tên",
    "Số điện thoại",
    "Số giấy tờ (4 số cuối)",
    "Năm sinh",
    "Địa điểm",
    "Tiếp xúc đầu tiên",
    "Tiếp xúc cuối cùng",
    "Lần tiếp xúc dài nhất (phút)",
    "Trạng thái",
)
EXPORT_STATUS = {"suggested": "Đề xuất", "confirmed": "Đã xác nhận", "dismissed": "Đã loại"}
#: A cell starting with one of these is a formula (or becomes one) in Excel and LibreOffice.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """A CSV cell that a spreadsheet shows as text: a leading ``= + - @`` tab or CR gets a ``'`` first."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def export_phone(phone: str | None) -> str | None:
    """A stored phone as the office dials it: ``+84…`` as ``0…`` (foreign numbers stay international)."""
    if phone and phone.startswith("+84"):
        return "0" + phone.removeprefix("+84")
    return phone


def _vn_text(epoch_s: int) -> str:
    return datetime.fromtimestamp(int(epoch_s), VIETNAM).strftime("%Y-%m-%d %H:%M")


def export_rows(engine: Engine, identity: HubIdentity, case_id: int, *, now: datetime) -> Iterator[list[str]]:
    """Every contact of the case (F1 then F2) as export cells, read and described ``EXPORT_CHUNK`` at a time.

    Call :func:`hub.identity.link_declarations` before (this only reads).
    """
    for degree in (1, 2):
        last_id = 0
        while True:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(case_contacts)
                    .where(
                        case_contacts.c.case_id == case_id,
                        case_contacts.c.degree == degree,
                        case_contacts.c.id > last_id,
                    )
                    .order_by(case_contacts.c.id)
                    .limit(EXPORT_CHUNK)
                ).all()
                if not rows:
                    break
                who = people.describe(conn, identity, [int(r.person_id) for r in rows], now=now, link=False)
                names = venue_names(
                    conn,
                    {
                        str(x.get("venue_id", ""))
                        for r in rows
                        for x in (r.reasons or [])
                        if isinstance(x, dict)
                    },
                )
            for row in rows:
                person = who[int(row.person_id)]
                places = dict.fromkeys(venue_name(r.venue_id, names) for r in _reasons_of(row, names))
                yield [
                    csv_cell(f"F{degree}"),
                    csv_cell(row.person_id),
                    csv_cell(person.full_name),
                    csv_cell(export_phone(person.phone)),
                    csv_cell(f"…{person.id_last4}" if person.id_last4 else ""),
                    csv_cell(person.birth_year),
                    csv_cell("; ".join(places)),
                    csv_cell(_vn_text(row.first_contact_s)),
                    csv_cell(_vn_text(row.last_contact_s)),
                    csv_cell(int(row.overlap_s) // 60),
                    csv_cell(EXPORT_STATUS.get(row.status, row.status)),
                ]
            last_id = int(rows[-1].id)


def csv_text(rows: Iterable[list[str]], *, batch: int = EXPORT_CHUNK) -> Iterator[str]:
    """The CSV file in pieces: a UTF-8 BOM and the header first, then ``batch`` rows per piece."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    buffer.write("\ufeff")
    writer.writerow(EXPORT_HEADERS)
    pending = 0
    for row in rows:
        writer.writerow(row)
        pending += 1
        if pending >= batch:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue()


@bp.post("/<int:case_id>/export.csv")
@roles_required(*CASE_ROLES)
def export(case_id: int):
    """Every contact of the case as CSV for the district health office (streamed). Audited."""
    if not ExportForm().validate_on_submit():
        abort(400)
    web = hub_web()
    people.prepare(web.identity)
    now = _now()
    with writing(web.engine).begin() as conn:
        if case_row(conn, case_id) is None:
            abort(404)
        link_declarations(conn, web.identity, now)
        tally = counts(conn, case_id)
        audit(
            conn,
            "case_export",
            "case",
            case_id,
            {"format": "csv", "f1": tally.get("F1", 0), "f2": tally.get("F2", 0)},
        )
    body = csv_text(export_rows(web.engine, web.identity, case_id, now=now))
    response = Response(stream_with_context(body), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="ca-benh-{case_id}-tiep-xuc.csv"'
    response.headers["Cache-Control"] = "no-store"
    return response
