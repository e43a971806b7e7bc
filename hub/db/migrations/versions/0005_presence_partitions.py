"""PostgreSQL: visits and events become partitioned tables, presence data by UTC day (SQLite: no change).

See hub/db/partitions.py for the layout and why. Existing rows are copied into the new tables (when
there are any, the days from the first one retention keeps at the default ``presence_days`` get
partitions, and always today and the week ahead; older and later rows go to the default partitions),
the id sequences carry on, and the keys and indexes are built once after the copy. On a uniqueness
key that now includes the partition keys, a kiosk reusing a sequence number with another time or kind
is stored twice; the downgrade keeps the first stored row of such a pair (lowest id) and drops the
other.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 21:00:00
"""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import op
from sqlalchemy import Connection

from hub.config import RetentionSettings
from hub.db.partitions import DailyTable, Keys, build_keys, create_day_partition, utc_day, wanted_days

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Frozen copies of the keys at this revision (migrations must not follow later schema edits).
_VISITS_KEYS = Keys(
    table="visits",
    primary_key=("id", "arrive_s"),
    unique=("uq_visits_kiosk_id_epoch_seq_arrive_s", ("kiosk_id", "epoch", "seq", "arrive_s")),
    indexes=(
        ("ix_visits_venue_span", ("venue_id", "arrive_s", "depart_s", "person_id")),
        ("ix_visits_person_arrive", ("person_id", "arrive_s")),
        ("ix_visits_rev", ("rev",)),
    ),
)
_EVENTS_KEYS = Keys(
    table="events",
    primary_key=("id", "kind", "device_time"),
    unique=(
        "uq_events_kiosk_id_epoch_seq_kind_device_time",
        ("kiosk_id", "epoch", "seq", "kind", "device_time"),
    ),
    indexes=(("ix_events_kind_device_time", ("kind", "device_time")),),
)
_VISITS_DAYS = DailyTable("visits", "arrive_s", True, _VISITS_KEYS)
_EVENTS_DAYS = DailyTable("events_presence", "device_time", False, _EVENTS_KEYS)

# The plain tables' keys and indexes at revision 0004.
_PLAIN = {
    "visits": (
        "ALTER TABLE visits ADD CONSTRAINT pk_visits PRIMARY KEY (id)",
        "ALTER TABLE visits ADD CONSTRAINT uq_visits_kiosk_epoch_seq UNIQUE (kiosk_id, epoch, seq)",
        "CREATE INDEX ix_visits_venue_span ON visits (venue_id, arrive_s, depart_s, person_id)",
        "CREATE INDEX ix_visits_person_arrive ON visits (person_id, arrive_s)",
        "CREATE INDEX ix_visits_rev ON visits (rev)",
    ),
    "events": (
        "ALTER TABLE events ADD CONSTRAINT pk_events PRIMARY KEY (id)",
        "ALTER TABLE events ADD CONSTRAINT uq_events_kiosk_epoch_seq UNIQUE (kiosk_id, epoch, seq)",
        "CREATE INDEX ix_events_kind_device_time ON events (kind, device_time)",
    ),
}
_PLAIN_KEYS = {
    "visits": (
        ("pk_visits", "uq_visits_kiosk_epoch_seq"),
        ("ix_visits_venue_span", "ix_visits_person_arrive", "ix_visits_rev"),
    ),
    "events": (("pk_events", "uq_events_kiosk_epoch_seq"), ("ix_events_kind_device_time",)),
}


def _columns(conn: Connection, table: str) -> str:
    names = conn.exec_driver_sql(
        "SELECT attname FROM pg_attribute WHERE attrelid = %(t)s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        {"t": table},
    ).scalars()
    return ", ".join(names)


def _has_rows(conn: Connection, table: str) -> bool:
    return bool(conn.exec_driver_sql(f"SELECT EXISTS (SELECT 1 FROM {table})").scalar_one())


def _sequence(conn: Connection, table: str) -> str:
    return conn.exec_driver_sql("SELECT pg_get_serial_sequence(%(t)s, 'id')", {"t": table}).scalar_one()


def _set_aside(conn: Connection, table: str) -> str:
    """Rename ``table`` out of the way and free its key and index names; returns the new name."""
    old = f"{table}_unpartitioned"
    conn.exec_driver_sql(f"ALTER TABLE {table} RENAME TO {old}")
    constraints, indexes = _PLAIN_KEYS[table]
    for name in constraints:
        conn.exec_driver_sql(f"ALTER TABLE {old} DROP CONSTRAINT {name}")
    for name in indexes:
        conn.exec_driver_sql(f"DROP INDEX {name}")
    return old


def _move_in(conn: Connection, table: str, old: str) -> None:
    """Hand ``old``'s id sequence to the new ``table``, copy the rows over and drop ``old``."""
    conn.exec_driver_sql(f"ALTER SEQUENCE {_sequence(conn, old)} OWNED BY {table}.id")
    columns = _columns(conn, old)
    copied = conn.exec_driver_sql(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {old}").rowcount
    conn.exec_driver_sql(f"DROP TABLE {old}")
    if copied:
        conn.exec_driver_sql(f"ANALYZE {table}")


def upgrade() -> None:
    """Partition visits by arrival day and events by kind, then presence events by day (PostgreSQL)."""
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    now = datetime.now(UTC)
    days = wanted_days(now, RetentionSettings())
    ahead = [day for day in days if day >= utc_day(now)]

    old = _set_aside(conn, "visits")
    conn.exec_driver_sql(
        f"CREATE TABLE visits (LIKE {old} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
        "PARTITION BY RANGE (arrive_s)"
    )
    conn.exec_driver_sql("CREATE TABLE visits_default PARTITION OF visits DEFAULT")
    for day in days if _has_rows(conn, old) else ahead:
        create_day_partition(conn, _VISITS_DAYS, day, keys=False)
    _move_in(conn, "visits", old)
    build_keys(conn, _VISITS_KEYS)

    old = _set_aside(conn, "events")
    conn.exec_driver_sql(
        f"CREATE TABLE events (LIKE {old} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY LIST (kind)"
    )
    conn.exec_driver_sql(
        "CREATE TABLE events_presence PARTITION OF events FOR VALUES IN ('check_in', 'check_out') "
        "PARTITION BY RANGE (device_time)"
    )
    conn.exec_driver_sql("CREATE TABLE events_presence_default PARTITION OF events_presence DEFAULT")
    conn.exec_driver_sql("CREATE TABLE events_other PARTITION OF events DEFAULT")
    for day in days if _has_rows(conn, old) else ahead:
        create_day_partition(conn, _EVENTS_DAYS, day, keys=False)
    _move_in(conn, "events", old)
    build_keys(conn, _EVENTS_KEYS)


def _unpartition(conn: Connection, table: str, unique: str) -> None:
    """Replace the partitioned ``table`` by a plain one with the 0004 keys, keeping the first stored row
    of each ``unique`` key."""
    plain = f"{table}_plain"
    conn.exec_driver_sql(f"CREATE TABLE {plain} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    conn.exec_driver_sql(f"ALTER SEQUENCE {_sequence(conn, table)} OWNED BY {plain}.id")
    columns = _columns(conn, table)
    conn.exec_driver_sql(
        f"INSERT INTO {plain} ({columns}) SELECT DISTINCT ON ({unique}) {columns} FROM {table} "
        f"ORDER BY {unique}, id"
    )
    conn.exec_driver_sql(f"DROP TABLE {table}")
    conn.exec_driver_sql(f"ALTER TABLE {plain} RENAME TO {table}")
    for ddl in _PLAIN[table]:
        conn.exec_driver_sql(ddl)


def downgrade() -> None:
    """Back to one plain table each, keyed as at revision 0004 (PostgreSQL)."""
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    _unpartition(conn, "visits", "kiosk_id, epoch, seq")
    _unpartition(conn, "events", "kiosk_id, epoch, seq")
