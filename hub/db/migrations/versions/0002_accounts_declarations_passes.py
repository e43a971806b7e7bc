"""Accounts, API tokens, the audit log, declarations, health passes, their signing keys, hub secrets.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen copy of the column types at this revision (migrations must not follow later schema edits).
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the tables of this revision."""
    op.create_table(
        "users",
        sa.Column("id", _BigId, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("last_login_at", _TS, nullable=True),
        sa.Column("session_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", _BigId, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=True),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_sha256", name="uq_api_tokens_token_sha256"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", _BigId, autoincrement=True),
        sa.Column("at", _TS, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("role", sa.String(32), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_type", sa.String(64), nullable=True),
        sa.Column("target_id", sa.String(200), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("remote_addr", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_table(
        "declarations",
        sa.Column("id", _BigId, autoincrement=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("submission_id", sa.String(36), nullable=False),
        sa.Column("declared_by", sa.BigInteger(), nullable=True),
        sa.Column("relationship", sa.String(32), nullable=True),
        sa.Column("id_number", sa.String(32), nullable=False),
        sa.Column("full_name", sa.String(200), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("birth_year", sa.Integer(), nullable=False),
        sa.Column("gender", sa.String(8), nullable=False),
        sa.Column("phone", sa.String(20), nullable=True),
        sa.Column("nationality", sa.String(2), nullable=False),
        sa.Column("province", sa.String(100), nullable=True),
        sa.Column("district", sa.String(100), nullable=True),
        sa.Column("commune", sa.String(100), nullable=True),
        sa.Column("address", sa.String(300), nullable=True),
        sa.Column("answers", sa.JSON(), nullable=False),
        sa.Column("colour", sa.String(8), nullable=False),
        sa.Column("colour_reasons", sa.JSON(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("superseded_at", _TS, nullable=True),
        sa.Column("superseded_by", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_declarations"),
    )
    op.create_index("ix_declarations_id_number", "declarations", ["id_number"])
    op.create_index("ix_declarations_created_at", "declarations", ["created_at"])
    op.create_index("ix_declarations_submission_id", "declarations", ["submission_id"])
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(16), nullable=False),
        sa.Column("alg", sa.String(8), nullable=False),
        sa.Column("private_pem", sa.LargeBinary(), nullable=False),
        sa.Column("public_pem", sa.LargeBinary(), nullable=False),
        sa.Column("encrypted", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("retired_at", _TS, nullable=True),
        sa.Column("trusted_until", _TS, nullable=False),
        sa.PrimaryKeyConstraint("kid", name="pk_signing_keys"),
    )
    op.create_table(
        "passes",
        sa.Column("pass_id", sa.String(32), nullable=False),
        sa.Column("declaration_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("colour", sa.String(8), nullable=False),
        sa.Column("kid", sa.String(16), nullable=False),
        sa.Column("qr_text", sa.Text(), nullable=False),
        sa.Column("issued_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("pass_id", name="pk_passes"),
    )
    op.create_index("ix_passes_declaration_id", "passes", ["declaration_id"])
    op.create_index("ix_passes_expires_at", "passes", ["expires_at"])
    op.create_table(
        "pass_status",
        sa.Column("pass_id", sa.String(32), nullable=False),
        sa.Column("colour", sa.String(8), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("changed_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("pass_id", name="pk_pass_status"),
    )
    op.create_table(
        "list_versions",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("changed_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_list_versions"),
    )
    op.create_table(
        "hub_secrets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_hub_secrets"),
    )


def downgrade() -> None:
    """Drop the tables of this revision."""
    op.drop_table("hub_secrets")
    op.drop_table("list_versions")
    op.drop_table("pass_status")
    op.drop_index("ix_passes_expires_at", table_name="passes")
    op.drop_index("ix_passes_declaration_id", table_name="passes")
    op.drop_table("passes")
    op.drop_table("signing_keys")
    op.drop_index("ix_declarations_submission_id", table_name="declarations")
    op.drop_index("ix_declarations_created_at", table_name="declarations")
    op.drop_index("ix_declarations_id_number", table_name="declarations")
    op.drop_table("declarations")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("api_tokens")
    op.drop_table("users")
