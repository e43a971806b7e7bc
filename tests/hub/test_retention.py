"""Data retention: old declarations, their passes and status entries, old audit entries and old presence
data (visits, check-in and check-out events) are purged."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select

from hub import audit
from hub.__main__ import main
from hub.config import PassSettings, RetentionSettings
from hub.db import from_db_time
from hub.db.schema import audit_log, declarations, events, pass_status, passes, persons, visits
from hub.db.store import HubStore
from hub.keys import STATUS, KeyRing, list_version
from hub.passes import issue_pass, set_status
from hub.retention import purge, scheduled_purge
from tests.hub.tracing_helpers import minutes, pass_subject, place_kiosk, scan

NOW = datetime(2021, 9, 1, 12, 0, tzinfo=UTC)
SETTINGS = RetentionSettings(declaration_days=60, audit_days=365)
PRESENCE_SETTINGS = RetentionSettings(presence_days=30)
PASS_SETTINGS = PassSettings(validity_days=14)


def _declaration(conn, created_at: datetime, *, name: str = "Nguyễn Văn An") -> int:
    return conn.execute(
        insert(declarations)
        .values(
            kind="ncovi",
            submission_id=str(uuid.uuid4()),
            id_number=uuid.uuid4().hex[:12].upper(),
            full_name=name,
            birth_year=1990,
            gender="male",
            nationality="VN",
            answers={},
            colour="green",
            colour_reasons=[],
            created_at=created_at,
        )
        .returning(declarations.c.id)
    ).scalar_one()


def _with_pass(conn, keyring, created_at: datetime, *, flagged: bool = False) -> tuple[int, str]:
    declaration_id = _declaration(conn, created_at)
    issued = issue_pass(
        conn,
        declaration_id=declaration_id,
        kind="ncovi",
        full_name="Nguyễn Văn An",
        birth_year=1990,
        colour="green",
        keyring=keyring,
        settings=PASS_SETTINGS,
        now=created_at,
    )
    if flagged:
        set_status(conn, issued.pass_id, "red", "F1", created_at + timedelta(days=1))
    return declaration_id, issued.pass_id


def _counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (declarations, passes, pass_status, audit_log)
        }


@pytest.fixture
def keyring(hub_engine):
    return KeyRing(hub_engine, PASS_SETTINGS)


def _fill(engine, keyring, now: datetime) -> dict:
    """Three old declarations with passes (one flagged), one old one without, two recent, audit entries."""
    old = now - timedelta(days=90)
    recent = now - timedelta(days=10)
    with engine.begin() as conn:
        keyring.signing_key(old - timedelta(days=1), conn=conn)
        old_ids = [
            _with_pass(conn, keyring, old + timedelta(minutes=i), flagged=(i == 0))[0] for i in range(3)
        ]
        old_ids.append(_declaration(conn, now - timedelta(days=61)))
        recent_id, recent_pass = _with_pass(conn, keyring, recent, flagged=True)
        edge_id = _declaration(conn, now - timedelta(days=59))
        for days in (400, 366, 364, 1):
            audit.record(conn, actor="user:x", role="admin", action="view", now=now - timedelta(days=days))
    return {"old": old_ids, "recent": [recent_id, edge_id], "recent_pass": recent_pass}


@pytest.fixture
def filled(hub_engine, keyring):
    return _fill(hub_engine, keyring, NOW)


def test_purge_removes_rows_past_the_cutoff_and_keeps_the_rest(hub_engine, filled):
    before_version = _status_version(hub_engine)
    seen: list[str] = []
    report = purge(hub_engine, SETTINGS, NOW, batch_size=2, progress=lambda part, r: seen.append(part))

    assert (report.declarations, report.passes, report.pass_status, report.audit_entries) == (4, 3, 1, 2)
    assert report.status_version_bumped
    assert _status_version(hub_engine) == before_version + 1
    # Four declarations in batches of two, then two audit entries in one batch of two and an empty end.
    assert seen == ["declarations", "declarations", "audit"]
    with hub_engine.connect() as conn:
        left = set(conn.execute(select(declarations.c.id)).scalars())
        assert left == set(filled["recent"])
        assert set(conn.execute(select(passes.c.pass_id)).scalars()) == {filled["recent_pass"]}
        assert set(conn.execute(select(pass_status.c.pass_id)).scalars()) == {filled["recent_pass"]}
        actions = list(conn.execute(select(audit_log.c.action).order_by(audit_log.c.id)).scalars())
    # Two entries inside a year stay, and the purge recorded itself.
    assert actions == ["view", "view", "retention_purge"]


def test_dry_run_counts_the_same_and_deletes_nothing(hub_engine, filled):
    before = _counts(hub_engine)
    version = _status_version(hub_engine)
    dry = purge(hub_engine, SETTINGS, NOW, dry_run=True)
    assert dry.dry_run
    assert (dry.declarations, dry.passes, dry.pass_status, dry.audit_entries) == (4, 3, 1, 2)
    assert _counts(hub_engine) == before
    assert _status_version(hub_engine) == version

    real = purge(hub_engine, SETTINGS, NOW)
    assert (real.declarations, real.passes, real.pass_status, real.audit_entries) == (4, 3, 1, 2)
    again = purge(hub_engine, SETTINGS, NOW)
    assert (again.declarations, again.passes, again.pass_status, again.audit_entries) == (0, 0, 0, 0)
    assert not again.status_version_bumped


def test_an_old_declaration_whose_pass_is_still_valid_is_kept(hub_engine, keyring):
    """A pass still valid keeps its declaration and status entry, so kiosks keep seeing it flagged."""
    settings = RetentionSettings(declaration_days=7, audit_days=365)
    issued_at = NOW - timedelta(days=10)  # older than 7 days, pass valid for 14
    with hub_engine.begin() as conn:
        keyring.signing_key(issued_at, conn=conn)
        _with_pass(conn, keyring, issued_at, flagged=True)
    report = purge(hub_engine, settings, NOW)
    assert (report.declarations, report.passes, report.pass_status) == (0, 0, 0)
    later = purge(hub_engine, settings, NOW + timedelta(days=5))  # the pass has expired by then
    assert (later.declarations, later.passes, later.pass_status) == (1, 1, 1)


def test_scheduled_purge_runs_and_can_be_switched_off(hub_engine, filled):
    off = RetentionSettings(declaration_days=60, audit_days=365, purge_interval_s=0)
    assert scheduled_purge(hub_engine, off, now=NOW) is None
    assert _counts(hub_engine)["declarations"] == 6
    report = scheduled_purge(hub_engine, SETTINGS, now=NOW)
    assert report is not None and report.declarations == 4


def test_scheduled_purge_logs_a_failure_and_returns_none(hub_engine, caplog):
    # A naive "now" makes purge raise: the scheduler logs it and keeps going.
    assert scheduled_purge(hub_engine, SETTINGS, now=datetime(2021, 9, 1)) is None
    assert "retention purge failed" in caplog.text


def test_purge_rejects_a_bad_batch_size(hub_engine):
    with pytest.raises(ValueError, match="batch_size"):
        purge(hub_engine, SETTINGS, NOW, batch_size=0)


def test_cli_purge_dry_run_then_real(hub_engine, keyring, db_url, monkeypatch):
    monkeypatch.setenv("ANTOAN_HUB__DATABASE__URL", db_url)
    _fill(hub_engine, keyring, datetime.now(UTC))  # the CLI purges at the real current time
    runner = CliRunner()
    dry = runner.invoke(main, ["purge", "--dry-run"], catch_exceptions=False)
    assert dry.exit_code == 0, dry.output
    assert "would remove: 4 declarations" in dry.output
    assert _counts(hub_engine)["declarations"] == 6

    real = runner.invoke(main, ["purge", "--batch-size", "3"], catch_exceptions=False)
    assert real.exit_code == 0, real.output
    assert "removed: 4 declarations" in real.output
    assert "3 passes, 1 status entries, 2 audit entries" in real.output
    assert "batch 1:" in real.output
    assert _counts(hub_engine)["declarations"] == 2


def _status_version(engine) -> int:
    with engine.connect() as conn:
        return list_version(conn, STATUS)


# ------------------------------------------------------------------------------- presence data


def _presence(engine) -> tuple[set[tuple[str, int, int]], list[tuple[str, datetime]]]:
    """(venue, arrive, depart) of every visit; (kind, device time) of every event, in time order."""
    with engine.connect() as conn:
        spans = {
            (v, int(a), int(d))
            for v, a, d in conn.execute(select(visits.c.venue_id, visits.c.arrive_s, visits.c.depart_s))
        }
        scans = [
            (kind, from_db_time(at))
            for kind, at in conn.execute(
                select(events.c.kind, events.c.device_time).order_by(events.c.device_time, events.c.id)
            )
        ]
    return spans, scans


def _fill_presence(engine) -> dict:
    """Check-ins at two venues: old visits (purged), one that ended just after the cutoff, recent ones."""
    place_kiosk(engine, "kiosk-cho", "cho-a", "market")
    place_kiosk(engine, "kiosk-quan", "quan-b", "restaurant")
    cutoff = NOW - timedelta(days=PRESENCE_SETTINGS.presence_days)
    people = [pass_subject(f"P{i:04d}") for i in range(6)]
    old = cutoff - timedelta(days=3)
    rows = [
        # Six old visits (three of them closed by a check-out), at both venues.
        *(scan("kiosk-cho" if i % 2 else "kiosk-quan", people[i], old + minutes(10 * i)) for i in range(6)),
        *(
            scan("kiosk-cho" if i % 2 else "kiosk-quan", people[i], old + minutes(10 * i + 30), out=True)
            for i in range(3)
        ),
        # Entered 20 minutes before the cutoff, left 40 minutes after: the visit stays, and so do its scans.
        scan("kiosk-cho", people[0], cutoff - minutes(20)),
        scan("kiosk-cho", people[0], cutoff + minutes(40), out=True),
        # A check-out 2 hours before the cutoff with no check-in (an exit-only visit): the visit ended
        # before the cutoff and goes; its scan is within the 12 hours kept before it and stays.
        scan("kiosk-quan", people[1], cutoff - minutes(120), out=True),
        # Recent visits.
        scan("kiosk-quan", people[2], NOW - timedelta(days=1)),
        scan("kiosk-cho", people[3], NOW - timedelta(hours=2)),
    ]
    HubStore(engine).commit(events=rows)
    with engine.begin() as conn:
        # A checklist is not presence data: it stays whatever its age.
        conn.execute(
            insert(events).values(
                kiosk_id="kiosk-cho", epoch="e1", seq=10_000, uuid=str(uuid.uuid4()), kind="checklist",
                device_time=old, received_at=old, body={"answers": {}},
            )
        )  # fmt: skip
    return {"cutoff": cutoff, "old": old}


def test_presence_purge_removes_visits_and_scans_past_the_cutoff_in_batches(hub_engine):
    fill = _fill_presence(hub_engine)
    cutoff_s = int(fill["cutoff"].timestamp())
    spans_before, scans_before = _presence(hub_engine)
    assert len(spans_before) == 10
    seen: list[str] = []
    report = purge(
        hub_engine, PRESENCE_SETTINGS, NOW, batch_size=2, progress=lambda part, r: seen.append(part)
    )

    spans, scans = _presence(hub_engine)
    assert spans == {s for s in spans_before if s[2] >= cutoff_s}
    assert len(spans) == 3  # the one across the cutoff and the two recent ones
    event_cutoff = fill["cutoff"] - timedelta(hours=12)
    assert scans == [s for s in scans_before if s[0] == "checklist" or s[1] >= event_cutoff]
    assert ("checklist", fill["old"]) in scans
    # Seven visits ended before the cutoff; nine old check-in/out scans were made 12 h before it.
    assert (report.visits, report.presence_events) == (7, 9)
    assert report.presence_cutoff == fill["cutoff"]
    # Visits in batches of two (the venues' due rows: 4 at quan-b, 3 at cho-a), then the scans by kind
    # (6 check-ins, 3 check-outs).
    assert seen == ["visits"] * 4 + ["presence_events"] * 5
    assert purge(hub_engine, PRESENCE_SETTINGS, NOW).visits == 0
    with hub_engine.connect() as conn:
        detail = (
            conn.execute(select(audit_log.c.detail).where(audit_log.c.action == "retention_purge"))
            .scalars()
            .first()
        )
    assert (detail["visits"], detail["presence_events"]) == (7, 9)


def test_presence_purge_resting_between_batches_removes_the_same(hub_engine):
    _fill_presence(hub_engine)
    report = purge(hub_engine, PRESENCE_SETTINGS, NOW, batch_size=2, rest=0.5)
    assert (report.visits, report.presence_events) == (7, 9)
    with pytest.raises(ValueError, match="rest"):
        purge(hub_engine, PRESENCE_SETTINGS, NOW, rest=-1)


def test_the_scheduled_purge_removes_presence_data_too(hub_engine):
    _fill_presence(hub_engine)
    report = scheduled_purge(hub_engine, PRESENCE_SETTINGS, now=NOW)
    assert report is not None and (report.visits, report.presence_events) == (7, 9)


def test_presence_purge_dry_run_counts_the_same_and_deletes_nothing(hub_engine):
    _fill_presence(hub_engine)
    before = _presence(hub_engine)
    dry = purge(hub_engine, PRESENCE_SETTINGS, NOW, dry_run=True)
    assert (dry.visits, dry.presence_events) == (7, 9)
    assert _presence(hub_engine) == before
    real = purge(hub_engine, PRESENCE_SETTINGS, NOW)
    assert (real.visits, real.presence_events) == (7, 9)


def test_tracing_still_finds_contacts_within_the_retention_after_a_purge(hub_engine):
    from hub.tracing import find_f1
    from hub.tracing_rules import TracingRules

    _fill_presence(hub_engine)
    purge(hub_engine, PRESENCE_SETTINGS, NOW)
    place_kiosk(hub_engine, "kiosk-sieu-thi", "sieu-thi", "market")
    f0, f1 = pass_subject("F0-0001"), pass_subject("F1-0001")
    at = NOW - timedelta(days=3)
    HubStore(hub_engine).commit(
        events=[scan("kiosk-sieu-thi", f0, at), scan("kiosk-sieu-thi", f1, at + minutes(10))]
    )
    with hub_engine.connect() as conn:
        f0_id = conn.execute(select(persons.c.id).where(persons.c.person_key == "pass:F0-0001")).scalar_one()
        _, contacts = find_f1(
            conn, f0_id, int((NOW - timedelta(days=14)).timestamp()), int(NOW.timestamp()), TracingRules()
        )
    assert len(contacts) == 1
