"""The kiosk's durable outbox: every event is committed to SQLite before anyone is told it happened.

WAL with ``synchronous=FULL`` makes each committed event survive a power cut. ``seq`` is an
AUTOINCREMENT rowid, so numbers are never reused even after pruning; ``epoch`` is a random id
made with the file, so a re-imaged SD card starts a new numbering the hub can tell apart.
All access goes through one connection behind one lock: a single writer, as SQLite wants.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from protocol.messages import MAX_EVENT_BODY_BYTES, EventKind, event_json, utc_iso

log = logging.getLogger(__name__)

# Each entry moves the schema one version forward (PRAGMA user_version); never edit a shipped one.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        device_time TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at REAL NOT NULL,
        acked_at REAL
    );
    CREATE INDEX events_unacked ON events (seq) WHERE acked_at IS NULL;
    CREATE INDEX events_acked_at ON events (acked_at) WHERE acked_at IS NOT NULL;
    """,
)


class OutboxError(Exception):
    """The outbox could not record or read an event."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the caller learns once an event is durable."""

    seq: int
    uuid: str
    device_time: datetime


@dataclass(frozen=True, slots=True)
class Pending:
    """An unacknowledged event, already rendered as its wire JSON."""

    seq: int
    created_at: float
    wire: str


class Outbox:
    """Durable, ordered store of the kiosk's events until the hub acknowledges them."""

    def __init__(
        self,
        path: Path | str,
        *,
        clock: Callable[[], float] = time.time,
        on_append: Callable[[], None] | None = None,
    ):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._on_append = on_append
        self._lock = threading.Lock()
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db = sqlite_utils.Database(conn)
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise OutboxError(f"{self.path}: cannot switch to WAL journal (got {mode!r})")
        self._db.execute("PRAGMA synchronous=FULL")
        self._migrate()
        self.epoch: str = self._db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0]

    def _migrate(self) -> None:
        conn = self._db.conn
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(_MIGRATIONS):
            raise OutboxError(
                f"{self.path} was written by a newer kiosk version (schema {version}); upgrade the software"
            )
        for number in range(version, len(_MIGRATIONS)):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _MIGRATIONS[number].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                if number == 0:
                    conn.execute("INSERT INTO meta VALUES ('epoch', ?)", (secrets.token_hex(16),))
                conn.execute(f"PRAGMA user_version = {number + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            log.info("outbox %s migrated to schema %d", self.path, number + 1)

    @staticmethod
    def _body_json(body: dict[str, Any]) -> str:
        try:
            text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise OutboxError(f"event body is not JSON: {exc}") from None
        if len(text.encode()) > MAX_EVENT_BODY_BYTES:
            raise OutboxError(f"event body larger than {MAX_EVENT_BODY_BYTES} bytes")
        return text

    def _row(self, kind: EventKind | str, body: dict[str, Any], device_time: datetime | None) -> dict:
        kind = EventKind(kind)
        device_time = device_time or datetime.now(UTC)
        if device_time.tzinfo is None:
            raise OutboxError("device_time must carry a time zone")
        return {
            "uuid": str(uuid.uuid4()),
            "kind": kind.value,
            "device_time": utc_iso(device_time),
            "body": self._body_json(body),
            "created_at": self._clock(),
        }

    def append(
        self, kind: EventKind | str, body: dict[str, Any], *, device_time: datetime | None = None
    ) -> Recorded:
        """Record one event; it is on disk (fsynced) when this returns."""
        row = self._row(kind, body, device_time)
        try:
            with self._lock:
                seq = self._db["events"].insert(row).last_rowid
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot record event: {exc}") from exc
        if self._on_append is not None:
            self._on_append()
        return Recorded(seq, row["uuid"], datetime.fromisoformat(row["device_time"]))

    def append_many(self, items: Iterable[tuple[EventKind | str, dict[str, Any]]]) -> int:
        """Record many events in one transaction (imports and benchmarks); returns how many."""
        rows = [self._row(kind, body, None) for kind, body in items]
        with self._lock:
            conn = self._db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO events (uuid, kind, device_time, body, created_at) "
                    "VALUES (:uuid, :kind, :device_time, :body, :created_at)",
                    rows,
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        if self._on_append is not None and rows:
            self._on_append()
        return len(rows)

    def pending(self, *, after_seq: int, limit: int, max_bytes: int) -> list[Pending]:
        """Unacknowledged events after ``after_seq`` in order, at most ``limit`` and ``max_bytes`` of JSON."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, uuid, kind, device_time, body, created_at FROM events "
                "WHERE acked_at IS NULL AND seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        out: list[Pending] = []
        size = 0
        for seq, uid, kind, device_time, body, created_at in rows:
            wire = event_json(seq, uid, kind, device_time, body)
            size += len(wire.encode()) + 1
            if out and size > max_bytes:
                break
            out.append(Pending(seq, created_at, wire))
        return out

    def mark_acked(self, ranges: Sequence[tuple[int, int]]) -> int:
        """Mark the events in the inclusive ``ranges`` acknowledged; returns how many changed."""
        now = self._clock()
        with self._lock:
            conn = self._db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                changed = 0
                for lo, hi in ranges:
                    changed += conn.execute(
                        "UPDATE events SET acked_at = ? WHERE seq BETWEEN ? AND ? AND acked_at IS NULL",
                        (now, lo, hi),
                    ).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return changed

    def depth(self) -> int:
        """Number of events not yet acknowledged by the hub."""
        with self._lock:
            return self._db.execute("SELECT count(*) FROM events WHERE acked_at IS NULL").fetchone()[0]

    def oldest_unacked_age(self) -> float | None:
        """Seconds since the oldest unacknowledged event was recorded, or None when all are acked."""
        with self._lock:
            row = self._db.execute(
                "SELECT created_at FROM events WHERE acked_at IS NULL ORDER BY seq LIMIT 1"
            ).fetchone()
        return None if row is None else max(0.0, self._clock() - row[0])

    def prune_acked(self, older_than_s: float) -> int:
        """Delete events acknowledged more than ``older_than_s`` ago. Unacked events are never deleted."""
        cutoff = self._clock() - older_than_s
        with self._lock:
            return self._db.execute(
                "DELETE FROM events WHERE acked_at IS NOT NULL AND acked_at < ?", (cutoff,)
            ).rowcount

    def counts(self) -> dict[str, int]:
        """Events held, and how many of them await an ack."""
        with self._lock:
            total, unacked = self._db.execute(
                "SELECT count(*), count(*) - count(acked_at) FROM events"
            ).fetchone()
        return {"held": total, "unacked": unacked}

    def all_seqs(self) -> list[int]:
        """Every sequence number held (acked or not), in order: for audits and tests."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT seq FROM events ORDER BY seq")]

    def close(self) -> None:
        with self._lock:
            self._db.conn.close()
