"""The Flask extensions every blueprint uses, made once and bound in :func:`hub.web.app.create_app`.

- ``csrf``: Flask-WTF CSRF protection on every form (the machine API under ``/api`` is exempt: it takes
  bearer tokens only, never a session cookie).
- ``limiter``: Flask-Limiter; public forms and login carry limits from ``[web]`` settings.
- ``babel``: Flask-Babel, Vietnamese by default, English second.
- ``login_manager``: Flask-Login for staff sessions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import current_app, g, request
from flask_babel import Babel
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, current_user
from flask_wtf import CSRFProtect

from hub import audit as audit_log

LOCALES = ("vi", "en")
DEFAULT_LOCALE = "vi"
LANG_COOKIE = "lang"

csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address, default_limits=[], headers_enabled=True)
babel = Babel()
login_manager = LoginManager()


def hub_web():
    """The current app's :class:`hub.web.app.HubWeb` (config, engine, store, key ring…)."""
    return current_app.extensions["antoan"]


def select_locale() -> str:
    """``?lang=`` for this request, else the language cookie, else Vietnamese."""
    for candidate in (request.args.get("lang"), request.cookies.get(LANG_COOKIE)):
        if candidate in LOCALES:
            return candidate
    return DEFAULT_LOCALE


def public_form_rate() -> str:
    return hub_web().config.web.public_form_rate


def login_rate() -> str:
    return hub_web().config.web.login_rate


def actor() -> tuple[str, str | None]:
    """(name, role) of whoever makes the current request, for the audit log: an API token or a user."""
    principal = g.get("api_principal")
    if principal is not None:
        return f"token:{principal.token_id}:{principal.name}", principal.role.value
    if current_user and current_user.is_authenticated:
        return current_user.audit_name, current_user.role.value
    return "anonymous", None


def audit(
    conn,
    action: str,
    target_type: str | None = None,
    target_id: str | int | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Record an audit entry for the current request's user, inside ``conn``'s transaction."""
    name, role = actor()
    audit_log.record(
        conn,
        actor=name,
        role=role,
        action=action,
        target_type=target_type,
        target_id=target_id,
        detail=detail,
        remote_addr=request.remote_addr,
    )
