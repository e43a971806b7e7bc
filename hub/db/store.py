"""The hub's data access for the ingest path: one atomic commit of events, dead letters and kiosk states."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from hub.db import from_db_time, writing
from hub.db.schema import DEAD_LETTER_PAYLOAD_MAX
from hub.db.schema import dead_letters as dead_letters_table
from hub.db.schema import events as events_table
from hub.db.schema import kiosks as kiosks_table
from hub.identity import HubIdentity
from hub.presence import PRESENCE_KINDS, Presence
from hub.tracing_rules import TracingRules

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EventRow:
    """One validated event from a kiosk, keyed by ``(kiosk_id, epoch, seq)``."""

    kiosk_id: str
    epoch: str
    seq: int
    uuid: str
    kind: str
    device_time: datetime
    body: dict


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the bridge could not accept, with the reason."""

    topic: str
    kiosk_id: str | None
    reason: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class KioskStateRow:
    """The latest state a kiosk reported (or its last will)."""

    kiosk_id: str
    status: str
    version: str
    outbox_depth: int | None
    oldest_unacked_age_s: float | None
    list_ages: dict
    sent_at: datetime | None


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else from_db_time(ts).isoformat(timespec="milliseconds")


def _clean_text(value: str, limit: int | None = None) -> str:
    # PostgreSQL text cannot hold NUL; a column limit must never make a whole commit fail.
    value = value.replace("\x00", "\\0")
    return value if limit is None else value[:limit]


_EVENT_COLUMNS = "kiosk_id, epoch, seq, uuid, kind, device_time, received_at, body"
_SQLITE_INSERT_EVENTS = (
    f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (kiosk_id, epoch, seq) DO NOTHING"
)
_PG_CREATE_INCOMING = (
    "CREATE TEMPORARY TABLE antoan_incoming_events (kiosk_id text, epoch text, seq bigint, uuid text, "
    "kind text, device_time timestamptz, received_at timestamptz, body json) ON COMMIT DELETE ROWS"
)
_PG_COPY_INCOMING = f"COPY antoan_incoming_events ({_EVENT_COLUMNS}) FROM STDIN"
# PostgreSQL partitions events by kind and day (hub/db/partitions.py), so its unique key must hold
# kind and device_time too: a resent event is byte-identical, so it is still skipped.
_PG_INSERT_FROM_INCOMING = (
    f"INSERT INTO events ({_EVENT_COLUMNS}) SELECT {_EVENT_COLUMNS} FROM antoan_incoming_events "
    "ORDER BY kiosk_id, epoch, seq ON CONFLICT (kiosk_id, epoch, seq, kind, device_time) DO NOTHING"
)


def _sqlite_time(ts: datetime | None) -> str | None:
    # The text SQLAlchemy's SQLite DateTime type writes and reads back (UTC, no offset).
    return None if ts is None else from_db_time(ts).replace(tzinfo=None).isoformat(" ", "microseconds")


def _json(body: dict) -> str:
    return json.dumps(body, separators=(",", ":"))


class HubStore:
    """Reads and writes the ingest tables on ``engine``; ``clock`` gives received/last-seen times."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = _utc_now,
        presence: Presence | Literal["default"] | None = "default",
    ):
        self.engine = engine
        self._writer = writing(engine)
        self._clock = clock
        # Check-ins become presence intervals in the same transaction, so tracing never misses one.
        if presence == "default":
            presence = Presence(HubIdentity(engine), TracingRules())
        self._presence = presence
        dialect = engine.dialect.name
        if dialect == "sqlite":
            self._insert = sqlite.insert
        elif dialect == "postgresql":
            self._insert = postgresql.insert
        else:
            raise ValueError(f"unsupported database dialect {dialect!r}")
        upsert = self._insert(kiosks_table)
        self._upsert_kiosks = upsert.on_conflict_do_update(
            index_elements=[kiosks_table.c.kiosk_id],
            set_={c.name: upsert.excluded[c.name] for c in kiosks_table.c if c.name != "kiosk_id"},
        )

    def commit(
        self,
        *,
        events: Sequence[EventRow] = (),
        dead_letters: Sequence[DeadLetter] = (),
        states: Sequence[KioskStateRow] = (),
    ) -> None:
        """Write everything in ONE transaction; errors propagate and leave nothing written.

        Events already stored under the same ``(kiosk_id, epoch, seq)`` are skipped (resends are
        normal). On PostgreSQL the key also holds ``kind`` and ``device_time`` (the partition keys):
        a resend is identical, but a kiosk reusing a sequence number for another time or kind would
        have both stored. Dead-letter payloads are cut to 64 KiB with the full size recorded; kiosk
        states are upserted with ``last_seen`` set to now. Rows are written in key order so concurrent bridge
        workers take row locks in the same order.
        """
        now = self._clock()
        event_rows = sorted(events, key=lambda e: (e.kiosk_id, e.epoch, e.seq))
        letter_rows = [
            {
                "received_at": now,
                "topic": _clean_text(d.topic, 512),
                "kiosk_id": None if d.kiosk_id is None else _clean_text(d.kiosk_id, 64),
                "reason": _clean_text(d.reason),
                "payload": bytes(d.payload[:DEAD_LETTER_PAYLOAD_MAX]),
                "payload_size": len(d.payload),
            }
            for d in dead_letters
        ]
        # One row per kiosk: the last state given wins (a conflict-update may touch a row only once).
        latest = {s.kiosk_id: s for s in states}
        state_rows = [
            {
                "kiosk_id": s.kiosk_id,
                "status": s.status,
                "version": _clean_text(s.version, 64),
                "outbox_depth": s.outbox_depth,
                "oldest_unacked_age_s": s.oldest_unacked_age_s,
                "list_ages": s.list_ages,
                "state_sent_at": None if s.sent_at is None else from_db_time(s.sent_at),
                "last_seen": now,
            }
            for _, s in sorted(latest.items())
        ]
        if not (event_rows or letter_rows or state_rows):
            return
        presence = self._presence if any(e.kind in PRESENCE_KINDS for e in event_rows) else None
        if presence is not None:
            presence.prepare()
        with self._writer.begin() as conn:
            if state_rows:
                conn.execute(self._upsert_kiosks, state_rows)
            if letter_rows:
                conn.execute(dead_letters_table.insert(), letter_rows)
            if event_rows:
                fresh = presence.new_keys(conn, event_rows) if presence is not None else set()
                self._write_events(conn, event_rows, now)
                if fresh:
                    presence.apply(conn, event_rows, fresh, now)
        log.debug(
            "committed %s events, %s dead letters, %s kiosk states",
            len(event_rows),
            len(letter_rows),
            len(state_rows),
        )

    def _write_events(self, conn: Connection, rows: Sequence[EventRow], now: datetime) -> None:
        # The ingest hot path skips SQLAlchemy's per-row parameter processing (it cost about half
        # the bridge's time in bench/ingest): tuples go straight to the driver.
        if self.engine.dialect.name == "sqlite":
            stamp = _sqlite_time(now)
            conn.exec_driver_sql(
                _SQLITE_INSERT_EVENTS,
                [
                    (
                        e.kiosk_id,
                        e.epoch,
                        e.seq,
                        e.uuid,
                        e.kind,
                        _sqlite_time(e.device_time),
                        stamp,
                        _json(e.body),
                    )
                    for e in rows
                ],
            )
            return
        # PostgreSQL: COPY into a per-session temporary table, then one INSERT … SELECT that skips
        # keys already stored. executemany would send one statement per row.
        dbapi = conn.connection
        driver_error = self.engine.dialect.loaded_dbapi.Error
        cursor = dbapi.driver_connection.cursor()
        try:
            if not dbapi.info.get("antoan_incoming_events"):
                cursor.execute(_PG_CREATE_INCOMING)
                dbapi.info["antoan_incoming_events"] = True
            with cursor.copy(_PG_COPY_INCOMING) as copy:
                for e in rows:
                    device_time = None if e.device_time is None else from_db_time(e.device_time)
                    copy.write_row(
                        (e.kiosk_id, e.epoch, e.seq, e.uuid, e.kind, device_time, now, _json(e.body))
                    )
            cursor.execute(_PG_INSERT_FROM_INCOMING)
        except driver_error as exc:
            # Raise what SQLAlchemy would have raised, so callers see one family of errors
            # (IntegrityError, OperationalError, … with connection_invalidated on a lost server).
            lost = self.engine.dialect.is_disconnect(exc, dbapi.dbapi_connection, cursor)
            if lost:
                conn.invalidate(exc)
            raise DBAPIError.instance(
                _PG_INSERT_FROM_INCOMING, None, exc, driver_error, connection_invalidated=lost
            ) from exc
        finally:
            cursor.close()

    def count_events(self, kiosk_id: str | None = None) -> int:
        """Number of stored events, of one kiosk or of all."""
        query = select(func.count()).select_from(events_table)
        if kiosk_id is not None:
            query = query.where(events_table.c.kiosk_id == kiosk_id)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def event_keys(self, kiosk_id: str) -> list[tuple[str, int]]:
        """``(epoch, seq)`` of every event stored for ``kiosk_id``, sorted (for tests and checks)."""
        query = (
            select(events_table.c.epoch, events_table.c.seq)
            .where(events_table.c.kiosk_id == kiosk_id)
            .order_by(events_table.c.epoch, events_table.c.seq)
        )
        with self.engine.connect() as conn:
            return [(epoch, int(seq)) for epoch, seq in conn.execute(query)]

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` dead letters, newest first, without their payload bytes."""
        t = dead_letters_table
        query = (
            select(t.c.id, t.c.received_at, t.c.topic, t.c.kiosk_id, t.c.reason, t.c.payload_size)
            .order_by(t.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [{**row, "received_at": _iso(row["received_at"])} for row in rows]

    def count_dead_letters(self) -> int:
        """Number of stored dead letters."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(dead_letters_table)).scalar_one())

    def kiosks(self) -> list[dict[str, Any]]:
        """Every kiosk's latest state as a dict (times as ISO 8601 UTC), sorted by kiosk id."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(kiosks_table).order_by(kiosks_table.c.kiosk_id)).mappings().all()
        return [
            {**row, "state_sent_at": _iso(row["state_sent_at"]), "last_seen": _iso(row["last_seen"])}
            for row in rows
        ]

    def stats(self) -> dict[str, Any]:
        """``{"events_stored": n, "dead_letters": n, "kiosks": [...]}`` for the dashboard and the API."""
        return {
            "events_stored": self.count_events(),
            "dead_letters": self.count_dead_letters(),
            "kiosks": self.kiosks(),
        }
