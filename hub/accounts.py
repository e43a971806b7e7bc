"""Staff accounts and machine API tokens: roles, argon2 password hashes, login checks.

Roles (DESIGN.md): ``admin`` manages users and sees everything; ``health_official`` works with
declarations and cases; ``district_it`` provisions kiosks; ``venue_manager`` runs a venue's kiosks.
"""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from hub.db import from_db_time, writing
from hub.db.schema import api_tokens, users

#: argon2id with the library's RFC 9106 "low memory" profile (64 MiB, 3 passes): fits a Pi-class hub.
_HASHER = PasswordHasher()
#: Verified against when the user does not exist, so a wrong username costs as much as a wrong password.
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(16))

MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 256
TOKEN_PREFIX = "at_"


class Role(StrEnum):
    ADMIN = "admin"
    HEALTH_OFFICIAL = "health_official"
    DISTRICT_IT = "district_it"
    VENUE_MANAGER = "venue_manager"


class AccountError(ValueError):
    """A user or token cannot be created or changed as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    display_name: str
    role: Role
    active: bool
    created_at: datetime
    last_login_at: datetime | None
    session_version: int


@dataclass(frozen=True, slots=True)
class ApiPrincipal:
    """Who is calling the JSON API with a bearer token."""

    token_id: int
    name: str
    role: Role


def _now() -> datetime:
    return datetime.now(UTC)


def normalise_username(username: str) -> str:
    """Usernames compare case-insensitively and NFC-normalised; 3–64 of letters, digits, ``._-``."""
    name = unicodedata.normalize("NFC", (username or "").strip()).lower()
    if not 3 <= len(name) <= 64 or not all(c.isalnum() or c in "._-" for c in name):
        raise AccountError("username must be 3 to 64 letters, digits, '.', '_' or '-'")
    return name


def check_password_policy(password: str) -> None:
    """Raise :class:`AccountError` when a new password is too short or too long."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(f"password must have at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise AccountError(f"password must have at most {MAX_PASSWORD_CHARS} characters")


def _user(row) -> User:
    return User(
        id=row.id,
        username=row.username,
        display_name=row.display_name,
        role=Role(row.role),
        active=bool(row.active),
        created_at=row.created_at,
        last_login_at=row.last_login_at,
        session_version=row.session_version,
    )


def create_user(
    conn: Connection, *, username: str, display_name: str, role: Role | str, password: str
) -> User:
    """Create an active user; raises :class:`AccountError` for a taken username, bad role or weak password."""
    name = normalise_username(username)
    try:
        role = Role(role)
    except ValueError:
        raise AccountError(f"role must be one of {', '.join(r.value for r in Role)}") from None
    display = unicodedata.normalize("NFC", (display_name or "").strip()) or name
    if len(display) > 200:
        raise AccountError("display name must have at most 200 characters")
    check_password_policy(password)
    values = {
        "username": name,
        "display_name": display,
        "role": role.value,
        "password_hash": _HASHER.hash(password),
        "active": True,
        "created_at": _now(),
        "session_version": 1,
    }
    try:
        with conn.begin_nested():
            user_id = conn.execute(insert(users).values(values).returning(users.c.id)).scalar_one()
    except IntegrityError:
        raise AccountError(f"username {name!r} is already taken") from None
    return get_user(conn, user_id)  # type: ignore[return-value]


def get_user(conn: Connection, user_id: int) -> User | None:
    row = conn.execute(select(users).where(users.c.id == user_id)).first()
    return _user(row) if row else None


def get_user_by_name(conn: Connection, username: str) -> User | None:
    try:
        name = normalise_username(username)
    except AccountError:
        return None
    row = conn.execute(select(users).where(users.c.username == name)).first()
    return _user(row) if row else None


def list_users(conn: Connection) -> list[User]:
    return [_user(r) for r in conn.execute(select(users).order_by(users.c.username))]


def authenticate(engine: Engine, username: str, password: str) -> User | None:
    """The active user with this username and password, or None. Equal cost for unknown usernames.

    The hash is checked outside any transaction (argon2 takes a while by design), and the login is
    recorded in a write transaction of its own that also checks the password and the account did not
    change meanwhile (a deferred read-then-write transaction on SQLite fails at once when another
    connection commits in between: see :func:`hub.db.writing`)."""
    try:
        name = normalise_username(username)
    except AccountError:
        name = None
    row = None
    if name:
        with engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.username == name)).first()
    stored = row.password_hash if row is not None else _DUMMY_HASH
    try:
        _HASHER.verify(stored, password or "")
    except (VerificationError, InvalidHashError):
        return None
    if row is None or not row.active:
        return None
    values: dict = {"last_login_at": _now()}
    if _HASHER.check_needs_rehash(stored):
        values["password_hash"] = _HASHER.hash(password)
    with writing(engine).begin() as conn:
        recorded = conn.execute(
            update(users)
            .where(users.c.id == row.id, users.c.password_hash == stored, users.c.active.is_(True))
            .values(values)
        ).rowcount
        return get_user(conn, row.id) if recorded else None


def set_password(conn: Connection, user_id: int, password: str) -> None:
    """Set a new password and end the user's existing sessions."""
    check_password_policy(password)
    _change(conn, user_id, password_hash=_HASHER.hash(password), session_version=users.c.session_version + 1)


def set_active(conn: Connection, user_id: int, active: bool) -> None:
    """Enable or disable a user; disabling ends their sessions at the next request."""
    _change(conn, user_id, active=active, session_version=users.c.session_version + 1)


def set_role(conn: Connection, user_id: int, role: Role | str) -> None:
    """Change a user's role (ends their sessions, so the new rights apply at once)."""
    try:
        role = Role(role)
    except ValueError:
        raise AccountError(f"role must be one of {', '.join(r.value for r in Role)}") from None
    _change(conn, user_id, role=role.value, session_version=users.c.session_version + 1)


def _change(conn: Connection, user_id: int, **values) -> None:
    if conn.execute(update(users).where(users.c.id == user_id).values(values)).rowcount != 1:
        raise AccountError(f"no user with id {user_id}")


# ------------------------------------------------------------------------------------------ API tokens


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def create_api_token(
    conn: Connection,
    *,
    name: str,
    role: Role | str,
    created_by: int | None,
    expires_at: datetime | None = None,
) -> tuple[int, str]:
    """Create a token; returns ``(id, token)``. The clear token is shown once: only its SHA-256 is kept."""
    name = (name or "").strip()
    if not 1 <= len(name) <= 200:
        raise AccountError("token name must have 1 to 200 characters")
    try:
        role = Role(role)
    except ValueError:
        raise AccountError(f"role must be one of {', '.join(r.value for r in Role)}") from None
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = conn.execute(
        insert(api_tokens)
        .values(
            name=name,
            role=role.value,
            token_sha256=_token_digest(token),
            created_by=created_by,
            created_at=_now(),
            expires_at=expires_at,
        )
        .returning(api_tokens.c.id)
    ).scalar_one()
    return token_id, token


def revoke_api_token(conn: Connection, token_id: int) -> None:
    if (
        conn.execute(
            update(api_tokens)
            .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=_now())
        ).rowcount
        != 1
    ):
        raise AccountError(f"no active API token with id {token_id}")


def api_principal(conn: Connection, token: str, now: datetime | None = None) -> ApiPrincipal | None:
    """The principal of a valid (known, unrevoked, unexpired) bearer token, or None."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = conn.execute(select(api_tokens).where(api_tokens.c.token_sha256 == _token_digest(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    now = now or _now()
    if row.expires_at is not None and from_db_time(row.expires_at) <= now:
        return None
    return ApiPrincipal(token_id=row.id, name=row.name, role=Role(row.role))
