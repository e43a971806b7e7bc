"""Initial tables for the ingest path: events, dead_letters, kiosks.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copy of the column types at this revision (migrations must not follow later schema edits).
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the events, dead_letters and kiosks tables."""
    op.create_table(
        "events",
        sa.Column("id", _BigId, autoincrement=True),
        sa.Column("kiosk_id", sa.String(64), nullable=False),
        sa.Column("epoch", sa.String(32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("device_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("kiosk_id", "epoch", "seq", name="uq_events_kiosk_epoch_seq"),
    )
    op.create_index("ix_events_kind_device_time", "events", ["kind", "device_time"])
    op.create_table(
        "dead_letters",
        sa.Column("id", _BigId, autoincrement=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("topic", sa.String(512), nullable=False),
        sa.Column("kiosk_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("payload_size", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
    )
    op.create_table(
        "kiosks",
        sa.Column("kiosk_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("outbox_depth", sa.Integer(), nullable=True),
        sa.Column("oldest_unacked_age_s", sa.Float(), nullable=True),
        sa.Column("list_ages", sa.JSON(), nullable=False),
        sa.Column("state_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kiosk_id", name="pk_kiosks"),
    )


def downgrade() -> None:
    """Drop the tables of this revision."""
    op.drop_table("kiosks")
    op.drop_table("dead_letters")
    op.drop_index("ix_events_kind_device_time", table_name="events")
    op.drop_table("events")
