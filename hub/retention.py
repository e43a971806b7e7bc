"""Data retention: purge old declarations (with their passes and status entries), old audit entries and
old presence data (visits and the check-in/check-out events behind them).

Declarations whose ``created_at`` is older than ``retention.declaration_days`` go, with every pass
issued for them and those passes' ``pass_status`` rows, unless one of their passes is still valid:
a valid pass keeps its declaration (and its status entry, so kiosks keep showing a flagged pass in
yellow or red) until it expires. Audit entries older than ``retention.audit_days`` go.

Presence: visits that ended before ``now - retention.presence_days`` go, and check-in/check-out events
scanned 12 hours (the longest stay) before that cutoff, so an event never goes while the visit it made
or closed stays. On PostgreSQL both are partitioned by UTC day (hub/db/partitions.py): the purge first
makes the coming days' partitions, then drops every day that ended 12 hours before the cutoff (all of
its visits ended before the cutoff, all of its scans are older than the events' cutoff), counting its
rows first so the report stays exact. What is left due (the days at the cutoff, the default
partitions, and all of it on SQLite) is deleted in batches: due visits are found venue by venue through
the covering index ``(venue_id, arrive_s, depart_s, person_id)`` (a venue's old visits sit together at
the start of its range), due events through ``(kind, device_time)``, both outside the write
transactions; each batch is then deleted by primary key in a transaction of its own that checks the
cutoff again. The bridge's scheduled purge also rests after each of these batches as long as the batch
took, so an ingest running beside it keeps most of the database and the CPUs.

Work is done in batches of ``batch_size`` rows, each in its own short transaction, so a large purge
never holds the database's write lock for long; a callback hears about every batch. Removing status
entries bumps the ``status`` list version in the same transaction (the bridge then republishes).
The purge records itself in the audit log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, and_, delete, exists, func, select, text
from sqlalchemy.exc import DBAPIError

from hub import audit
from hub.config import RetentionSettings
from hub.db import partitions, to_db_time
from hub.db.schema import audit_log, declarations, events, pass_status, passes, visits
from hub.keys import STATUS, bump_list_version
from hub.tracing_rules import MAX_STAY_S

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 500
AUDIT_ACTOR = "system:retention"
#: The bridge's scheduled purge rests as long as each batch took (half the pace, for the ingest beside it).
SCHEDULED_REST = 1.0
#: Venues whose due visits are looked up in one query.
VENUE_GROUP = 200
#: The events that carry presence (and personal data: the pass id or the sealed ID card).
PRESENCE_EVENT_KINDS = ("check_in", "check_out")


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """How many rows a purge removed (or, in a dry run, would remove)."""

    declarations: int = 0
    passes: int = 0
    pass_status: int = 0
    audit_entries: int = 0
    visits: int = 0
    presence_events: int = 0
    #: Day partitions dropped (PostgreSQL); their rows are counted in ``visits`` and ``presence_events``.
    partitions: int = 0
    batches: int = 0
    status_version_bumped: bool = False
    dry_run: bool = False
    declaration_cutoff: datetime | None = None
    audit_cutoff: datetime | None = None
    presence_cutoff: datetime | None = None

    def as_dict(self) -> dict:
        """The report as plain JSON-ready values (times in ISO 8601)."""
        out = asdict(self)
        for key in ("declaration_cutoff", "audit_cutoff", "presence_cutoff"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out


#: Called after every batch with the counts so far and what the batch was ("declarations", "audit",
#: "visits" or "presence_events"; dropping a table's due day partitions is one batch of it).
ProgressCallback = Callable[[str, PurgeReport], None]


def cutoffs(settings: RetentionSettings, now: datetime) -> tuple[datetime, datetime]:
    """(declaration cutoff, audit cutoff): rows created before these are due."""
    now = to_db_time(now)
    return now - timedelta(days=settings.declaration_days), now - timedelta(days=settings.audit_days)


def presence_cutoff(settings: RetentionSettings, now: datetime) -> datetime:
    """Visits that ended before this are due (check-in/check-out events: 12 hours before it)."""
    return to_db_time(now) - timedelta(days=settings.presence_days)


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
    rest: float = 0.0,
) -> PurgeReport:
    """Remove what ``settings`` says is past retention at ``now``; return the counts.

    With ``dry_run`` nothing is deleted and the counts are what a real purge would remove now.
    ``rest``: after each batch of presence data, pause for this many times the batch's own duration,
    leaving the database and the CPUs to a concurrent ingest (the bridge purges with
    :data:`SCHEDULED_REST`; 0 purges at full speed).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if rest < 0:
        raise ValueError(f"rest must be 0 or more, got {rest}")
    now = to_db_time(now)
    declaration_cutoff, audit_cutoff = cutoffs(settings, now)
    report = PurgeReport(
        dry_run=dry_run,
        declaration_cutoff=declaration_cutoff,
        audit_cutoff=audit_cutoff,
        presence_cutoff=presence_cutoff(settings, now),
    )
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

    if engine.dialect.name == "postgresql":
        partitions.ensure_partitions(engine, now, settings)
        report = _drop_due_partitions(engine, report, progress)
    pace = _Pace(rest)
    report = _purge_visits(engine, report, batch_size, progress, pace)
    report = _purge_presence_events(engine, report, batch_size, progress, pace)

    with engine.begin() as conn:
        detail = report.as_dict()
        detail.pop("dry_run")
        audit.record(conn, actor=AUDIT_ACTOR, role=None, action="retention_purge", detail=detail, now=now)
    log.info(
        "retention purge: %d declarations, %d passes, %d status entries, %d audit entries, %d visits, "
        "%d check-in/out events removed",
        report.declarations,
        report.passes,
        report.pass_status,
        report.audit_entries,
        report.visits,
        report.presence_events,
    )
    return report


def _cutoff_s(report: PurgeReport) -> int:
    assert report.presence_cutoff is not None
    return int(report.presence_cutoff.timestamp())


def _event_cutoff(report: PurgeReport) -> datetime:
    assert report.presence_cutoff is not None
    return report.presence_cutoff - timedelta(seconds=MAX_STAY_S)


#: Every venue with visits, one index seek each (a loose index scan: neither backend skips on its own).
_VENUES_WITH_VISITS = text(
    "WITH RECURSIVE v(venue_id) AS ("
    " SELECT min(venue_id) FROM visits"
    " UNION ALL"
    " SELECT (SELECT min(venue_id) FROM visits WHERE venue_id > v.venue_id) FROM v"
    " WHERE v.venue_id IS NOT NULL"
    ") SELECT venue_id FROM v WHERE venue_id IS NOT NULL"
)
#: PostgreSQL: the same over the partitions that can hold due visits (the days at the cutoff and the
#: default), where each seek would otherwise visit every day's partition. SQLite keeps the one above:
#: this filter would make it step over each venue's newer visits one by one.
_VENUES_WITH_VISITS_BEFORE = text(
    "WITH RECURSIVE v(venue_id) AS ("
    " SELECT min(venue_id) FROM visits WHERE arrive_s < :cutoff"
    " UNION ALL"
    " SELECT (SELECT min(venue_id) FROM visits WHERE venue_id > v.venue_id AND arrive_s < :cutoff) FROM v"
    " WHERE v.venue_id IS NOT NULL"
    ") SELECT venue_id FROM v WHERE venue_id IS NOT NULL"
)


class _Pace:
    """Times each batch and rests ``rest`` times as long after it."""

    def __init__(self, rest: float):
        self._rest = rest
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.monotonic()

    def __exit__(self, *exc) -> None:
        if self._rest > 0 and exc[0] is None:
            time.sleep(self._rest * (time.monotonic() - self._started))


def _purge_visits(
    engine: Engine, report: PurgeReport, batch_size: int, progress: ProgressCallback | None, pace: _Pace
) -> PurgeReport:
    cutoff_s = _cutoff_s(report)
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            venue_ids = list(conn.execute(_VENUES_WITH_VISITS_BEFORE, {"cutoff": cutoff_s}).scalars())
        else:
            venue_ids = list(conn.execute(_VENUES_WITH_VISITS).scalars())
    for start in range(0, len(venue_ids), VENUE_GROUP):
        group = venue_ids[start : start + VENUE_GROUP]
        # A read of the index only; the write transactions below stay short.
        with pace, engine.connect() as conn:
            due = list(
                conn.execute(
                    select(visits.c.id).where(
                        and_(
                            visits.c.venue_id.in_(group),
                            visits.c.arrive_s < cutoff_s,
                            visits.c.depart_s < cutoff_s,
                        )
                    )
                ).scalars()
            )
        due.sort()
        for lo in range(0, len(due), batch_size):
            ids = due[lo : lo + batch_size]
            with pace, engine.begin() as conn:
                # arrive_s: on PostgreSQL, only the partitions that can hold the rows are searched.
                removed = conn.execute(
                    delete(visits).where(
                        and_(visits.c.id.in_(ids), visits.c.arrive_s < cutoff_s, visits.c.depart_s < cutoff_s)
                    )
                ).rowcount
            report = replace(report, visits=report.visits + removed, batches=report.batches + 1)
            if progress is not None:
                progress("visits", report)
    return report


def _drop_due_partitions(
    engine: Engine, report: PurgeReport, progress: ProgressCallback | None
) -> PurgeReport:
    """Drop the day partitions of visits and of check-in/out events that are wholly due (PostgreSQL)."""
    cutoff = _event_cutoff(report)
    for table, part in ((partitions.VISITS, "visits"), (partitions.PRESENCE_EVENTS, "presence_events")):
        try:
            with engine.begin() as conn:
                dropped = partitions.drop_partitions_before(conn, table, cutoff)
        except DBAPIError as exc:
            if not partitions.is_lock_timeout(exc):
                raise
            log.warning("%s is busy: its due days are deleted in batches this time", table.table)
            continue
        if not dropped:
            continue
        rows = sum(n for _, n in dropped)
        report = replace(
            report,
            **{part: getattr(report, part) + rows},
            partitions=report.partitions + len(dropped),
            batches=report.batches + 1,
        )
        log.info("dropped %s (%d rows)", ", ".join(name for name, _ in dropped), rows)
        if progress is not None:
            progress(part, report)
    return report


def _purge_presence_events(
    engine: Engine, report: PurgeReport, batch_size: int, progress: ProgressCallback | None, pace: _Pace
) -> PurgeReport:
    cutoff = _event_cutoff(report)
    for kind in PRESENCE_EVENT_KINDS:
        after = None  # keyset: never walk again over what earlier batches removed
        while True:
            due = and_(events.c.kind == kind, events.c.device_time < cutoff)
            if after is not None:
                due = and_(due, events.c.device_time >= after)
            with pace, engine.connect() as conn:
                rows = conn.execute(
                    select(events.c.id, events.c.device_time)
                    .where(due)
                    .order_by(events.c.device_time)
                    .limit(batch_size)
                ).all()
            if not rows:
                break
            with pace, engine.begin() as conn:
                removed = conn.execute(
                    delete(events).where(
                        and_(
                            events.c.id.in_([r.id for r in rows]),
                            events.c.kind == kind,
                            events.c.device_time < cutoff,
                        )
                    )
                ).rowcount
            report = replace(
                report, presence_events=report.presence_events + removed, batches=report.batches + 1
            )
            if progress is not None:
                progress("presence_events", report)
            if len(rows) < batch_size:
                break
            after = rows[-1].device_time
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
        n_visits = _count(conn, select(visits.c.id).where(visits.c.depart_s < _cutoff_s(report)))
        n_events = _count(
            conn,
            select(events.c.id).where(
                and_(events.c.kind.in_(PRESENCE_EVENT_KINDS), events.c.device_time < _event_cutoff(report))
            ),
        )
        n_partitions = 0
        if engine.dialect.name == "postgresql":
            n_partitions = sum(
                len(partitions.due_partitions(conn, table, _event_cutoff(report)))
                for table in partitions.DAILY
            )
    return replace(
        report,
        declarations=n_declarations,
        passes=n_passes,
        pass_status=n_status,
        audit_entries=n_audit,
        visits=n_visits,
        presence_events=n_events,
        partitions=n_partitions,
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
        return purge(engine, settings, now or datetime.now(UTC), rest=SCHEDULED_REST)
    except Exception:
        log.exception("retention purge failed; retrying in %d s", settings.purge_interval_s)
        return None
