"""The audit log: every view, search or export of personal data records who, what and when."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from hub.db.schema import audit_log


def record(
    conn: Connection,
    *,
    actor: str,
    role: str | None,
    action: str,
    target_type: str | None = None,
    target_id: str | int | None = None,
    detail: Mapping[str, Any] | None = None,
    remote_addr: str | None = None,
    now: datetime | None = None,
) -> None:
    """Append one entry, inside the caller's transaction (so a read is logged only if it happened)."""
    conn.execute(
        insert(audit_log).values(
            at=now or datetime.now(UTC),
            actor=actor[:200],
            role=role,
            action=action[:64],
            target_type=target_type,
            target_id=None if target_id is None else str(target_id)[:200],
            detail=dict(detail or {}),
            remote_addr=(remote_addr or None) and remote_addr[:64],
        )
    )


def entries(conn: Connection, *, limit: int = 200, actor: str | None = None, before_id: int | None = None):
    """Newest entries first (optionally of one actor, or older than an id for paging)."""
    query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if actor:
        query = query.where(audit_log.c.actor == actor)
    if before_id is not None:
        query = query.where(audit_log.c.id < before_id)
    return conn.execute(query).all()


def purge_before(conn: Connection, cutoff: datetime) -> int:
    """Delete entries older than ``cutoff``; returns how many."""
    return conn.execute(delete(audit_log).where(audit_log.c.at < cutoff)).rowcount
