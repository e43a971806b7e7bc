"""Database fixtures for hub tests: every database test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, make_url, text

from hub.db import make_engine, migrate
from hub.db.store import HubStore

DEFAULT_PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _pg_admin_url() -> str:
    url = make_url(os.environ.get("ANTOAN_TEST_PG_URL", DEFAULT_PG_ADMIN_URL))
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


@pytest.fixture(scope="session")
def pg_admin_engine() -> Iterator[Engine | str]:
    """An AUTOCOMMIT engine on the PostgreSQL admin URL, or the reason it is unreachable (checked once)."""
    url = _pg_admin_url()
    engine = create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        engine.dispose()
        first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        yield first
        return
    yield engine
    engine.dispose()


def _postgres_database(request: pytest.FixtureRequest) -> Iterator[str]:
    admin = request.getfixturevalue("pg_admin_engine")
    if isinstance(admin, str):
        safe = make_url(_pg_admin_url()).render_as_string(hide_password=True)
        message = f"PostgreSQL not reachable at {safe}: {admin}"
        if _in_ci():
            pytest.fail(message + " (CI=true: PostgreSQL must be available)")
        pytest.skip(message)
    name = f"antoan_t_{uuid.uuid4().hex}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """URL of a fresh, empty database: a SQLite file under tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub' / 'hub.db'}"
    else:
        yield from _postgres_database(request)


@pytest.fixture
def hub_engine(db_url: str) -> Iterator[Engine]:
    """A migrated engine on ``db_url``, disposed afterwards."""
    engine = make_engine(db_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def hub_store(hub_engine: Engine) -> HubStore:
    """A :class:`HubStore` on the migrated test database."""
    return HubStore(hub_engine)
