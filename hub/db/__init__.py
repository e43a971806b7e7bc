"""The hub database: engine construction (SQLite or PostgreSQL) and serialised Alembic migrations."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.pool import StaticPool

log = logging.getLogger(__name__)

#: Key of the PostgreSQL advisory lock that serialises migrations ("antoan" as a 64-bit constant).
MIGRATION_LOCK_KEY = 0x616E746F616E01

_MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Alembic's `context` and `op` are process-wide proxies, so two upgrades in one process must not overlap
# even where the database lock would not stop them (in-memory SQLite, or two engines on one file).
_ALEMBIC_LOCK = threading.Lock()

_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA busy_timeout=30000",
    "PRAGMA foreign_keys=ON",
)


def to_db_time(value: datetime) -> datetime:
    """A timezone-aware time as stored: UTC (SQLite keeps no offset, so every stored time is UTC)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("times must be timezone-aware, e.g. datetime.now(UTC)")
    return value.astimezone(UTC)


def from_db_time(value: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite hands back naive UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def from_epoch_s(epoch_s: int) -> datetime:
    """An aware UTC datetime of a time stored as epoch seconds (visits, cases' windows)."""
    return datetime.fromtimestamp(int(epoch_s), UTC)


class DatabaseError(Exception):
    """The hub database cannot be used as configured; the message says what to fix."""


def _sqlite_file(engine: Engine) -> Path | None:
    """The database file of a SQLite engine, or None for an in-memory database."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _on_sqlite_connect(dbapi_connection, connection_record) -> None:
    # pysqlite's own transaction handling skips BEGIN before DDL and SELECT; switch it off and let the
    # "begin" listener below emit BEGIN, so every SQLAlchemy transaction is a real, atomic one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _on_sqlite_begin(conn: Connection) -> None:
    # A transaction that reads before it writes must take the write lock first: a deferred one that
    # finds another writer committed since its read fails at once ("database is locked"), without
    # the busy timeout's wait. See :func:`writing`.
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


_WRITE = "antoan_write"


def dialect_insert(bind: Connection | Engine, table):
    """The backend's own ``INSERT`` for ``table`` (it has ``on_conflict_do_nothing/do_update``)."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql if bind.dialect.name == "postgresql" else sqlite).insert(table)


def writing(engine: Engine) -> Engine:
    """``engine`` for a transaction that reads, then writes: ``with writing(engine).begin() as conn``.

    On SQLite it begins with the write lock held (waiting up to the busy timeout for other writers);
    on PostgreSQL it changes nothing.
    """
    return engine.execution_options(**{_WRITE: True})


def make_engine(url: str) -> Engine:
    """Create the engine for a ``sqlite:///path`` or ``postgresql+psycopg://`` URL.

    SQLite gets its folder created, WAL with ``synchronous=FULL``, a 30 s busy timeout, foreign keys
    and real transactions (transactional DDL included). PostgreSQL gets ``pool_pre_ping``.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            # One shared connection, so every thread sees the same (migrated) in-memory database.
            engine = create_engine(parsed, poolclass=StaticPool, connect_args={"check_same_thread": False})
        else:
            engine = create_engine(parsed)
        path = _sqlite_file(engine)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True)
    raise DatabaseError(
        f"unsupported database URL scheme {parsed.drivername!r}: use sqlite:/// or postgresql+psycopg://"
    )


def _alembic_config(connection: Connection):
    from alembic.config import Config

    config = Config()
    # ConfigParser interpolation would treat a "%" in the install path as a placeholder.
    config.set_main_option("script_location", str(_MIGRATIONS_DIR).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@functools.cache
def _script_heads() -> frozenset[str]:
    """The head revisions of the migration scripts, read once per process (a running process keeps the
    code it started with, migrations included)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS_DIR).replace("%", "%%"))
    return frozenset(ScriptDirectory.from_config(config).get_heads())


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    with _ALEMBIC_LOCK:
        # A database already at head is the common case (every start but the first, every test on a
        # migrated copy); Alembic's upgrade would parse every migration script again (~20 ms) to do
        # nothing. Any other state (older, empty, or a revision these scripts do not know) goes to it.
        if frozenset(MigrationContext.configure(connection).get_current_heads()) == _script_heads():
            return
        command.upgrade(_alembic_config(connection), "head")


def migrate(engine: Engine) -> None:
    """Upgrade the database to the newest Alembic revision.

    Safe to run from several processes at once (the bridge and the web app both call it at start-up):
    PostgreSQL serialises on an advisory lock, a SQLite file on ``<dbfile>.migrate.lock``. The upgrade
    runs in one transaction, so a failed migration leaves the previous revision intact.
    """
    dialect = engine.dialect.name
    if dialect == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            conn.commit()
            try:
                with conn.begin():
                    _upgrade(conn)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                conn.commit()
    elif dialect == "sqlite":
        path = _sqlite_file(engine)
        lock: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if path is not None:
            lock = _file_lock(path.with_name(path.name + ".migrate.lock"))
        with lock, engine.begin() as conn:
            _upgrade(conn)
    else:
        raise DatabaseError(f"unsupported database dialect {dialect!r}")
    log.info("database migrated to revision %s", current_revision(engine))


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at, or None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    """The newest revision among the hub's migration scripts."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS_DIR).replace("%", "%%"))
    return ScriptDirectory.from_config(config).get_current_head()
