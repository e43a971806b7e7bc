"""Helpers for tests of the hub's staff pages: config, users, tokens, CSRF tokens and logging in."""

from __future__ import annotations

import re
import socket
from datetime import datetime

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine

from hub import accounts
from hub.accounts import Role
from hub.config import HubConfig

PASSWORD = "đúng-mật-khẩu-42"
_CSRF_RE = re.compile(r'name="csrf_token"[^>]*?value="([^"]+)"')


def free_port() -> int:
    """A loopback port nobody listens on (for an MQTT setting the web tests never reach)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hub_config(db_url: str, **web) -> HubConfig:
    """A hub config on ``db_url`` with ``[web]`` overrides (e.g. ``login_rate``)."""
    return HubConfig.model_validate(
        {"database": {"url": db_url}, "mqtt": {"host": "127.0.0.1", "port": free_port()}, "web": web}
    )


def engine_of(app: Flask) -> Engine:
    return app.extensions["antoan"].engine


def make_user(
    app: Flask, username: str, role: Role | str, password: str = PASSWORD, **fields
) -> accounts.User:
    """Create a staff user directly in the app's database."""
    with engine_of(app).begin() as conn:
        return accounts.create_user(
            conn,
            username=username,
            display_name=fields.get("display_name", username),
            role=role,
            password=password,
        )


def make_token(
    app: Flask, role: Role | str, *, name: str = "test", expires_at: datetime | None = None
) -> tuple[int, str]:
    """Create an API token directly; returns ``(id, clear token)``."""
    with engine_of(app).begin() as conn:
        return accounts.create_api_token(conn, name=name, role=role, created_by=None, expires_at=expires_at)


def csrf_token(client: FlaskClient) -> str:
    """A valid CSRF token for ``client``'s session (read from the login form)."""
    html = client.get("/login").get_data(as_text=True)
    match = _CSRF_RE.search(html)
    assert match, "no CSRF token on the login page"
    return match.group(1)


def post(client: FlaskClient, path: str, data: dict | None = None, **kwargs):
    """POST a form with a valid CSRF token."""
    return client.post(path, data={"csrf_token": csrf_token(client), **(data or {})}, **kwargs)


def login(client: FlaskClient, username: str, password: str = PASSWORD, *, next_url: str | None = None):
    """Log in through the real login form; returns the response (302 on success)."""
    path = "/login" if next_url is None else f"/login?next={next_url}"
    return post(client, path, {"username": username, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
