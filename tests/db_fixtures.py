"""Database fixtures for hub tests: every database test runs on SQLite and on PostgreSQL.

Migrating a new database costs far more than copying one, so each test session migrates one template
per backend (a SQLite file; a PostgreSQL database named from a hash of the migration scripts) and every
test gets a fresh copy of it. Tests of the migrations themselves take ``empty_db_url`` instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import shutil
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import DBAPIError

import hub.db
from hub.db import make_engine, migrate
from hub.db.store import HubStore

DEFAULT_PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

#: Key of the advisory lock (on the admin database) that serialises template builds across pytest
#: processes sharing one server; hub.db.MIGRATION_LOCK_KEY ends in 01, this one in 02.
TEMPLATE_LOCK_KEY = 0x616E746F616E02

_MIGRATIONS_DIR = Path(hub.db.__file__).resolve().parent / "migrations"
_TEMPLATE_PREFIX = "antoan_tmpl_"
_BUILD_PREFIX = "antoan_tbuild_"
_TEST_DB_PREFIX = "antoan_t_"
_COMMENT_PREFIX = "antoan test template built "
# Another checkout (older or newer migrations) may still be cloning its template: leave templates of
# other hashes alone until they are this old, and a run that finds its template gone rebuilds it.
_STALE_AFTER = timedelta(days=2)
_CLONE_RETRY_S = 30.0


def migrations_fingerprint() -> str:
    """A short hash of the migration scripts (``env.py`` and ``versions/*.py``): a changed, added or
    removed migration gives another template."""
    digest = hashlib.sha256()
    for path in [_MIGRATIONS_DIR / "env.py", *sorted((_MIGRATIONS_DIR / "versions").glob("*.py"))]:
        digest.update(path.name.encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _pg_admin_url() -> str:
    url = make_url(os.environ.get("ANTOAN_TEST_PG_URL", DEFAULT_PG_ADMIN_URL))
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _db_url(admin: Engine, database: str) -> str:
    return admin.url.set(database=database).render_as_string(hide_password=False)


def _test_db_name() -> str:
    # The creation time in the name lets a later run drop what a killed run left behind.
    return f"{_TEST_DB_PREFIX}{int(time.time())}_{uuid.uuid4().hex[:16]}"


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


def _made_at(name: str, comment: str | None) -> datetime | None:
    """When one of our databases was made: from a test database's name, or a template's comment."""
    try:
        if name.startswith(_TEST_DB_PREFIX):
            return datetime.fromtimestamp(int(name.removeprefix(_TEST_DB_PREFIX).split("_")[0]), UTC)
        if (comment or "").startswith(_COMMENT_PREFIX):
            return datetime.fromisoformat(comment.removeprefix(_COMMENT_PREFIX))
    except ValueError:
        pass
    return None  # made by something else (an older fixture): left alone


def _drop_stale_pg_databases(conn, keep: str) -> None:
    """Drop what killed runs left behind (test databases, half-built templates) and templates of other
    migration scripts, once they are old enough that no live run can be using them."""
    rows = conn.execute(
        text(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE datname LIKE :tmpl OR datname LIKE :build OR datname LIKE :test"
        ),
        {"tmpl": _TEMPLATE_PREFIX + "%", "build": _BUILD_PREFIX + "%", "test": _TEST_DB_PREFIX + "%"},
    ).all()
    now = datetime.now(UTC)
    for name, comment in rows:
        made = _made_at(name, comment)
        if name == keep or made is None or now - made < _STALE_AFTER:
            continue
        # No FORCE: a database someone is connected to stays.
        with contextlib.suppress(DBAPIError):
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))


def _ensure_pg_template(admin: Engine) -> str:
    """The name of the migrated template database for the current migration scripts, built if missing.

    It is built under a temporary name and renamed when complete, so a run killed mid-build never leaves
    a half-migrated template; it then refuses connections, since ``CREATE DATABASE … TEMPLATE`` fails
    while anyone is connected to the template.
    """
    name = _TEMPLATE_PREFIX + migrations_fingerprint()
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": TEMPLATE_LOCK_KEY})
        try:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
            if exists is None:
                build = f"{_BUILD_PREFIX}{uuid.uuid4().hex}"
                built = _COMMENT_PREFIX + datetime.now(UTC).isoformat()
                conn.execute(text(f'CREATE DATABASE "{build}"'))
                conn.execute(text(f"COMMENT ON DATABASE \"{build}\" IS '{built}'"))
                try:
                    engine = make_engine(_db_url(admin, build))
                    try:
                        migrate(engine)
                    finally:
                        engine.dispose()
                    conn.execute(text(f'ALTER DATABASE "{build}" ALLOW_CONNECTIONS false'))
                    conn.execute(text(f'ALTER DATABASE "{build}" RENAME TO "{name}"'))
                except BaseException:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{build}" WITH (FORCE)'))
                    raise
            _drop_stale_pg_databases(conn, keep=name)
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": TEMPLATE_LOCK_KEY})
    return name


def _create_pg_database(admin: Engine, name: str, template: str | None) -> None:
    """CREATE DATABASE, copied from ``template`` when given (rebuilt if another run dropped it)."""
    if template is None:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        return
    deadline = time.monotonic() + _CLONE_RETRY_S
    delay = 0.02
    while True:
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
            return
        except DBAPIError as exc:
            # 55006 object_in_use: "source database is being accessed by other users" (someone is
            # connected to the template; never we: it refuses connections); 3D000 invalid_catalog_name:
            # another run dropped it as stale, so build it again.
            if _sqlstate(exc) not in ("55006", "3D000") or time.monotonic() > deadline:
                raise
            if _sqlstate(exc) == "3D000":
                template = _ensure_pg_template(admin)
                continue
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


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


class _PgDropper:
    """Drops finished test databases on a thread of its own, all that are waiting at once.

    PostgreSQL 15 checkpoints on every DROP DATABASE (0.1-0.8 s here) and waits for it; drops issued
    together share one checkpoint (8 in a row took 6-7 s, 8 at once 0.15-0.3 s), and the tests need
    not wait for any of it. The queue is bounded, so a backlog cannot pile up copies on disk; ``close``
    drops the rest. (Making the next copy ahead as well was measured and lost: the checkpoints then
    also write out the fresh copy's pages.)
    """

    def __init__(self, admin: Engine, *, parallel: int = 8):
        self._admin = admin
        self._parallel = parallel
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=32)
        self._failures: list[str] = []
        self._thread = threading.Thread(target=self._run, name="pg-test-db-dropper", daemon=True)
        self._thread.start()

    def drop(self, name: str) -> None:
        """Queue ``name`` for DROP DATABASE … WITH (FORCE); blocks while the queue is full."""
        self._queue.put(name)

    def _drop_one(self, name: str) -> None:
        try:
            with self._admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        except Exception as exc:  # reported by close(); the other drops go on
            self._failures.append(f"{name}: {exc}")

    def _run(self) -> None:
        with ThreadPoolExecutor(self._parallel, thread_name_prefix="pg-test-db-drop") as pool:
            stopping = False
            while not stopping:
                batch = [self._queue.get()]
                while True:  # everything queued meanwhile goes in the same batch
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stopping = None in batch
                list(pool.map(self._drop_one, [name for name in batch if name is not None]))

    def close(self) -> None:
        """Drop what is queued, then stop; warn about databases that could not be dropped."""
        self._queue.put(None)
        self._thread.join()
        if self._failures:
            warnings.warn("test databases left behind: " + "; ".join(self._failures), stacklevel=1)


@pytest.fixture(scope="session")
def pg_dropper(pg_admin_engine: Engine) -> Iterator[_PgDropper]:
    """This session's background dropper of finished PostgreSQL test databases."""
    dropper = _PgDropper(pg_admin_engine)
    yield dropper
    dropper.close()


@pytest.fixture(scope="session")
def pg_template(pg_admin_engine: Engine | str) -> str | None:
    """Name of this session's migrated PostgreSQL template database (None when PostgreSQL is away)."""
    if isinstance(pg_admin_engine, str):
        return None
    return _ensure_pg_template(pg_admin_engine)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file of this session, checkpointed so that the main file alone is the database."""
    path = tmp_path_factory.mktemp("sqlite-template") / "hub.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        migrate(engine)
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        engine.dispose()
    return path


def _postgres_database(request: pytest.FixtureRequest, *, migrated: bool) -> Iterator[str]:
    admin = request.getfixturevalue("pg_admin_engine")
    if isinstance(admin, str):
        safe = make_url(_pg_admin_url()).render_as_string(hide_password=True)
        message = f"PostgreSQL not reachable at {safe}: {admin}"
        if _in_ci():
            pytest.fail(message + " (CI=true: PostgreSQL must be available)")
        pytest.skip(message)
    template = request.getfixturevalue("pg_template") if migrated else None
    dropper = request.getfixturevalue("pg_dropper")
    name = _test_db_name()
    _create_pg_database(admin, name, template)
    # A test database need not wait for its WAL to reach the disk at each commit (the server's other
    # databases keep their setting; only a crash of the server itself could lose the last commits).
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit TO off'))
    try:
        yield _db_url(admin, name)
    finally:
        dropper.drop(name)


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def db_backend(request: pytest.FixtureRequest) -> str:
    """The backend a database test runs on; every database test runs once on each."""
    return request.param


@pytest.fixture
def empty_db_url(request: pytest.FixtureRequest, db_backend: str, tmp_path) -> Iterator[str]:
    """URL of a fresh, empty (never migrated) database: for tests of the migrations themselves."""
    if db_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub' / 'hub.db'}"
    else:
        yield from _postgres_database(request, migrated=False)


@pytest.fixture
def db_url(request: pytest.FixtureRequest, db_backend: str, tmp_path) -> Iterator[str]:
    """URL of a fresh database of the test's own, already migrated to the newest revision (a copy of
    the session's template): a SQLite file under tmp_path, or a new PostgreSQL database."""
    if db_backend == "sqlite":
        path = tmp_path / "hub" / "hub.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
    else:
        yield from _postgres_database(request, migrated=True)


@pytest.fixture
def hub_engine(db_url: str) -> Iterator[Engine]:
    """A migrated engine on ``db_url``, disposed afterwards."""
    engine = make_engine(db_url)
    # The copy is already at head, so this only checks that (migrations run in every database test).
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def hub_store(hub_engine: Engine) -> HubStore:
    """A :class:`HubStore` on the migrated test database."""
    return HubStore(hub_engine)
