"""Venues, enrolled devices (kiosks) and single-use enrolment tokens.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Frozen copy of the column types at this revision (migrations must not follow later schema edits).
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the tables of this revision."""
    op.create_table(
        "venues",
        sa.Column("venue_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("venue_type", sa.String(32), nullable=False),
        sa.Column("province", sa.String(100), nullable=True),
        sa.Column("district", sa.String(100), nullable=True),
        sa.Column("address", sa.String(300), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("venue_id", name="pk_venues"),
    )
    op.create_table(
        "devices",
        sa.Column("kiosk_id", sa.String(64), nullable=False),
        sa.Column("venue_id", sa.String(64), nullable=False),
        sa.Column("cert_serial", sa.String(64), nullable=True),
        sa.Column("cert_not_after", _TS, nullable=True),
        sa.Column("enrolled_at", _TS, nullable=True),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Column("revoked_reason", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("kiosk_id", name="pk_devices"),
    )
    op.create_index("ix_devices_venue_id", "devices", ["venue_id"])
    op.create_table(
        "enrolment_tokens",
        sa.Column("id", _BigId, autoincrement=True),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("kiosk_id", sa.String(64), nullable=False),
        sa.Column("venue_id", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("approved_at", _TS, nullable=True),
        sa.Column("approved_by", sa.String(200), nullable=True),
        sa.Column("used_at", _TS, nullable=True),
        sa.Column("used_cert_serial", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_enrolment_tokens"),
        sa.UniqueConstraint("token_sha256", name="uq_enrolment_tokens_token_sha256"),
    )


def downgrade() -> None:
    """Drop the tables of this revision."""
    op.drop_table("enrolment_tokens")
    op.drop_index("ix_devices_venue_id", table_name="devices")
    op.drop_table("devices")
    op.drop_table("venues")
