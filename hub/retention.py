"""Data retention: purge old declarations (with their passes and status entries) and old audit entries.

Declarations whose ``created_at`` is older than ``retention.declaration_days`` go, with every pass
issued for them and those passes' ``pass_status`` rows, unless one of their passes is still valid:
a valid pass keeps its declaration (and its status entry, so kiosks keep showing a flagged pass in
yellow or red) until it expires. Audit entries older than ``retention.audit_days`` go.

Work is done in batches of ``batch_size`` rows, each in its own short transaction, so a large purge
never holds the database's write lock for long; a callback hears about every batch. Removing status
entries bumps the ``status`` list version in the same transaction (the bridge then republishes).
The purge records itself in the audit log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, delete, exists, func, select

from hub import audit
from hub.config import RetentionSettings
from hub.db import to_db_time
from hub.db.schema import audit_log, declarations, pass_status, passes
from hub.keys import STATUS, bump_list_version

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 500
AUDIT_ACTOR = "system:retention"


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """How many rows a purge removed (or, in a dry run, would remove)."""

    declarations: int = 0
    passes: int = 0
    pass_status: int = 0
    audit_entries: int = 0
    batches: int = 0
    status_version_bumped: bool = False
    dry_run: bool = False
    declaration_cutoff: datetime | None = None
    audit_cutoff: datetime | None = None

    def as_dict(self) -> dict:
        """The report as plain JSON-ready values (times in ISO 8601)."""
        out = asdict(self)
        for key in ("declaration_cutoff", "audit_cutoff"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out


#: Called after every batch with the counts so far and what the batch was ("declarations" or "audit").
ProgressCallback = Callable[[str, PurgeReport], None]


def cutoffs(settings: RetentionSettings, now: datetime) -> tuple[datetime, datetime]:
    """(declaration cutoff, audit cutoff): rows created before these are due."""
    now = to_db_time(now)
    return now - timedelta(days=settings.declaration_days), now - timedelta(days=settings.audit_days)


def _due_declarations(cutoff: datetime, now: datetime):
    """Declarations created before ``cutoff`` none of whose passes is still valid at ``now``."""
    still_valid = exists().where(passes.c.declaration_id == declarations.c.id, passes.c.expires_at > now)
    return select(declarations.c.id).where(declarations.c.created_at < cutoff, ~still_valid)


def _count(conn: Connection, query) -> int:
    return int(conn.execute(select(func.count()).select_from(query.subquery())).scalar_one())


def purge(
    engine: Engine,
    settings: RetentionSettings,
    now: datetime,
    *,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressCallback | None = None,
) -> PurgeReport:
    """Remove what ``settings`` says is past retention at ``now``; return the counts.

    With ``dry_run`` nothing is deleted and the counts are what a real purge would remove now.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    now = to_db_time(now)
    declaration_cutoff, audit_cutoff = cutoffs(settings, now)
    report = PurgeReport(dry_run=dry_run, declaration_cutoff=declaration_cutoff, audit_cutoff=audit_cutoff)
    if dry_run:
        return _dry_run(engine, report, now)

    while True:
        with engine.begin() as conn:
            ids = list(
                conn.execute(
                    _due_declarations(declaration_cutoff, now).order_by(declarations.c.id).limit(batch_size)
                )
                .scalars()
                .all()
            )
            if not ids:
                break
            pass_ids = select(passes.c.pass_id).where(passes.c.declaration_id.in_(ids))
            removed_status = conn.execute(
                delete(pass_status).where(pass_status.c.pass_id.in_(pass_ids))
            ).rowcount
            removed_passes = conn.execute(delete(passes).where(passes.c.declaration_id.in_(ids))).rowcount
            removed_declarations = conn.execute(
                delete(declarations).where(declarations.c.id.in_(ids))
            ).rowcount
            bumped = False
            if removed_status:
                bump_list_version(conn, STATUS, now)
                bumped = True
        report = replace(
            report,
            declarations=report.declarations + removed_declarations,
            passes=report.passes + removed_passes,
            pass_status=report.pass_status + removed_status,
            batches=report.batches + 1,
            status_version_bumped=report.status_version_bumped or bumped,
        )
        if progress is not None:
            progress("declarations", report)
        if len(ids) < batch_size:
            break

    while True:
        with engine.begin() as conn:
            ids = list(
                conn.execute(
                    select(audit_log.c.id)
                    .where(audit_log.c.at < audit_cutoff)
                    .order_by(audit_log.c.id)
                    .limit(batch_size)
                )
                .scalars()
                .all()
            )
            if not ids:
                break
            removed = conn.execute(delete(audit_log).where(audit_log.c.id.in_(ids))).rowcount
        report = replace(report, audit_entries=report.audit_entries + removed, batches=report.batches + 1)
        if progress is not None:
            progress("audit", report)
        if len(ids) < batch_size:
            break

    with engine.begin() as conn:
        detail = report.as_dict()
        detail.pop("dry_run")
        audit.record(conn, actor=AUDIT_ACTOR, role=None, action="retention_purge", detail=detail, now=now)
    log.info(
        "retention purge: %d declarations, %d passes, %d status entries, %d audit entries removed",
        report.declarations,
        report.passes,
        report.pass_status,
        report.audit_entries,
    )
    return report


def _dry_run(engine: Engine, report: PurgeReport, now: datetime) -> PurgeReport:
    assert report.declaration_cutoff is not None and report.audit_cutoff is not None
    due = _due_declarations(report.declaration_cutoff, now)
    with engine.connect() as conn:
        n_declarations = _count(conn, due)
        due_passes = select(passes.c.pass_id).where(passes.c.declaration_id.in_(due))
        n_passes = _count(conn, due_passes)
        n_status = _count(conn, select(pass_status.c.pass_id).where(pass_status.c.pass_id.in_(due_passes)))
        n_audit = _count(conn, select(audit_log.c.id).where(audit_log.c.at < report.audit_cutoff))
    return replace(
        report,
        declarations=n_declarations,
        passes=n_passes,
        pass_status=n_status,
        audit_entries=n_audit,
        status_version_bumped=False,
    )


def scheduled_purge(
    engine: Engine, settings: RetentionSettings, *, now: datetime | None = None
) -> PurgeReport | None:
    """One scheduled run for the bridge's timer (every ``settings.purge_interval_s``).

    Returns the report, or None when the purge failed: the error is logged with its traceback and
    the caller's loop goes on (the next run tries again). Does nothing when the schedule is off.
    """
    if settings.purge_interval_s == 0:
        return None
    try:
        return purge(engine, settings, now or datetime.now(UTC))
    except Exception:
        log.exception("retention purge failed; retrying in %d s", settings.purge_interval_s)
        return None
