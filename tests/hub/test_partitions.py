"""PostgreSQL daily partitions of presence data (hub/db/partitions.py, migration 0005): the migration
converts and restores existing rows, ingest still deduplicates, rows of days without a partition wait in
the default one and move when their day is made, the purge drops whole due days with exact counts, and
F1 reads the same answers from one or two partitions per range scan."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import Engine, func, insert, select, text

from hub.config import RetentionSettings
from hub.db import _alembic_config, current_revision, make_engine, migrate
from hub.db.partitions import PRESENCE_EVENTS, VISITS, day_partitions, ensure_partitions
from hub.db.schema import events, venue_stays, visits
from hub.db.store import EventRow, HubStore
from hub.retention import purge
from hub.tracing import _scan_sql, find_f1
from hub.tracing_rules import MAX_STAY_S, TracingRules, scan_range
from tests.hub.tracing_helpers import minutes, pass_subject, place_kiosk, scan

#: Far from the day the test template was migrated, so no partition exists yet for these days.
DAY = datetime(2031, 6, 15, tzinfo=UTC)
SHORT = RetentionSettings(presence_days=3)


@pytest.fixture
def db_backend() -> str:
    """Partitions exist on PostgreSQL only: every test here runs there alone."""
    return "postgresql"


def _where(engine: Engine, table: str) -> dict[int, str]:
    """The partition each row of ``table`` is stored in, by id."""
    with engine.connect() as conn:
        return dict(conn.execute(text(f"SELECT id, tableoid::regclass::text FROM {table}")).all())


def _visit_rows(engine: Engine) -> set[tuple]:
    with engine.connect() as conn:
        return {tuple(r) for r in conn.execute(select(visits.c.id, visits.c.arrive_s, visits.c.depart_s))}


def _event_rows(engine: Engine) -> set[tuple]:
    with engine.connect() as conn:
        return {tuple(r) for r in conn.execute(select(events.c.id, events.c.kind, events.c.device_time))}


def _checklist(kiosk_id: str, at: datetime, seq: int) -> EventRow:
    return EventRow(kiosk_id, "e1", seq, str(uuid.uuid4()), "checklist", at, {"answers": {"mask": True}})


# ----------------------------------------------------------------------------------- the migration


def _revision(engine: Engine, target: str, *, down: bool = False) -> None:
    with engine.begin() as conn:
        (command.downgrade if down else command.upgrade)(_alembic_config(conn), target)


def _seed_0004(engine: Engine, now: datetime) -> None:
    """Visits and events as revision 0004 stores them: recent days, long ago, far ahead, a checklist."""
    stamps = {
        "recent": now - timedelta(days=3),
        "old": now - timedelta(days=90),
        "ahead": now + timedelta(days=60),
    }
    with engine.begin() as conn:
        for seq, at in enumerate(stamps.values(), start=1):
            s = int(at.timestamp())
            conn.execute(
                insert(visits).values(
                    venue_id="cho", person_id=seq, arrive_s=s, depart_s=s + 3600, arrive_scanned=True,
                    depart_scanned=False, rev=1, kiosk_id="k1", epoch="e1", seq=seq,
                )
            )  # fmt: skip
            for kind, k in (("check_in", 0), ("checklist", 100)):
                conn.execute(
                    insert(events).values(
                        kiosk_id="k1", epoch="e1", seq=seq + k, uuid=str(uuid.uuid4()), kind=kind,
                        device_time=at, received_at=at, body={"n": seq},
                    )
                )  # fmt: skip


def test_the_migration_partitions_existing_rows_and_the_downgrade_restores_them(empty_db_url):
    engine = make_engine(empty_db_url)
    try:
        _revision(engine, "0004")
        now = datetime.now(UTC)
        _seed_0004(engine, now)
        visits_before, events_before = _visit_rows(engine), _event_rows(engine)

        migrate(engine)
        assert current_revision(engine) == "0005"
        assert _visit_rows(engine) == visits_before and _event_rows(engine) == events_before
        recent = f"p{now - timedelta(days=3):%Y%m%d}"
        # Rows of the days retention keeps went to their day; the rest to the defaults.
        assert sorted(_where(engine, "visits").values()) == sorted(
            ["visits_default", "visits_default", f"visits_{recent}"]
        )
        assert sorted(_where(engine, "events").values()) == sorted(
            ["events_other"] * 3 + ["events_presence_default"] * 2 + [f"events_presence_{recent}"]
        )
        with engine.connect() as conn:
            days = day_partitions(conn, VISITS)
            assert (
                min(days) <= (now - timedelta(days=30)).date()
                and max(days) == (now + timedelta(days=7)).date()
            )
            assert set(day_partitions(conn, PRESENCE_EVENTS)) == set(days)
            parent_keys = set(
                conn.execute(
                    text(
                        "SELECT conname FROM pg_constraint "
                        "WHERE conrelid IN ('visits'::regclass, 'events'::regclass)"
                    )
                ).scalars()
            )
            parent_indexes = set(
                conn.execute(
                    text("SELECT indexname FROM pg_indexes WHERE tablename IN ('visits', 'events')")
                ).scalars()
            )
        assert {
            "pk_visits", "uq_visits_kiosk_id_epoch_seq_arrive_s", "ck_visits_ck_visits_stay_bounded",
            "pk_events", "uq_events_kiosk_id_epoch_seq_kind_device_time",
        } <= parent_keys  # fmt: skip
        assert {"ix_visits_venue_span", "ix_visits_person_arrive", "ix_visits_rev"} <= parent_indexes
        assert "ix_events_kind_device_time" in parent_indexes
        # The id sequences carry on.
        with engine.begin() as conn:
            s = int(now.timestamp())
            new_visit = conn.execute(
                insert(visits)
                .values(venue_id="cho", person_id=9, arrive_s=s, depart_s=s + 60, arrive_scanned=True,
                        depart_scanned=True, rev=2, kiosk_id="k1", epoch="e1", seq=9)
                .returning(visits.c.id)
            ).scalar_one()  # fmt: skip
        assert new_visit == max(i for i, _, _ in visits_before) + 1
        # A seq reused with another time is a second row now; the downgrade keeps the first stored.
        with engine.begin() as conn:
            conn.execute(
                insert(events).values(
                    kiosk_id="k1", epoch="e1", seq=1, uuid=str(uuid.uuid4()), kind="check_in",
                    device_time=now, received_at=now, body={},
                )
            )  # fmt: skip

        _revision(engine, "0004", down=True)
        assert current_revision(engine) == "0004"
        assert _event_rows(engine) == events_before
        assert _visit_rows(engine) == visits_before | {(new_visit, s, s + 60)}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT relkind FROM pg_class WHERE relname = 'visits'")).scalar() == "r"
            assert not conn.execute(text("SELECT count(*) FROM pg_inherits")).scalar()
            names = set(
                conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'events'")).scalars()
            )
        assert names == {"pk_events", "uq_events_kiosk_epoch_seq", "ix_events_kind_device_time"}

        migrate(engine)  # and up again
        assert _event_rows(engine) == events_before
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------- ingest


def test_resent_events_are_stored_once_in_their_partitions(hub_engine):
    ensure_partitions(hub_engine, DAY, SHORT)
    place_kiosk(hub_engine, "kiosk-cho", "cho", "market")
    at = DAY + timedelta(hours=2)
    batch = [
        scan("kiosk-cho", pass_subject("P1"), at),
        scan("kiosk-cho", pass_subject("P2"), at + minutes(5)),
        scan("kiosk-cho", pass_subject("P1"), at + minutes(40), out=True),
        _checklist("kiosk-cho", at, 90_000),
    ]
    store = HubStore(hub_engine)
    store.commit(events=batch)
    store.commit(events=batch)
    store.commit(events=[*batch[1:], batch[0]])
    assert store.count_events() == 4
    where = sorted(_where(hub_engine, "events").values())
    assert where == ["events_other", *["events_presence_p20310615"] * 3]
    assert sorted(_where(hub_engine, "visits").values()) == ["visits_p20310615"] * 2


def test_a_day_without_a_partition_waits_in_the_default_and_moves_when_its_day_is_made(hub_engine):
    place_kiosk(hub_engine, "kiosk-cho", "cho", "market")
    store = HubStore(hub_engine)
    store.commit(events=[scan("kiosk-cho", pass_subject("P1"), DAY + timedelta(hours=8))])
    assert set(_where(hub_engine, "visits").values()) == {"visits_default"}
    assert set(_where(hub_engine, "events").values()) == {"events_presence_default"}
    visits_before, events_before = _visit_rows(hub_engine), _event_rows(hub_engine)

    made = ensure_partitions(hub_engine, DAY, SHORT)
    assert "visits_p20310615" in made and "events_presence_p20310615" in made
    assert ensure_partitions(hub_engine, DAY, SHORT) == []  # idempotent
    assert set(_where(hub_engine, "visits").values()) == {"visits_p20310615"}
    assert set(_where(hub_engine, "events").values()) == {"events_presence_p20310615"}
    assert _visit_rows(hub_engine) == visits_before and _event_rows(hub_engine) == events_before

    # A past day is made only when rows of it wait in the default (a kiosk that was offline).
    later = DAY + timedelta(days=9)
    store.commit(events=[scan("kiosk-cho", pass_subject("P2"), later - timedelta(hours=16))])
    made = ensure_partitions(hub_engine, later, RetentionSettings(presence_days=30))
    assert "visits_p20310623" in made and "visits_p20310624" in made and "visits_p20310614" not in made
    assert sorted(_where(hub_engine, "visits").values()) == ["visits_p20310615", "visits_p20310623"]


def test_two_processes_making_partitions_at_once_make_each_day_once(db_url):
    engines = [make_engine(db_url) for _ in range(2)]
    barrier = threading.Barrier(2)
    made: list[list[str]] = []
    errors: list[BaseException] = []

    def run(engine):
        try:
            barrier.wait(timeout=30)
            made.append(ensure_partitions(engine, DAY, SHORT))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert errors == []
        together = sorted(made[0] + made[1])
        assert together == sorted({*together}) and len(together) == 2 * 8  # today and 7 days ahead, each once
    finally:
        for e in engines:
            e.dispose()


def test_a_late_entry_moves_its_visit_to_the_partition_of_its_arrival(hub_engine):
    ensure_partitions(hub_engine, DAY, SHORT)
    place_kiosk(hub_engine, "kiosk-cho", "cho", "market")
    store = HubStore(hub_engine)
    midnight = DAY + timedelta(days=1)
    # An exit-only visit [exit - 1 h, exit] begins the day before its exit ...
    store.commit(events=[scan("kiosk-cho", pass_subject("P1"), midnight + minutes(30), out=True)])
    ((vid, before),) = _where(hub_engine, "visits").items()
    assert before == "visits_p20310615"
    # ... and the late entry, after midnight, moves it to the next day's partition.
    store.commit(events=[scan("kiosk-cho", pass_subject("P1"), midnight + minutes(10))])
    assert _where(hub_engine, "visits") == {vid: "visits_p20310616"}
    assert {(a, d) for _, a, d in _visit_rows(hub_engine)} == {
        (int((midnight + minutes(10)).timestamp()), int((midnight + minutes(30)).timestamp()))
    }


# ---------------------------------------------------------------------------------------- purge


def _fill_days(engine: Engine) -> None:
    """Check-ins and check-outs at one venue every day from 8 days before DAY on, as a bridge running
    all along made the partitions ahead; one visit across the cutoff; old rows in the defaults."""
    place_kiosk(engine, "kiosk-cho", "cho", "market")
    store = HubStore(engine)
    first = DAY - timedelta(days=8)
    ensure_partitions(engine, first, SHORT)
    for day in range(9):
        at = first + timedelta(days=day, hours=3)
        rows = [scan("kiosk-cho", pass_subject(f"P{day}-{i}"), at + minutes(7 * i)) for i in range(4)]
        rows += [
            scan("kiosk-cho", pass_subject(f"P{day}-{i}"), at + minutes(40 + i), out=True) for i in range(2)
        ]
        store.commit(events=rows)
    cutoff = DAY + timedelta(hours=12) - timedelta(days=SHORT.presence_days)
    store.commit(
        events=[
            scan("kiosk-cho", pass_subject("across"), cutoff - minutes(20)),
            scan("kiosk-cho", pass_subject("across"), cutoff + minutes(40), out=True),
            scan("kiosk-cho", pass_subject("long-ago"), DAY - timedelta(days=60)),
            _checklist("kiosk-cho", DAY - timedelta(days=60), 90_001),
        ]
    )


def test_the_purge_drops_whole_due_days_and_counts_what_the_dry_run_counts(hub_engine):
    _fill_days(hub_engine)
    now = DAY + timedelta(hours=12)
    cutoff_s = int((now - timedelta(days=SHORT.presence_days)).timestamp())
    event_cutoff = now - timedelta(days=SHORT.presence_days, seconds=MAX_STAY_S)
    visits_before, events_before = _visit_rows(hub_engine), _event_rows(hub_engine)
    kept_visits = {v for v in visits_before if v[2] >= cutoff_s}
    kept_events = {e for e in events_before if e[1] == "checklist" or e[2] >= event_cutoff}
    assert len(kept_visits) < len(visits_before) and len(kept_events) < len(events_before)

    dry = purge(hub_engine, SHORT, now, dry_run=True)
    assert (_visit_rows(hub_engine), _event_rows(hub_engine)) == (visits_before, events_before)
    # The days before June 12 (00:00 UTC, 12 h before the cutoff) go whole: June 7 to 11 in both tables,
    # and the test template's days, made when it was migrated.
    due = _days_before(hub_engine, VISITS, "2031-06-12") + _days_before(
        hub_engine, PRESENCE_EVENTS, "2031-06-12"
    )
    assert {"visits_p20310607", "visits_p20310611", "events_presence_p20310611"} <= set(due)
    assert dry.partitions == len(due)
    assert (dry.visits, dry.presence_events) == (
        len(visits_before) - len(kept_visits),
        len(events_before) - len(kept_events),
    )

    seen: list[str] = []
    real = purge(hub_engine, SHORT, now, progress=lambda part, r: seen.append(part))
    assert (real.visits, real.presence_events, real.partitions) == (dry.visits, dry.presence_events, len(due))
    assert seen[:2] == ["visits", "presence_events"]  # one batch per table's dropped days first
    # Nothing younger than the cutoff is lost, nothing due is left.
    assert _visit_rows(hub_engine) == kept_visits
    assert _event_rows(hub_engine) == kept_events
    assert _days_before(hub_engine, VISITS, "2031-06-12") == []
    assert _days_before(hub_engine, PRESENCE_EVENTS, "2031-06-12") == []
    again = purge(hub_engine, SHORT, now)
    assert (again.visits, again.presence_events, again.partitions) == (0, 0, 0)


def test_a_busy_table_is_purged_in_batches_instead(hub_engine):
    _fill_days(hub_engine)
    now = DAY + timedelta(hours=12)
    dry = purge(hub_engine, SHORT, now, dry_run=True)
    due_visits = _days_before(hub_engine, VISITS, "2031-06-12")
    due_events = _days_before(hub_engine, PRESENCE_EVENTS, "2031-06-12")
    # A long read holds visits: its days are not dropped this time, but their due rows still go.
    with hub_engine.connect() as reader:
        reader.execute(text("SELECT count(*) FROM visits"))
        report = purge(hub_engine, SHORT, now)
        reader.rollback()
    assert (report.visits, report.presence_events) == (dry.visits, dry.presence_events)
    assert report.partitions == len(due_events)  # the events' days only
    assert _days_before(hub_engine, VISITS, "2031-06-12") == due_visits
    with hub_engine.connect() as conn:
        emptied = [conn.execute(text(f"SELECT count(*) FROM {name}")).scalar() for name in due_visits]
    assert emptied == [0] * len(due_visits)
    later = purge(hub_engine, SHORT, now)  # the emptied days go on the next run
    assert (later.visits, later.partitions) == (0, len(due_visits))


def _days_before(engine: Engine, table, day: str) -> list[str]:
    with engine.connect() as conn:
        return [name for d, name in sorted(day_partitions(conn, table).items()) if d.isoformat() < day]


# ------------------------------------------------------------------------------------------ F1


def _f1_answers(engine: Engine, f0s, start: int, end: int, rules: TracingRules) -> dict:
    with engine.connect() as conn:
        out = {}
        for f0 in f0s:
            own, contacts = find_f1(conn, f0, start, end, rules)
            out[f0] = (
                [(p.venue_id, p.arrive_s, p.depart_s) for p in own],
                {p: (c.longest_s, c.encounter_count, c.first_s, c.last_s) for p, c in contacts.items()},
            )
        return out


def test_f1_answers_are_the_same_before_and_after_partitioning(empty_db_url):
    from bench.tracing import EPOCH, Shape, choose_f0, generate

    rules = TracingRules()
    ds = generate(Shape.for_visits(6000, seed=7), rules)
    f0s = choose_f0(ds, 12, rules, seed=7)
    start, end = ds.end_s - rules.lookback_days * 86400, ds.end_s
    engine = make_engine(empty_db_url)
    try:
        _revision(engine, "0004")
        stays = ds.max_stays()
        with engine.begin() as conn:
            conn.execute(
                insert(visits),
                [
                    {
                        "venue_id": ds.venue_ids[v], "person_id": p, "arrive_s": a, "depart_s": d,
                        "arrive_scanned": asc, "depart_scanned": dsc, "rev": 1,
                        "kiosk_id": ds.kiosk_id(v), "epoch": EPOCH, "seq": s,
                    }
                    for v, p, a, d, asc, dsc, s in zip(
                        ds.venue.tolist(), ds.person.tolist(), ds.arrive.tolist(), ds.depart.tolist(),
                        ds.arrive_scanned.tolist(), ds.depart_scanned.tolist(), ds.seq.tolist(), strict=True,
                    )
                ],
            )  # fmt: skip
            conn.execute(
                insert(venue_stays),
                [
                    {"venue_id": v, "max_stay_s": int(stays[i])}
                    for i, v in enumerate(ds.venue_ids)
                    if stays[i]
                ],
            )
        plain = _f1_answers(engine, f0s, start, end, rules)
        assert sum(len(c) for _, c in plain.values()) > 0

        migrate(engine)
        assert _f1_answers(engine, f0s, start, end, rules) == plain
        # Every day of the data made: rows move out of the default partition.
        settings = RetentionSettings(presence_days=ds.shape.days + 2)
        ensure_partitions(engine, datetime.fromtimestamp(ds.end_s, UTC), settings)
        with engine.connect() as conn:
            left = conn.execute(text("SELECT count(*) FROM visits_default")).scalar()
            total = conn.execute(select(func.count()).select_from(visits)).scalar()
        assert left == 0 and total == ds.size
        assert _f1_answers(engine, f0s, start, end, rules) == plain
    finally:
        engine.dispose()


def _scanned(engine: Engine, params: tuple) -> list[str]:
    """The relations an EXPLAIN of one range scan of find_f1 reads."""
    with engine.connect() as conn:
        (plan,) = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + _scan_sql(1, "%s"), params).scalar_one()
    found: list[str] = []

    def walk(node: dict) -> None:
        if "Relation Name" in node:
            found.append(node["Relation Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk(json.loads(plan)["Plan"] if isinstance(plan, str) else plan["Plan"])
    return found


@pytest.mark.parametrize(("hour", "max_stay_h", "expected"), [(10, 2, 1), (1, 12, 2)])
def test_a_range_scan_of_f1_reads_one_or_two_day_partitions(hub_engine, hour, max_stay_h, expected):
    ensure_partitions(hub_engine, DAY, SHORT)
    arrive = int((DAY + timedelta(days=1, hours=hour)).timestamp())
    lo, hi, after = scan_range(arrive, arrive + 3600, TracingRules().buffer_s, max_stay_h * 3600)
    relations = _scanned(hub_engine, ("cho", lo, hi, after))
    assert len(set(relations)) == expected
    assert set(relations) <= {"visits_p20310615", "visits_p20310616"}
