"""PostgreSQL daily partitions of the presence data, and their upkeep (SQLite keeps one table each).

Migration 0005 lays the two tables out as::

    visits                       PARTITION BY RANGE (arrive_s)
      visits_pYYYYMMDD           one UTC day, bounds in epoch seconds
      visits_default             DEFAULT: any arrival without a day partition
    events                       PARTITION BY LIST (kind)
      events_presence            FOR VALUES IN ('check_in', 'check_out'), PARTITION BY RANGE (device_time)
        events_presence_pYYYYMMDD
        events_presence_default
      events_other               DEFAULT: checklists, BLE presence, feedback, … (kept by presence retention)

so that retention removes a whole day with one ``DROP TABLE`` instead of deleting its rows in batches
beside the ingest, and F1's range scans, which bound ``arrive_s`` on both sides, read one or two days.

A partitioned table's primary and unique keys must contain its partition keys: visits are keyed by
``(id, arrive_s)`` and ``(kiosk_id, epoch, seq, arrive_s)``, events by ``(id, kind, device_time)`` and
``(kiosk_id, epoch, seq, kind, device_time)``. Every partition carries the parent's keys and indexes
under the parent's names with its own suffix (``ix_visits_venue_span_p20261127``), so query plans name
the index they use.

:func:`ensure_partitions` makes today and :data:`DAYS_AHEAD` days ahead, and the past days retention
keeps whose rows wait in the default partition. A day is made as a table of its own with its keys,
gets the rows of its day moved out of the default partition (PostgreSQL refuses a partition whose rows
sit in the default), and is then attached: ``ATTACH PARTITION`` locks the parent only in SHARE UPDATE
EXCLUSIVE mode (reads and writes go on) and the default partition while it checks that no row of the
day is left there, where ``CREATE TABLE … PARTITION OF`` would lock the whole parent against every read
and write.
:func:`drop_partitions_before` drops the days wholly before a cutoff; ``DROP TABLE`` of a partition
locks its parent in ACCESS EXCLUSIVE mode, for as long as counting and dropping the day take.

Both wait at most :data:`LOCK_TIMEOUT_MS` for their locks: a lock request queues every later reader and
writer of the table behind it, so waiting on a long read (the in-memory visit index loading every
visit) would stall the ingest; they give up instead and the next run tries again (retention then
deletes the day's due rows in batches). Partition DDL takes a transaction-level advisory lock, so two
processes (the bridge and ``antoan-hub purge``) never make or drop the same day at once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from hub.config import RetentionSettings
from hub.db import to_db_time
from hub.tracing_rules import MAX_STAY_S

log = logging.getLogger(__name__)

#: Key of the advisory lock taken by partition DDL ("antoan" and 03; migrations use 01, test templates 02).
PARTITIONS_LOCK_KEY = 0x616E746F616E03
#: Days made ahead of today, so a day's first check-in never lands in the default partition.
DAYS_AHEAD = 7
#: How long partition DDL waits for a table lock before leaving the work to the next run.
LOCK_TIMEOUT_MS = 500
#: SQLSTATE lock_not_available: ``lock_timeout`` ran out.
LOCK_NOT_AVAILABLE = "55P03"


@dataclass(frozen=True, slots=True)
class Keys:
    """The primary key, unique key and indexes of a partitioned table, under their parent names."""

    table: str
    primary_key: tuple[str, ...]
    unique: tuple[str, tuple[str, ...]]
    indexes: tuple[tuple[str, tuple[str, ...]], ...]

    def statements(self, relation: str, suffix: str | None) -> list[tuple[str, str]]:
        """``(name, DDL)`` of each key and index on ``relation``: the parent's names, or for a
        partition the parent's names with ``_<suffix>``."""

        def named(name: str) -> str:
            return name if suffix is None else f"{name}_{suffix}"

        pk = named(f"pk_{self.table}")
        uq_name, uq_columns = self.unique
        out = [
            (pk, f"ALTER TABLE {relation} ADD CONSTRAINT {pk} PRIMARY KEY ({', '.join(self.primary_key)})"),
            (
                named(uq_name),
                f"ALTER TABLE {relation} ADD CONSTRAINT {named(uq_name)} UNIQUE ({', '.join(uq_columns)})",
            ),
        ]
        out += [
            (named(name), f"CREATE INDEX {named(name)} ON {relation} ({', '.join(columns)})")
            for name, columns in self.indexes
        ]
        return out


@dataclass(frozen=True, slots=True)
class DailyTable:
    """A table partitioned by UTC day on ``column``: ``<table>_pYYYYMMDD`` and ``<table>_default``."""

    table: str
    column: str
    epoch_seconds: bool  # the column holds epoch seconds (else timestamptz)
    keys: Keys

    def partition(self, day: date) -> str:
        return f"{self.table}_p{day:%Y%m%d}"

    @property
    def default(self) -> str:
        return f"{self.table}_default"

    def bound(self, day: date) -> str:
        """The SQL literal of ``day``'s first instant (UTC) in the column's type."""
        start = datetime.combine(day, time(), UTC)
        return str(int(start.timestamp())) if self.epoch_seconds else f"'{start:%Y-%m-%d %H:%M:%S}+00'"

    def day_of(self, relation: str) -> date | None:
        """The day of a day partition's name (None for any other name)."""
        found = re.fullmatch(rf"{re.escape(self.table)}_p(\d{{8}})", relation)
        return None if found is None else datetime.strptime(found.group(1), "%Y%m%d").date()


VISITS_KEYS = Keys(
    table="visits",
    primary_key=("id", "arrive_s"),
    unique=("uq_visits_kiosk_id_epoch_seq_arrive_s", ("kiosk_id", "epoch", "seq", "arrive_s")),
    indexes=(
        ("ix_visits_venue_span", ("venue_id", "arrive_s", "depart_s", "person_id")),
        ("ix_visits_person_arrive", ("person_id", "arrive_s")),
        ("ix_visits_rev", ("rev",)),
    ),
)
EVENTS_KEYS = Keys(
    table="events",
    primary_key=("id", "kind", "device_time"),
    unique=(
        "uq_events_kiosk_id_epoch_seq_kind_device_time",
        ("kiosk_id", "epoch", "seq", "kind", "device_time"),
    ),
    indexes=(("ix_events_kind_device_time", ("kind", "device_time")),),
)
VISITS = DailyTable("visits", "arrive_s", True, VISITS_KEYS)
PRESENCE_EVENTS = DailyTable("events_presence", "device_time", False, EVENTS_KEYS)
#: The day-partitioned tables retention drops days of.
DAILY = (VISITS, PRESENCE_EVENTS)


def utc_day(moment: datetime) -> date:
    """The UTC day ``moment`` falls in."""
    return to_db_time(moment).date()


def first_kept_day(now: datetime, settings: RetentionSettings) -> date:
    """The first day retention does not drop at ``now``: a day goes once it ended 12 hours (the longest
    stay) before the presence cutoff, when every visit arriving in it has ended before the cutoff and
    every check-in/out of it is older than the events' cutoff."""
    return utc_day(to_db_time(now) - timedelta(days=settings.presence_days, seconds=MAX_STAY_S))


def wanted_days(now: datetime, settings: RetentionSettings) -> list[date]:
    """The days that may have partitions at ``now``: from the first one retention keeps to
    :data:`DAYS_AHEAD` days ahead (earlier days would be made only to be dropped by the same purge)."""
    first, last = first_kept_day(now, settings), utc_day(now) + timedelta(days=DAYS_AHEAD)
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def default_days(conn: Connection, table: DailyTable, first: date, end: date) -> set[date]:
    """The days from ``first`` to before ``end`` that have rows in ``table``'s default partition."""
    day = f"{table.column} / 86400" if table.epoch_seconds else f"({table.column} AT TIME ZONE 'UTC')::date"
    found = conn.exec_driver_sql(
        f"SELECT DISTINCT {day} FROM {table.default} "
        f"WHERE {table.column} >= {table.bound(first)} AND {table.column} < {table.bound(end)}"
    ).scalars()
    return {d if isinstance(d, date) else date(1970, 1, 1) + timedelta(days=int(d)) for d in found}


def is_lock_timeout(exc: DBAPIError) -> bool:
    """Whether ``exc`` is PostgreSQL giving up on a lock after ``lock_timeout``."""
    return getattr(exc.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE


def day_partitions(conn: Connection, table: DailyTable) -> dict[date, str]:
    """The day partitions attached to ``table.table``, by day."""
    names = conn.exec_driver_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %(parent)s::regclass",
        {"parent": table.table},
    ).scalars()
    found = {}
    for name in names:
        day = table.day_of(name)
        if day is not None:
            found[day] = name
    return found


def _columns(conn: Connection, relation: str) -> str:
    names = conn.exec_driver_sql(
        "SELECT attname FROM pg_attribute WHERE attrelid = %(r)s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        {"r": relation},
    ).scalars()
    return ", ".join(names)


def _lock(conn: Connection, lock_timeout_ms: int | None) -> None:
    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(key)s)", {"key": PARTITIONS_LOCK_KEY})
    if lock_timeout_ms is not None:
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")


def create_day_partition(conn: Connection, table: DailyTable, day: date, *, keys: bool = True) -> int:
    """Make and attach ``day``'s partition of ``table`` in the caller's transaction, moving the day's
    rows out of the default partition; returns how many were moved.

    ``keys=False`` leaves the keys and indexes to :func:`build_keys` (a migration filling the tables
    builds them once after the copy)."""
    name = table.partition(day)
    lo, hi = table.bound(day), table.bound(day + timedelta(days=1))
    conn.exec_driver_sql(f"CREATE TABLE {name} (LIKE {table.table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    if keys:
        for _, ddl in table.keys.statements(name, _suffix(table.keys.table, name)):
            conn.exec_driver_sql(ddl)
    # ATTACH takes this lock anyway; taken before the move, no row of the day can enter the default
    # between the move and ATTACH's check of it.
    conn.exec_driver_sql(f"LOCK TABLE {table.default} IN ACCESS EXCLUSIVE MODE")
    columns = _columns(conn, table.table)
    moved = conn.exec_driver_sql(
        f"WITH moved AS (DELETE FROM {table.default} WHERE {table.column} >= {lo} AND {table.column} < {hi} "
        f"RETURNING {columns}) INSERT INTO {name} ({columns}) SELECT {columns} FROM moved"
    ).rowcount
    conn.exec_driver_sql(
        f"ALTER TABLE {table.table} ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})"
    )
    return int(moved)


def ensure_partitions(
    engine: Engine,
    now: datetime,
    settings: RetentionSettings,
    *,
    lock_timeout_ms: int | None = LOCK_TIMEOUT_MS,
) -> list[str]:
    """Make the missing day partitions of :func:`wanted_days` from today on, and the past ones whose
    rows sit in the default partition (PostgreSQL; nothing on SQLite), each in a transaction of its
    own; returns their names.

    A past day is made only for rows to go to: its partition was made while it was ahead, and only a
    kiosk that was offline sends rows of it later (a new database needs none). Idempotent and safe
    from several processes at once (an advisory lock, and each day checked again under it). When a day's
    locks are not granted within ``lock_timeout_ms``, the table's remaining days are left for the next
    call (their rows land in the default partition meanwhile and are moved when their day is made)."""
    if engine.dialect.name != "postgresql":
        return []
    created: list[str] = []
    days, today = wanted_days(now, settings), utc_day(now)
    for table in DAILY:
        with engine.connect() as conn:
            existing = day_partitions(conn, table)
            past = [day for day in days if day < today and day not in existing]
            held = default_days(conn, table, past[0], today) if past else set()
        for day in days:
            if day in existing or (day < today and day not in held):
                continue
            try:
                with engine.begin() as conn:
                    _lock(conn, lock_timeout_ms)
                    if day in day_partitions(conn, table):
                        continue  # another process made it meanwhile
                    moved = create_day_partition(conn, table, day)
            except DBAPIError as exc:
                if not is_lock_timeout(exc):
                    raise
                # The table's other days would wait as long: one wait per table and run at most.
                log.warning(
                    "partitions of %s not made: the table is busy; the next run tries again", table.table
                )
                break
            created.append(table.partition(day))
            log.info("partition %s made (%d rows moved from %s)", table.partition(day), moved, table.default)
    return created


def due_partitions(conn: Connection, table: DailyTable, cutoff: datetime) -> list[str]:
    """``table``'s day partitions that end at or before ``cutoff``, oldest first."""
    last = utc_day(cutoff)  # the days before the cutoff's own day end at or before it
    return [name for day, name in sorted(day_partitions(conn, table).items()) if day < last]


def drop_partitions_before(
    conn: Connection, table: DailyTable, cutoff: datetime, *, lock_timeout_ms: int | None = LOCK_TIMEOUT_MS
) -> list[tuple[str, int]]:
    """Drop ``table``'s day partitions that end at or before ``cutoff`` in the caller's transaction
    (which should end right after: it holds the parent locked); returns ``(name, rows)`` of each.

    The rows are counted with the parent locked, so the counts are exactly what went. Raises
    ``DBAPIError`` (see :func:`is_lock_timeout`) when the lock is not granted in ``lock_timeout_ms``."""
    _lock(conn, lock_timeout_ms)
    due = due_partitions(conn, table, cutoff)
    if not due:
        return []
    conn.exec_driver_sql(f"LOCK TABLE ONLY {table.table} IN ACCESS EXCLUSIVE MODE")
    dropped = []
    for name in due:
        rows = int(conn.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar_one())
        conn.exec_driver_sql(f"DROP TABLE {name}")
        dropped.append((name, rows))
    return dropped


def _suffix(root: str, relation: str) -> str:
    """The name suffix of a partition's keys: the day (``p20261127``) or ``default`` of a day-partitioned
    table, else the partition's name after its root's (``presence``, ``other``)."""
    for table in DAILY:
        if relation.startswith(f"{table.table}_"):
            return relation.removeprefix(f"{table.table}_")
    return relation.removeprefix(f"{root}_")


def build_keys(conn: Connection, keys: Keys) -> list[str]:
    """Add the missing keys and indexes of ``keys.table``'s whole partition tree, partitions first,
    so that each parent's key adopts its partitions' instead of building them under generated names;
    returns the names made. For a table filled without them (a migration, a bulk load)."""
    tree = conn.exec_driver_sql(
        "SELECT c.relname, t.level FROM pg_partition_tree(%(root)s::regclass) t "
        "JOIN pg_class c ON c.oid = t.relid ORDER BY t.level DESC, c.relname",
        {"root": keys.table},
    ).all()
    have = set(
        conn.exec_driver_sql(
            "SELECT relname FROM pg_class WHERE relkind IN ('i', 'I') AND relname LIKE %(p)s",
            {"p": f"%{keys.table}%"},
        ).scalars()
    )
    made = []
    for relation, level in tree:
        for name, ddl in keys.statements(relation, None if level == 0 else _suffix(keys.table, relation)):
            if name not in have:
                conn.exec_driver_sql(ddl)
                made.append(name)
    return made
