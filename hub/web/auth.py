"""Staff login (Flask-Login, argon2), role checks for pages and bearer tokens for the JSON API.

Every view outside the public blueprint is wrapped in :func:`roles_required` (pages, session cookie) or
:func:`token_required` (``/api``, bearer token only). Both record the allowed roles on the view, which
the authorization test reads for every URL in the app's map, so a new URL cannot escape the check.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    flash,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from hub import accounts
from hub.accounts import Role
from hub.web.extensions import LANG_COOKIE, LOCALES, audit, hub_web, limiter, login_manager, login_rate

#: A staff session ends this long after login even when it is kept busy.
ABSOLUTE_SESSION_LIMIT = timedelta(hours=12)

ALL_ROLES = frozenset(Role)

bp = Blueprint("auth", __name__)


class StaffUser:
    """The Flask-Login user for a logged-in staff member."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, user: accounts.User):
        self.user = user
        self.id = user.id
        self.role = user.role
        self.username = user.username
        self.display_name = user.display_name

    @property
    def is_active(self) -> bool:
        return self.user.active

    @property
    def audit_name(self) -> str:
        return f"user:{self.username}"

    def get_id(self) -> str:
        # The session version is part of the id: a password change or deactivation ends old sessions.
        return f"{self.user.id}:{self.user.session_version}"


@login_manager.user_loader
def _load_user(session_id: str) -> StaffUser | None:
    try:
        user_id, version = (int(part) for part in session_id.split(":", 1))
    except ValueError:
        return None
    with hub_web().engine.connect() as conn:
        user = accounts.get_user(conn, user_id)
    if user is None or not user.active or user.session_version != version:
        return None
    return StaffUser(user)


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def _safe_next(target: str | None) -> str | None:
    """Only a path on this site (no scheme, no host, no ``//``) is followed after login."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target or any(ord(c) < 32 for c in target):  # "/\evil.example" is "//evil.example" to browsers
        return None
    return target


def roles_required(*roles: Role) -> Callable:
    """Allow only logged-in staff whose role is one of ``roles`` (none given: any staff role)."""
    allowed = frozenset(roles) or ALL_ROLES

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if current_user.role not in allowed:
                abort(403)
            return view(*args, **kwargs)

        wrapper.allowed_roles = allowed  # type: ignore[attr-defined]
        wrapper.auth_kind = "session"  # type: ignore[attr-defined]
        return wrapper

    return decorate


def token_required(*roles: Role) -> Callable:
    """Allow only API calls with a valid ``Authorization: Bearer`` token whose role is in ``roles``."""
    allowed = frozenset(roles) or ALL_ROLES

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            header = request.headers.get("Authorization", "")
            scheme, _sep, token = header.partition(" ")
            principal = None
            if scheme.lower() == "bearer" and token.strip():
                with hub_web().engine.connect() as conn:
                    principal = accounts.api_principal(conn, token.strip())
            if principal is None:
                response = jsonify(error="unauthorized", message="a valid bearer token is required")
                response.status_code = 401
                response.headers["WWW-Authenticate"] = 'Bearer realm="antoan-hub"'
                return response
            if principal.role not in allowed:
                return jsonify(error="forbidden", message="this token's role may not use this endpoint"), 403
            g.api_principal = principal
            return view(*args, **kwargs)

        wrapper.allowed_roles = allowed  # type: ignore[attr-defined]
        wrapper.auth_kind = "token"  # type: ignore[attr-defined]
        return wrapper

    return decorate


def public_view(view: Callable) -> Callable:
    """Mark a view as open to everyone (the authorization test checks every other view is guarded)."""
    view.auth_kind = "public"  # type: ignore[attr-defined]
    return view


@login_manager.unauthorized_handler
def _unauthorized():
    if _wants_json():
        return jsonify(error="unauthorized", message="log in first"), 401
    flash(_("Please log in to see this page."), "info")
    return redirect(url_for("auth.login", next=request.full_path if request.query_string else request.path))


class LoginForm(FlaskForm):
    username = StringField(_l("Username"), validators=[DataRequired(), Length(max=64)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=256)])


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(login_rate, methods=["POST"])
@public_view
def login():
    """Staff login form."""
    form = LoginForm()
    if form.validate_on_submit():
        user = accounts.authenticate(hub_web().engine, form.username.data, form.password.data)
        with hub_web().engine.begin() as conn:
            audit(
                conn,
                "login" if user else "login_failed",
                "user",
                user.id if user else None,
                {"username": form.username.data[:64]},
            )
        if user is not None:
            target = _safe_next(request.args.get("next"))
            session.clear()  # a fresh session at login
            login_user(StaffUser(user))
            session.permanent = True
            session["login_at"] = datetime.now(UTC).timestamp()
            return redirect(target or url_for("admin.index"))
        flash(_("Wrong username or password."), "error")
    return render_template("auth/login.html", form=form), 200 if request.method == "GET" else 400


@bp.post("/logout")
@public_view
def logout():
    """End the staff session (POST with the CSRF token, so another site cannot log you out)."""
    if current_user.is_authenticated:
        with hub_web().engine.begin() as conn:
            audit(conn, "logout", "user", current_user.id)
    logout_user()
    session.clear()
    flash(_("You are logged out."), "info")
    return redirect(url_for("auth.login"))


@bp.get("/lang/<code>")
@public_view
def set_language(code: str):
    """Switch the interface language (vi or en) and go back where the user was."""
    if code not in LOCALES:
        abort(404)
    response = make_response(redirect(_safe_next(request.args.get("next")) or "/"))
    response.set_cookie(LANG_COOKIE, code, max_age=365 * 24 * 3600, samesite="Lax", httponly=True)
    return response


def end_stale_sessions() -> None:
    """``before_request``: log out a session that passed the absolute limit since login."""
    if not current_user.is_authenticated:
        return
    login_at = session.get("login_at")
    if login_at is None or datetime.now(UTC).timestamp() - login_at > ABSOLUTE_SESSION_LIMIT.total_seconds():
        logout_user()
        session.clear()


def allowed_roles_of(view: Callable) -> Iterable[Role] | None:
    """The roles a view admits, or None for a public view (used by the authorization tests)."""
    return getattr(view, "allowed_roles", None)
