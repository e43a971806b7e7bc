"""Staff pages under ``/admin``: hub status, users, API tokens, declaration search and the audit log.

Who may open what (every view carries :func:`hub.web.auth.roles_required`; tests/hub/test_authz.py checks
each URL against these roles):

- ``/admin/`` hub status, ``/admin/password`` own password: every staff role (ingest counts and kiosk
  states hold no personal data; everyone changes their own password).
- ``/admin/users…`` users and ``/admin/tokens…`` API tokens: admin (accounts, roles and machine
  credentials are the admin's job).
- ``/admin/declarations…`` search and detail: health_official and admin (personal health data: only
  those who work on cases; district IT and venue managers never see it).
- ``/admin/audit`` audit log: admin (it shows who looked at whom, and what they searched for).
- ``/admin/fleet`` the kiosk fleet (venue, online/offline, versions, outbox, list ages, certificate
  expiry): district_it and admin (no personal data; district IT provisions and watches the kiosks).

Every declaration search and every declaration view writes an audit entry in the same transaction as
the read (so a read is logged exactly when it happened). Searches are POST forms: names, phone and id
numbers never appear in URLs, browser history or access logs.

Name search is accent-insensitive ("nguyen" finds "Nguyễn") on SQLite and PostgreSQL alike: each query
word becomes a ``LIKE`` pattern in which every letter that may carry a diacritic (a e i o u y d) or is
not ASCII matches any one character; the newest :data:`NAME_CANDIDATES` rows matching all patterns are
then compared in Python on a folded form (NFKD, marks removed, đ → d, lower case). Names are stored
NFC-normalised (one code point per accented letter); a search that reaches the candidate limit says so
and asks for more words, an id number or a phone number.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask_babel import format_datetime, get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_user
from flask_wtf import FlaskForm
from sqlalchemy import Connection, and_, func, or_, select
from wtforms import BooleanField, HiddenField, PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Optional, Regexp, ValidationError

from hub import accounts
from hub import audit as audit_log
from hub import declarations as decl
from hub import passes as hub_passes
from hub.accounts import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, AccountError, Role
from hub.db.schema import api_tokens, declarations, users
from hub.pass_rules import exposure_label, reason_label, symptom_label
from hub.web.auth import StaffUser, roles_required
from hub.web.extensions import audit, hub_web, limiter, login_rate

bp = Blueprint("admin", __name__, url_prefix="/admin")

#: Rows per page of search results and of the audit log.
PAGE_SIZE = 20
#: Most pages a search may page through (keeps OFFSET bounded).
MAX_PAGE = 500
#: Most rows a name search compares in Python (newest first); see the module docstring.
NAME_CANDIDATES = 2000
#: Declarations of the same person shown in the history on the detail page.
HISTORY_LIMIT = 50

ROLE_LABELS = {
    Role.ADMIN: _l("Administrator"),
    Role.HEALTH_OFFICIAL: _l("Health official"),
    Role.DISTRICT_IT: _l("District IT"),
    Role.VENUE_MANAGER: _l("Venue manager"),
}
COLOUR_LABELS = {"green": _l("Green"), "yellow": _l("Yellow"), "red": _l("Red")}
KIND_LABELS = {"ncovi": _l("Health declaration (NCOVI)"), "vhd": _l("Entry declaration (VHD)")}

_USERNAME_RE = r"^[\w.-]{3,64}$"
_ROLE_CHOICES = [SelectChoice(role.value, ROLE_LABELS[role]) for role in Role]


# ------------------------------------------------------------------------------------------ template helpers


@bp.app_template_filter("admin_time")
def admin_time(value: datetime | None) -> str:
    """A stored time as ``yyyy-MM-dd HH:mm`` in the hub's time zone (SQLite hands back naive UTC)."""
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return format_datetime(value, "yyyy-MM-dd HH:mm")


@bp.app_context_processor
def _admin_labels() -> dict[str, Any]:
    return {
        "admin_role_label": lambda role: str(ROLE_LABELS.get(Role(role), role)),
        "admin_colour_label": lambda colour: str(COLOUR_LABELS.get(str(colour), colour)),
        "admin_kind_label": lambda kind: str(KIND_LABELS.get(str(kind), kind)),
    }


def _now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------------------------------------- forms


def _password_fields(label):
    return (
        PasswordField(
            label,
            validators=[
                DataRequired(message=_l("Enter a password.")),
                Length(
                    min=MIN_PASSWORD_CHARS,
                    max=MAX_PASSWORD_CHARS,
                    message=_l(
                        "The password must have %(min)d to %(max)d characters.",
                        min=MIN_PASSWORD_CHARS,
                        max=MAX_PASSWORD_CHARS,
                    ),
                ),
            ],
        ),
        PasswordField(
            _l("Repeat the password"),
            validators=[
                DataRequired(message=_l("Repeat the password.")),
                EqualTo("password", message=_l("The two passwords differ.")),
            ],
        ),
    )


class UserCreateForm(FlaskForm):
    username = StringField(
        _l("Username"),
        validators=[
            DataRequired(message=_l("Enter a username.")),
            Regexp(
                _USERNAME_RE,
                message=_l("3 to 64 letters, digits, '.', '_' or '-'."),
            ),
        ],
    )
    display_name = StringField(
        _l("Display name"),
        validators=[Optional(), Length(max=200, message=_l("At most 200 characters."))],
    )
    role = SelectField(_l("Role"), choices=_ROLE_CHOICES, invalid_choice_message=_l("Choose a role."))
    password, password_confirm = _password_fields(_l("Initial password"))


class RoleForm(FlaskForm):
    role = SelectField(_l("Role"), choices=_ROLE_CHOICES, invalid_choice_message=_l("Choose a role."))


class ActiveForm(FlaskForm):
    active = HiddenField(validators=[DataRequired(), Regexp(r"^[01]$")])


class PasswordResetForm(FlaskForm):
    password, password_confirm = _password_fields(_l("New password"))


class OwnPasswordForm(FlaskForm):
    current_password = PasswordField(
        _l("Current password"),
        validators=[DataRequired(message=_l("Enter your current password.")), Length(max=MAX_PASSWORD_CHARS)],
    )
    password, password_confirm = _password_fields(_l("New password"))


class TokenCreateForm(FlaskForm):
    name = StringField(
        _l("Name (what uses the token)"),
        validators=[
            DataRequired(message=_l("Give the token a name.")),
            Length(max=200, message=_l("At most 200 characters.")),
        ],
    )
    role = SelectField(_l("Role"), choices=_ROLE_CHOICES, invalid_choice_message=_l("Choose a role."))
    expires_days = StringField(
        _l("Expires after (days, empty: never)"),
        validators=[Optional(), Regexp(r"^\d{1,4}$", message=_l("A whole number of days from 1 to 3650."))],
    )

    def validate_expires_days(self, field) -> None:
        if field.data and field.data.isdigit() and not 1 <= int(field.data) <= 3650:
            raise ValidationError(_("A whole number of days from 1 to 3650."))


class ConfirmForm(FlaskForm):
    """A button that only needs the CSRF token (revoke)."""


SEARCH_BY = [
    SelectChoice("auto", _l("Automatic")),
    SelectChoice("id_number", _l("ID or passport number")),
    SelectChoice("phone", _l("Phone")),
    SelectChoice("name", _l("Name")),
]


class DeclarationSearchForm(FlaskForm):
    q = StringField(
        _l("Search"),
        validators=[
            DataRequired(message=_l("Enter a name, an ID number or a phone number.")),
            Length(min=2, max=100, message=_l("Enter 2 to 100 characters.")),
        ],
    )
    by = SelectField(_l("Search by"), choices=SEARCH_BY, default="auto", invalid_choice_message=_l("Choose."))
    include_superseded = BooleanField(_l("Include superseded declarations"))
    page = HiddenField(default="1", validators=[Optional(), Regexp(r"^\d{1,4}$")])


class AuditFilterForm(FlaskForm):
    """The audit log filter (a GET form: it changes nothing, so it carries no CSRF token)."""

    class Meta:
        csrf = False

    actor = StringField(_l("Actor"), validators=[Optional(), Length(max=200)])
    before = StringField(validators=[Optional(), Regexp(r"^\d{1,18}$")])


# ------------------------------------------------------------------------------------------------- pages


@bp.get("/")
@roles_required()
def index():
    """Hub status for any staff role: events stored, dead letters and every kiosk's state."""
    return render_template("admin/dashboard.html", stats=hub_web().store.stats())


@bp.get("/fleet")
@roles_required(Role.ADMIN, Role.DISTRICT_IT)
def fleet():
    """The kiosk fleet for district IT: each kiosk's venue, state, versions, queues and certificate."""
    from hub import devices

    with hub_web().engine.connect() as conn:
        rows = devices.fleet(conn)
    now = datetime.now(UTC)
    return render_template(
        "admin/fleet.html",
        rows=rows,
        now=now,
        online=sum(r.status == "online" for r in rows),
        expiring=sum(
            1
            for r in rows
            if r.revoked_at is None
            and (days := r.cert_days_left(now)) is not None
            and days < devices.RENEW_BEFORE_DAYS
        ),
        renew_days=devices.RENEW_BEFORE_DAYS,
    )


def _relogin_self() -> None:
    """After changing one's own password or role, keep this session (the others end)."""
    with hub_web().engine.connect() as conn:
        user = accounts.get_user(conn, current_user.id)
    if user is not None and user.active:
        login_at = session.get("login_at")
        login_user(StaffUser(user))
        session["login_at"] = login_at


@bp.route("/password", methods=["GET", "POST"])
@limiter.limit(login_rate, methods=["POST"])
@roles_required()
def own_password():
    """Change one's own password (any staff role); every other session of the user ends."""
    form = OwnPasswordForm()
    if form.validate_on_submit():
        if accounts.authenticate(hub_web().engine, current_user.username, form.current_password.data) is None:
            form.current_password.errors.append(_("The current password is wrong."))
        else:
            with hub_web().engine.begin() as conn:
                accounts.set_password(conn, current_user.id, form.password.data)
                audit(conn, "password_change", "user", current_user.id)
            _relogin_self()
            flash(_("Your password is changed; your other sessions are logged out."), "success")
            return redirect(url_for("admin.index"))
    return render_template("admin/password.html", form=form), 400 if form.errors else 200


# ------------------------------------------------------------------------------------------------- users


def _active_admin_ids(conn: Connection) -> list[int]:
    """Ids of active admins, locked until the transaction ends (PostgreSQL), so two admins demoting
    each other at the same moment cannot leave the hub without one."""
    query = (
        select(users.c.id)
        .where(users.c.role == Role.ADMIN.value, users.c.active.is_(True))
        .order_by(users.c.id)
        .with_for_update()
    )
    return list(conn.execute(query).scalars())


def _is_last_admin(conn: Connection, user_id: int) -> bool:
    return _active_admin_ids(conn) == [user_id]


def _user_or_404(conn: Connection, user_id: int) -> accounts.User:
    user = accounts.get_user(conn, user_id)
    if user is None:
        abort(404)
    return user


@bp.route("/users", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def users_page():
    """List staff accounts and create one (admin)."""
    form = UserCreateForm()
    if form.validate_on_submit():
        try:
            with hub_web().engine.begin() as conn:
                user = accounts.create_user(
                    conn,
                    username=form.username.data,
                    display_name=form.display_name.data or "",
                    role=form.role.data,
                    password=form.password.data,
                )
                audit(
                    conn, "user_create", "user", user.id, {"username": user.username, "role": user.role.value}
                )
        except AccountError as exc:
            if "taken" in str(exc):
                form.username.errors.append(_("This username is already taken."))
            else:
                form.form_errors.append(str(exc))
        else:
            flash(_("User %(name)s created.", name=user.username), "success")
            return redirect(url_for("admin.users_page"))
    with hub_web().engine.connect() as conn:
        people = accounts.list_users(conn)
    status = 400 if request.method == "POST" else 200
    return render_template("admin/users.html", form=form, users=people), status


def _user_page(user: accounts.User, *, role_form=None, password_form=None, status: int = 200):
    return (
        render_template(
            "admin/user.html",
            user=user,
            role_form=role_form or RoleForm(role=user.role.value, formdata=None),
            active_form=ActiveForm(active="0" if user.active else "1", formdata=None),
            password_form=password_form or PasswordResetForm(formdata=None),
        ),
        status,
    )


@bp.get("/users/<int:user_id>")
@roles_required(Role.ADMIN)
def user_page(user_id: int):
    """One account: change its role, deactivate or reactivate it, reset its password (admin)."""
    with hub_web().engine.connect() as conn:
        user = _user_or_404(conn, user_id)
    return _user_page(user)


@bp.post("/users/<int:user_id>/role")
@roles_required(Role.ADMIN)
def user_role(user_id: int):
    """Change a user's role; the last active admin cannot be demoted."""
    form = RoleForm()
    with hub_web().engine.begin() as conn:
        user = _user_or_404(conn, user_id)
        if not form.validate_on_submit():
            return _user_page(user, role_form=form, status=400)
        new_role = Role(form.role.data)
        if user.role is Role.ADMIN and new_role is not Role.ADMIN and _is_last_admin(conn, user.id):
            form.role.errors.append(_("This is the last active administrator: make another one first."))
            return _user_page(user, role_form=form, status=409)
        if new_role is not user.role:
            accounts.set_role(conn, user.id, new_role)
            audit(conn, "user_role", "user", user.id, {"from": user.role.value, "to": new_role.value})
    if user.id == current_user.id:
        _relogin_self()
    flash(_("Role of %(name)s saved.", name=user.username), "success")
    if user.id == current_user.id and new_role is not Role.ADMIN:
        return redirect(url_for("admin.index"))
    return redirect(url_for("admin.user_page", user_id=user.id))


@bp.post("/users/<int:user_id>/active")
@roles_required(Role.ADMIN)
def user_active(user_id: int):
    """Deactivate (ends the user's sessions) or reactivate a user; the last active admin stays active."""
    form = ActiveForm()
    with hub_web().engine.begin() as conn:
        user = _user_or_404(conn, user_id)
        if not form.validate_on_submit():
            return _user_page(user, status=400)
        active = form.active.data == "1"
        if not active and user.role is Role.ADMIN and _is_last_admin(conn, user.id):
            flash(_("This is the last active administrator: make another one first."), "error")
            return _user_page(user, status=409)
        accounts.set_active(conn, user.id, active)
        audit(conn, "user_activate" if active else "user_deactivate", "user", user.id)
    if active:
        flash(_("%(name)s can log in again.", name=user.username), "success")
    else:
        flash(_("%(name)s is deactivated and logged out.", name=user.username), "success")
    return redirect(url_for("admin.user_page", user_id=user.id))


@bp.post("/users/<int:user_id>/password")
@roles_required(Role.ADMIN)
def user_password(user_id: int):
    """Set a new password for a user (ends their sessions); tell them the new one in person."""
    form = PasswordResetForm()
    with hub_web().engine.begin() as conn:
        user = _user_or_404(conn, user_id)
        if not form.validate_on_submit():
            return _user_page(user, password_form=form, status=400)
        accounts.set_password(conn, user.id, form.password.data)
        audit(conn, "user_password_reset", "user", user.id)
    if user.id == current_user.id:
        _relogin_self()
    flash(_("New password of %(name)s saved; their sessions are logged out.", name=user.username), "success")
    return redirect(url_for("admin.user_page", user_id=user.id))


# -------------------------------------------------------------------------------------------- API tokens


def _token_rows(conn: Connection):
    creator = users.alias("creator")
    return conn.execute(
        select(api_tokens, creator.c.username.label("creator"))
        .select_from(api_tokens.outerjoin(creator, creator.c.id == api_tokens.c.created_by))
        .order_by(api_tokens.c.id.desc())
    ).all()


def _token_state(row, now: datetime) -> str:
    if row.revoked_at is not None:
        return "revoked"
    expires = row.expires_at
    if expires is not None and (expires if expires.tzinfo else expires.replace(tzinfo=UTC)) <= now:
        return "expired"
    return "active"


@bp.route("/tokens", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def tokens_page():
    """List API tokens and create one (admin); a new token is shown once, on the page that made it."""
    form = TokenCreateForm()
    created = None
    if form.validate_on_submit():
        expires_at = _now() + timedelta(days=int(form.expires_days.data)) if form.expires_days.data else None
        with hub_web().engine.begin() as conn:
            token_id, token = accounts.create_api_token(
                conn,
                name=form.name.data,
                role=form.role.data,
                created_by=current_user.id,
                expires_at=expires_at,
            )
            audit(
                conn, "token_create", "api_token", token_id, {"name": form.name.data, "role": form.role.data}
            )
        created = {"id": token_id, "token": token, "name": form.name.data}
        form = TokenCreateForm(formdata=None)
    now = _now()
    with hub_web().engine.connect() as conn:
        rows = [(row, _token_state(row, now)) for row in _token_rows(conn)]
    status = 400 if form.errors else 200
    return (
        render_template("admin/tokens.html", form=form, tokens=rows, created=created, confirm=ConfirmForm()),
        status,
    )


@bp.post("/tokens/<int:token_id>/revoke")
@roles_required(Role.ADMIN)
def token_revoke(token_id: int):
    """Revoke an API token at once (admin)."""
    if not ConfirmForm().validate_on_submit():
        abort(400)
    try:
        with hub_web().engine.begin() as conn:
            accounts.revoke_api_token(conn, token_id)
            audit(conn, "token_revoke", "api_token", token_id)
    except AccountError:
        abort(404)
    flash(_("Token %(id)s revoked.", id=token_id), "success")
    return redirect(url_for("admin.tokens_page"))


# ------------------------------------------------------------------------------------------ declarations

#: Labels of the keys in a declaration's ``answers`` (see hub/declarations.py); others show as they are.
ANSWER_LABELS = {
    "id_type": _l("ID type"),
    "address_from_declarant": _l("Address of the declarant"),
    "vaccination": _l("Vaccination"),
    "doses": _l("Doses"),
    "last_dose_date": _l("Last dose"),
    "vaccine": _l("Vaccine"),
    "symptoms": _l("Symptoms in the last 14 days"),
    "exposures": _l("Exposure in the last 14 days"),
    "tests": _l("Tests"),
    "type": _l("Test"),
    "date": _l("Date"),
    "result": _l("Result"),
    "transport": _l("Transport"),
    "mode": _l("Means"),
    "number": _l("Flight or vehicle"),
    "seat": _l("Seat"),
    "border_gate": _l("Border gate"),
    "arrival_date": _l("Arrival date"),
    "countries_visited": _l("Countries visited in the last 14 days"),
}
#: Internal bookkeeping in ``answers``, not shown.
_HIDDEN_ANSWERS = frozenset({"form", "version"})
#: Which choice list a value under a key comes from (its labels are in hub.declarations.CHOICE_LABELS).
_CHOICE_OF_KEY = {
    "id_type": decl.IdType,
    "vaccine": decl.Vaccine,
    "type": decl.TestType,
    "result": decl.TestOutcome,
    "mode": decl.TransportMode,
    "gender": decl.Gender,
    "relationship": decl.Relationship,
}


def choice_label(key: str, value: Any) -> Any:
    """The translated label of a stored choice (``gender`` ``"female"`` → "Nữ"); other values as they are."""
    enum = _CHOICE_OF_KEY.get(key)
    if enum is None or not isinstance(value, str):
        return value
    label = decl.CHOICE_LABELS.get(enum, {}).get(value)
    return value if label is None else _(label)


def _label_each(labeller, codes: Any) -> Any:
    if not isinstance(codes, list):
        return codes
    labels = []
    for code in codes:
        try:
            labels.append(labeller(code, get_locale()))
        except (ValueError, KeyError):  # a code added later than this page: show it as stored
            labels.append(code)
    return labels


def readable_answers(answers: Any) -> Any:
    """A declaration's ``answers`` for reading: labelled keys, translated choices, symptoms and exposures."""
    if isinstance(answers, list):
        return [readable_answers(item) for item in answers]
    if not isinstance(answers, dict):
        return answers
    readable = {}
    for key, value in answers.items():
        if key in _HIDDEN_ANSWERS:
            continue
        if key == "symptoms":
            value = _label_each(symptom_label, value)
        elif key == "exposures":
            value = _label_each(exposure_label, value)
        elif isinstance(value, dict | list):
            value = readable_answers(value)
        else:
            value = choice_label(key, value)
        readable[str(ANSWER_LABELS.get(key, key))] = value
    return readable


def readable_reasons(reasons: Any) -> list[str]:
    """The colour reasons of a declaration, each as a sentence in the current language."""
    return [reason_label(str(code), get_locale()) for code in (reasons or [])]


#: Letters that may carry a diacritic in a stored name (after folding they are these ASCII letters).
_FOLDABLE = frozenset("aeiouyd")
_PLAIN_LETTERS = str.maketrans(
    {"Đ": "D", "đ": "d", "Ð": "D", "ð": "d", "Ø": "O", "ø": "o", "Ł": "L", "ł": "l"}
)
_WORD_RE = re.compile(r"\w+")


def fold(text: str) -> str:
    """Lower case without diacritics: ``"Nguyễn Đức"`` → ``"nguyen duc"`` (for accent-insensitive search)."""
    decomposed = unicodedata.normalize("NFKD", (text or "").translate(_PLAIN_LETTERS))
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


def name_like_pattern(word: str) -> str:
    """The SQL ``LIKE`` pattern of one folded query word, matched against ``lower(full_name)``.

    Letters that may wear a diacritic in the stored (NFC) name, and any non-ASCII letter, match any
    one character; ASCII consonants match themselves (``lower`` folds ASCII on every backend).
    """
    return "%" + "".join("_" if c in _FOLDABLE or not c.isascii() else c for c in word) + "%"


def _phone_digits(text: str) -> str:
    digits = re.sub(r"\D", "", text)
    if digits.startswith("84") and len(digits) >= 11:
        digits = digits[2:]
    return digits.lstrip("0")


def _classify(query: str) -> str:
    compact = re.sub(r"[\s+().-]", "", query)
    if compact.isdigit():
        return "number"
    if any(c.isdigit() for c in compact):
        return "id_number"
    return "name"


def search_declarations(
    conn: Connection, query: str, *, by: str = "auto", include_superseded: bool = False, page: int = 1
) -> dict[str, Any]:
    """Find declarations by id number (prefix), phone (digits contained) or name (accent-insensitive).

    Returns ``{"rows", "has_next", "truncated", "by"}`` for page ``page`` (1-based, :data:`PAGE_SIZE` rows).
    """
    query = unicodedata.normalize("NFC", query.strip())
    kind = _classify(query) if by == "auto" else by
    base = select(declarations)
    if not include_superseded:
        base = base.where(declarations.c.superseded_at.is_(None))
    newest = (declarations.c.created_at.desc(), declarations.c.id.desc())
    page = max(1, min(page, MAX_PAGE))
    offset = (page - 1) * PAGE_SIZE
    if kind == "name":
        words = _WORD_RE.findall(fold(query))
        if not words:
            return {"rows": [], "has_next": False, "truncated": False, "by": kind}
        lowered = func.lower(declarations.c.full_name)
        candidates = conn.execute(
            base.where(and_(*(lowered.like(name_like_pattern(w)) for w in words)))
            .order_by(*newest)
            .limit(NAME_CANDIDATES)
        ).all()
        found = [r for r in candidates if all(w in fold(r.full_name) for w in words)]
        return {
            "rows": found[offset : offset + PAGE_SIZE],
            "has_next": len(found) > offset + PAGE_SIZE,
            "truncated": len(candidates) >= NAME_CANDIDATES,
            "by": kind,
        }
    id_prefix = re.sub(r"\s", "", query).upper()
    phone = _phone_digits(query)
    conditions = []
    if kind in ("id_number", "number") and id_prefix:
        conditions.append(declarations.c.id_number.startswith(id_prefix, autoescape=True))
    if kind in ("phone", "number") and len(phone) >= 4:
        conditions.append(declarations.c.phone.contains(phone, autoescape=True))
    if not conditions:
        return {"rows": [], "has_next": False, "truncated": False, "by": kind}
    rows = conn.execute(
        base.where(or_(*conditions)).order_by(*newest).offset(offset).limit(PAGE_SIZE + 1)
    ).all()
    return {"rows": rows[:PAGE_SIZE], "has_next": len(rows) > PAGE_SIZE, "truncated": False, "by": kind}


@bp.route("/declarations", methods=["GET", "POST"])
@roles_required(Role.HEALTH_OFFICIAL, Role.ADMIN)
def declarations_page():
    """Search declarations (health officials, admins); every search is written to the audit log."""
    form = DeclarationSearchForm()
    result = None
    page = 1
    if form.validate_on_submit():
        page = int(form.page.data or 1)
        with hub_web().engine.begin() as conn:
            result = search_declarations(
                conn, form.q.data, by=form.by.data, include_superseded=form.include_superseded.data, page=page
            )
            audit(
                conn,
                "declaration_search",
                "declaration",
                None,
                {
                    "query": form.q.data[:100],
                    "by": result["by"],
                    "include_superseded": bool(form.include_superseded.data),
                    "page": page,
                    "results": [row.id for row in result["rows"]],
                },
            )
    status = 400 if form.errors else 200
    return render_template("admin/declarations.html", form=form, result=result, page=page), status


@bp.get("/declarations/<int:declaration_id>")
@roles_required(Role.HEALTH_OFFICIAL, Role.ADMIN)
def declaration_page(declaration_id: int):
    """One declaration with its answers, colour, family, history and passes; the view is audited."""
    with hub_web().engine.begin() as conn:
        row = conn.execute(select(declarations).where(declarations.c.id == declaration_id)).first()
        if row is None:
            abort(404)
        declarant = None
        if row.declared_by is not None and row.declared_by != row.id:
            declarant = conn.execute(select(declarations).where(declarations.c.id == row.declared_by)).first()
        family = conn.execute(
            select(declarations)
            .where(declarations.c.submission_id == row.submission_id, declarations.c.id != row.id)
            .order_by(declarations.c.id)
        ).all()
        history = conn.execute(
            select(declarations)
            .where(declarations.c.id_number == row.id_number, declarations.c.id != row.id)
            .order_by(declarations.c.created_at.desc(), declarations.c.id.desc())
            .limit(HISTORY_LIMIT)
        ).all()
        issued = [
            (p, hub_passes.current_colour(conn, p.pass_id))
            for p in hub_passes.passes_for_declaration(conn, row.id)
        ]
        audit(conn, "declaration_view", "declaration", row.id)
    return render_template(
        "admin/declaration.html",
        row=row,
        declarant=declarant,
        family=family,
        history=history,
        passes=issued,
        display_pass_id=hub_passes.display_pass_id,
        answers=readable_answers(row.answers),
        reasons=readable_reasons(row.colour_reasons),
        choice_label=choice_label,
    )


# ---------------------------------------------------------------------------------------------- audit log


@bp.get("/audit")
@roles_required(Role.ADMIN)
def audit_page():
    """The audit log, newest first, optionally of one actor, paged by id (admin); viewing it is audited."""
    form = AuditFilterForm(request.args)
    if not form.validate():
        return render_template("admin/audit.html", form=form, rows=[], next_before=None), 400
    actor = (form.actor.data or "").strip() or None
    before = int(form.before.data) if form.before.data else None
    with hub_web().engine.begin() as conn:
        rows = audit_log.entries(conn, limit=PAGE_SIZE + 1, actor=actor, before_id=before)
        audit(conn, "audit_view", "audit_log", None, {"actor": actor, "before": before})
    next_before = rows[PAGE_SIZE - 1].id if len(rows) > PAGE_SIZE else None
    return render_template("admin/audit.html", form=form, rows=rows[:PAGE_SIZE], next_before=next_before)
