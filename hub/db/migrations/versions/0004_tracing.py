"""Tracing: persons, presence intervals (visits), cases, contacts and the notification outbox.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Frozen copy of the column types at this revision (migrations must not follow later schema edits).
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the tables of this revision."""
    op.create_table(
        "persons",
        sa.Column("id", _BigId, autoincrement=True),
        sa.Column("person_key", sa.String(80), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_persons"),
        sa.UniqueConstraint("person_key", name="uq_persons_person_key"),
    )
    op.create_table(
        "declaration_persons",
        sa.Column("declaration_id", sa.BigInteger(), autoincrement=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("declaration_id", name="pk_declaration_persons"),
    )
    op.create_index("ix_declaration_persons_person_id", "declaration_persons", ["person_id"])
    op.create_table(
        "visits",
        sa.Column("id", _BigId, autoincrement=True),
        sa.Column("venue_id", sa.String(64), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("arrive_s", sa.BigInteger(), nullable=False),
        sa.Column("depart_s", sa.BigInteger(), nullable=False),
        sa.Column("arrive_scanned", sa.Boolean(), nullable=False),
        sa.Column("depart_scanned", sa.Boolean(), nullable=False),
        sa.Column("rev", sa.BigInteger(), nullable=False),
        sa.Column("kiosk_id", sa.String(64), nullable=False),
        sa.Column("epoch", sa.String(32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_visits"),
        sa.UniqueConstraint("kiosk_id", "epoch", "seq", name="uq_visits_kiosk_epoch_seq"),
        sa.CheckConstraint(
            "depart_s >= arrive_s AND depart_s - arrive_s <= 43200", name="ck_visits_stay_bounded"
        ),
    )
    op.create_index("ix_visits_venue_span", "visits", ["venue_id", "arrive_s", "depart_s", "person_id"])
    op.create_index("ix_visits_person_arrive", "visits", ["person_id", "arrive_s"])
    op.create_index("ix_visits_rev", "visits", ["rev"])
    op.create_table(
        "venue_stays",
        sa.Column("venue_id", sa.String(64), nullable=False),
        sa.Column("max_stay_s", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("venue_id", name="pk_venue_stays"),
    )
    op.create_table(
        "cases",
        sa.Column("id", _BigId, autoincrement=True),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("opened_from", sa.String(16), nullable=False),
        sa.Column("declaration_id", sa.BigInteger(), nullable=True),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("onset_date", sa.Date(), nullable=True),
        sa.Column("test_date", sa.Date(), nullable=True),
        sa.Column("window_start_s", sa.BigInteger(), nullable=False),
        sa.Column("window_end_s", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("f1_count", sa.Integer(), nullable=False),
        sa.Column("f2_state", sa.String(16), nullable=False),
        sa.Column("f2_progress", sa.Float(), nullable=False),
        sa.Column("f2_count", sa.Integer(), nullable=False),
        sa.Column("f2_started_at", _TS, nullable=True),
        sa.Column("f2_finished_at", _TS, nullable=True),
        sa.Column("f2_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_cases"),
    )
    op.create_index("ix_cases_person_id", "cases", ["person_id"])
    op.create_table(
        "case_contacts",
        sa.Column("id", _BigId, autoincrement=True),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("degree", sa.Integer(), nullable=False),
        sa.Column("via_person_id", sa.BigInteger(), nullable=False),
        sa.Column("first_contact_s", sa.BigInteger(), nullable=False),
        sa.Column("last_contact_s", sa.BigInteger(), nullable=False),
        sa.Column("overlap_s", sa.Integer(), nullable=False),
        sa.Column("encounters", sa.Integer(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("decided_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_case_contacts"),
        sa.UniqueConstraint("case_id", "person_id", name="uq_case_contacts_case_person"),
    )
    op.create_index("ix_case_contacts_case_degree_status", "case_contacts", ["case_id", "degree", "status"])
    op.create_index("ix_case_contacts_person_id", "case_contacts", ["person_id"])
    op.create_table(
        "notifications",
        sa.Column("id", _BigId, autoincrement=True),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("degree", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("sent_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notifications"),
        sa.UniqueConstraint("case_id", "person_id", name="uq_notifications_case_person"),
    )
    op.create_index("ix_notifications_status_next", "notifications", ["status", "next_attempt_at"])


def downgrade() -> None:
    """Drop the tables of this revision."""
    for name in ("notifications", "case_contacts", "cases", "venue_stays", "visits"):
        op.drop_table(name)
    op.drop_table("declaration_persons")
    op.drop_table("persons")
