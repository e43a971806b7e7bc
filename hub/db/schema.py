"""The hub's database tables as SQLAlchemy Core metadata (the ingest path: events, dead letters, kiosks)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

#: Constraint names are fixed so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Largest dead-letter payload kept; the full size is recorded next to it.
DEAD_LETTER_PAYLOAD_MAX = 64 * 1024

#: 64-bit ids on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the auto-incrementing rowid.
BigId = BigInteger().with_variant(Integer, "sqlite")

metadata = MetaData(naming_convention=NAMING_CONVENTION)

events = Table(
    "events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kiosk_id", String(64), nullable=False),
    Column("epoch", String(32), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("uuid", String(36), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("device_time", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("body", JSON, nullable=False),
    UniqueConstraint("kiosk_id", "epoch", "seq", name="uq_events_kiosk_epoch_seq"),
    Index("ix_events_kind_device_time", "kind", "device_time"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("topic", String(512), nullable=False),
    Column("kiosk_id", String(64), nullable=True),
    Column("reason", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("payload_size", Integer, nullable=False),
)

kiosks = Table(
    "kiosks",
    metadata,
    Column("kiosk_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("version", String(64), nullable=False),
    Column("outbox_depth", Integer, nullable=True),
    Column("oldest_unacked_age_s", Float, nullable=True),
    Column("list_ages", JSON, nullable=False),
    Column("state_sent_at", DateTime(timezone=True), nullable=True),
    Column("last_seen", DateTime(timezone=True), nullable=False),
)
