"""Health-pass signing keys: made on first use, stored encrypted, rotated; the trust list kiosks verify with.

One key is active at a time and signs every new pass. :meth:`KeyRing.rotate` retires it: a retired key
signs nothing more but stays in the trust list until every pass it signed has expired. Every change
to the keys bumps the ``trust`` row of ``list_versions`` in the same transaction, which is also what
serialises concurrent changes (the upsert takes the row lock on PostgreSQL and the write lock on
SQLite), so several web workers asking for the first key at once create exactly one.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives import serialization
from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from hub.config import PassSettings
from hub.db import from_db_time, to_db_time
from hub.db.schema import list_versions, passes, signing_keys
from protocol.healthpass import SigningKey, TrustedKey, TrustList

log = logging.getLogger(__name__)

TRUST = "trust"
STATUS = "status"

#: ``trusted_until`` of the active key: it stays trusted until it is retired.
ACTIVE_UNTIL = datetime(9000, 1, 1, tzinfo=UTC)
#: Slack on both ends of a key's window in the trust list: hub processes' clocks differ a little, and a
#: web worker may sign with the key it just read while another process retires it.
CLOCK_MARGIN = timedelta(minutes=5)


class KeyRingError(RuntimeError):
    """The signing keys cannot be used as configured; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One stored signing key, as ``antoan-hub keys list`` shows it."""

    kid: str
    alg: str
    encrypted: bool
    created_at: datetime
    retired_at: datetime | None
    trusted_until: datetime | None  # None while the key is active
    passes_signed: int

    @property
    def active(self) -> bool:
        """True for the key that signs new passes."""
        return self.retired_at is None


# ------------------------------------------------------------------------------------- helpers


def _floor_second(value: datetime) -> datetime:
    return value.replace(microsecond=0)


def _ceil_second(value: datetime) -> datetime:
    return value if value.microsecond == 0 else value.replace(microsecond=0) + timedelta(seconds=1)


def bump_list_version(conn: Connection, name: str, now: datetime) -> int:
    """Add one to the ``list_versions`` row ``name`` (created at 1) inside the caller's transaction.

    One ``INSERT … ON CONFLICT DO UPDATE SET version = version + 1``: correct under concurrency on
    PostgreSQL and SQLite, and it holds the row (PostgreSQL) or the database (SQLite) write lock until
    the transaction ends. Returns the new version.
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(list_versions)
    elif dialect == "sqlite":
        stmt = sqlite.insert(list_versions)
    else:
        raise KeyRingError(f"unsupported database dialect {dialect!r}")
    stmt = stmt.values(name=name, version=1, changed_at=to_db_time(now))
    stmt = stmt.on_conflict_do_update(
        index_elements=[list_versions.c.name],
        set_={"version": list_versions.c.version + 1, "changed_at": stmt.excluded.changed_at},
    ).returning(list_versions.c.version)
    return int(conn.execute(stmt).scalar_one())


def list_version(conn: Connection, name: str) -> int:
    """The current version of a published list (0 when it never changed)."""
    value = conn.execute(select(list_versions.c.version).where(list_versions.c.name == name)).scalar()
    return int(value or 0)


def list_versions_now(conn: Connection) -> dict[str, int]:
    """Every list's version in one query, e.g. ``{"trust": 3, "status": 41}`` (missing lists are 0)."""
    found = {
        name: version for name, version in conn.execute(select(list_versions.c.name, list_versions.c.version))
    }
    return {TRUST: int(found.get(TRUST, 0)), STATUS: int(found.get(STATUS, 0)), **found}


# ------------------------------------------------------------------------------------- the ring


class KeyRing:
    """The hub's signing keys in the database, with decrypted keys cached in memory.

    Safe to share between threads; every process (web worker, bridge) makes its own.
    """

    def __init__(self, engine: Engine, settings: PassSettings):
        self._engine = engine
        self._settings = settings
        self._cache: dict[str, SigningKey] = {}
        self._lock = threading.Lock()

    @property
    def _passphrase(self) -> str | None:
        secret = self._settings.key_passphrase
        return secret.get_secret_value() if secret is not None else None

    # ----- public API ------------------------------------------------------------------------------

    def signing_key(self, now: datetime, *, conn: Connection | None = None) -> tuple[str, SigningKey]:
        """(kid hex, key) of the active key; on first use generates one (``settings.key_alg``) and stores it.

        Safe when several processes call it at once: exactly one key is created. With ``conn`` the key
        is read (and, the first time, created) inside that caller's transaction: on SQLite a second
        connection would wait for the caller's own write lock. Raises :class:`KeyRingError` when the
        key cannot be decrypted or was created after ``now`` (a pass dated before its key never verifies).
        """
        now = to_db_time(now)
        if conn is not None:
            row = self._active_row(conn) or self._create_first(conn, now)
        else:
            with self._engine.connect() as read:
                row = self._active_row(read)
            if row is None:
                with self._engine.begin() as write:
                    row = self._create_first(write, now)
        kid, alg, pem, encrypted, created_at = row
        if from_db_time(created_at) - CLOCK_MARGIN > now:
            raise KeyRingError(
                f"the active signing key {kid} was created at {from_db_time(created_at).isoformat()}, "
                f"after {now.isoformat()}: a pass cannot be dated before its key (check the clock)"
            )
        return kid, self._load(kid, pem, encrypted, alg)

    def rotate(self, now: datetime) -> str:
        """Make a new active key and retire the old one; returns the new key's kid hex.

        The old key signs nothing more but stays in the trust list until every pass it signed has
        expired: ``trusted_until`` = the later of ``retired_at + validity`` and its last pass's expiry.
        Raises :class:`KeyRingError` when the configured passphrase does not open the active key.
        """
        now = to_db_time(now)
        with self._engine.begin() as conn:
            bump_list_version(conn, TRUST, now)
            active = self._active_row(conn)
            if active is not None:
                # A mistyped passphrase must fail here, not store a new key nobody else can decrypt.
                kid, alg, pem, encrypted, _ = active
                self._load(kid, pem, encrypted, alg)
            validity = timedelta(days=self._settings.validity_days)
            for (old_kid,) in conn.execute(
                select(signing_keys.c.kid).where(signing_keys.c.retired_at.is_(None))
            ).all():
                last_expiry = conn.execute(
                    select(func.max(passes.c.expires_at)).where(passes.c.kid == old_kid)
                ).scalar()
                until = now + CLOCK_MARGIN + validity
                if last_expiry is not None:
                    until = max(until, from_db_time(last_expiry))
                conn.execute(
                    update(signing_keys)
                    .where(signing_keys.c.kid == old_kid)
                    .values(retired_at=now, trusted_until=to_db_time(until))
                )
                log.info("signing key %s retired; trusted until %s", old_kid, until.isoformat())
            kid = self._insert_new(conn, now)
        return kid

    def trust_list(self, now: datetime) -> TrustList:
        """The keys kiosks must still trust at ``now``, with the ``trust`` version from ``list_versions``."""
        now = to_db_time(now)
        with self._engine.connect() as conn:
            # Version first: the keys read after it are at least as new, so a list is never published
            # with an old content under a new version (the publisher would then never resend it).
            version = list_version(conn, TRUST)
            rows = conn.execute(
                select(
                    signing_keys.c.kid,
                    signing_keys.c.alg,
                    signing_keys.c.public_pem,
                    signing_keys.c.created_at,
                    signing_keys.c.retired_at,
                )
                .where(signing_keys.c.trusted_until > now)
                .order_by(signing_keys.c.created_at)
            ).all()
        keys = [self._trusted(*row) for row in rows]
        return TrustList(keys, version=version, issued_at=now)

    def list_keys(self) -> list[KeyInfo]:
        """Every stored key, oldest first, with how many passes each signed."""
        counts = (
            select(passes.c.kid, func.count().label("n")).group_by(passes.c.kid).subquery("signed_counts")
        )
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(
                    signing_keys.c.kid,
                    signing_keys.c.alg,
                    signing_keys.c.encrypted,
                    signing_keys.c.created_at,
                    signing_keys.c.retired_at,
                    signing_keys.c.trusted_until,
                    func.coalesce(counts.c.n, 0),
                )
                .select_from(signing_keys.outerjoin(counts, counts.c.kid == signing_keys.c.kid))
                .order_by(signing_keys.c.created_at, signing_keys.c.kid)
            ).all()
        return [
            KeyInfo(
                kid=kid,
                alg=alg,
                encrypted=bool(encrypted),
                created_at=from_db_time(created),
                retired_at=None if retired is None else from_db_time(retired),
                trusted_until=None if retired is None else from_db_time(until),
                passes_signed=int(n),
            )
            for kid, alg, encrypted, created, retired, until, n in rows
        ]

    # ----- internals -------------------------------------------------------------------------------

    @staticmethod
    def _active_row(conn: Connection):
        return conn.execute(
            select(
                signing_keys.c.kid,
                signing_keys.c.alg,
                signing_keys.c.private_pem,
                signing_keys.c.encrypted,
                signing_keys.c.created_at,
            )
            .where(signing_keys.c.retired_at.is_(None))
            .order_by(signing_keys.c.created_at.desc(), signing_keys.c.kid)
            .limit(1)
        ).first()

    def _create_first(self, conn: Connection, now: datetime):
        """Create the first active key unless another process did it meanwhile; returns the active row."""
        with conn.begin_nested() as savepoint:
            bump_list_version(conn, TRUST, now)  # takes the lock every key change takes
            row = self._active_row(conn)
            if row is not None:
                savepoint.rollback()  # someone else created it: no change, no version bump
                return row
            self._insert_new(conn, now)
            row = self._active_row(conn)
        return row

    def _insert_new(self, conn: Connection, now: datetime) -> str:
        key = SigningKey.generate(self._settings.key_alg)
        kid = key.kid.hex()
        passphrase = self._passphrase
        conn.execute(
            insert(signing_keys).values(
                kid=kid,
                alg=key.alg,
                private_pem=key.to_pem(passphrase),
                public_pem=key.public_pem(),
                encrypted=bool(passphrase),
                created_at=now,
                retired_at=None,
                trusted_until=ACTIVE_UNTIL,
            )
        )
        with self._lock:
            self._cache[kid] = key
        if not passphrase:
            log.warning("signing key %s stored unencrypted: set passes.key_passphrase outside a demo", kid)
        log.info("signing key %s (%s) created", kid, key.alg)
        return kid

    def _load(self, kid: str, pem: bytes, encrypted: bool, alg: str) -> SigningKey:
        with self._lock:
            cached = self._cache.get(kid)
        if cached is not None:
            return cached
        passphrase = self._passphrase
        if encrypted and not passphrase:
            raise KeyRingError(
                f"signing key {kid} is stored encrypted but no passphrase is configured: "
                "set passes.key_passphrase (ANTOAN_HUB__PASSES__KEY_PASSPHRASE_FILE)"
            )
        try:
            key = SigningKey.from_pem(pem, passphrase if encrypted else None)
        except ValueError:
            raise KeyRingError(
                f"cannot decrypt signing key {kid}: wrong passes.key_passphrase "
                "(use the passphrase the key was stored with)"
            ) from None
        if key.kid.hex() != kid or key.alg != alg:
            raise KeyRingError(f"stored signing key {kid} does not match its record: the row was altered")
        with self._lock:
            self._cache[kid] = key
        return key

    @staticmethod
    def _trusted(kid: str, alg: str, public_pem: bytes, created_at: datetime, retired_at: datetime | None):
        public_key = serialization.load_pem_public_key(public_pem)
        not_before = _floor_second(from_db_time(created_at)) - CLOCK_MARGIN
        not_after = (
            ACTIVE_UNTIL if retired_at is None else _ceil_second(from_db_time(retired_at)) + CLOCK_MARGIN
        )
        return TrustedKey(bytes.fromhex(kid), alg, public_key, not_before, not_after)  # type: ignore[arg-type]


def format_time(value: datetime | None) -> str:
    """A time for CLI tables: ``2026-11-26 08:30Z``, or ``-``."""
    if value is None:
        return "-"
    return from_db_time(value).strftime("%Y-%m-%d %H:%MZ")
