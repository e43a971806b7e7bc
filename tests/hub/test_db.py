"""Tests of hub.db: migrations (idempotent, concurrent, matching the schema) and HubStore commits."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.db import current_revision, head_revision, make_engine, migrate
from hub.db.schema import DEAD_LETTER_PAYLOAD_MAX, metadata
from hub.db.store import DeadLetter, EventRow, HubStore, KioskStateRow

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2021, 8, 1, 8, 30, tzinfo=UTC)


def _epoch() -> str:
    return uuid.uuid4().hex


def _event(kiosk_id: str, epoch: str, seq: int, **overrides) -> EventRow:
    fields = {
        "kiosk_id": kiosk_id,
        "epoch": epoch,
        "seq": seq,
        "uuid": str(uuid.uuid4()),
        "kind": "check_in",
        "device_time": T0 + timedelta(seconds=seq),
        "body": {"venue": "v-001", "seq": seq},
    }
    fields.update(overrides)
    return EventRow(**fields)


def _state(kiosk_id: str, **overrides) -> KioskStateRow:
    fields = {
        "kiosk_id": kiosk_id,
        "status": "online",
        "version": "1.0.0",
        "outbox_depth": 3,
        "oldest_unacked_age_s": 1.5,
        "list_ages": {"trust": 60.0, "status": None},
        "sent_at": T0,
    }
    fields.update(overrides)
    return KioskStateRow(**fields)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# --- migrations -------------------------------------------------------------------------------------


def test_migrate_is_idempotent(empty_db_url):
    engine = make_engine(empty_db_url)
    try:
        assert current_revision(engine) is None
        migrate(engine)
        migrate(engine)
        assert current_revision(engine) == head_revision() == "0005"
        assert {"events", "dead_letters", "kiosks"} <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migration_creates_exactly_the_schema(hub_engine):
    opts: dict = {"compare_type": True}
    postgresql = hub_engine.dialect.name == "postgresql"
    with hub_engine.connect() as conn:
        if postgresql:  # the partitions of visits and events (hub/db/partitions.py) are not in the metadata
            parts = set(
                conn.exec_driver_sql(
                    "SELECT relid::regclass::text FROM pg_partition_tree('visits') WHERE level > 0 UNION "
                    "SELECT relid::regclass::text FROM pg_partition_tree('events') WHERE level > 0"
                ).scalars()
            )
            opts["include_name"] = lambda name, type_, _: type_ != "table" or name not in parts
        diff = compare_metadata(MigrationContext.configure(conn, opts=opts), metadata)
    if postgresql:
        # A partitioned table's unique key holds its partition keys; the metadata has SQLite's.
        keys = sorted((op, c.table.name, tuple(col.name for col in c.columns)) for op, c in diff)
        assert keys == [
            ("add_constraint", "events", ("kiosk_id", "epoch", "seq")),
            ("add_constraint", "visits", ("kiosk_id", "epoch", "seq")),
            ("remove_constraint", "events", ("kiosk_id", "epoch", "seq", "kind", "device_time")),
            ("remove_constraint", "visits", ("kiosk_id", "epoch", "seq", "arrive_s")),
        ]
    else:
        assert diff == []


def test_events_unique_constraint_has_its_fixed_name(hub_engine):
    names = {uc["name"] for uc in sa.inspect(hub_engine).get_unique_constraints("events")}
    if hub_engine.dialect.name == "postgresql":
        assert "uq_events_kiosk_id_epoch_seq_kind_device_time" in names
    else:
        assert "uq_events_kiosk_epoch_seq" in names


def test_migrate_runs_concurrently_from_two_threads(empty_db_url):
    engines = [make_engine(empty_db_url) for _ in range(2)]
    barrier = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def run(engine):
        try:
            barrier.wait(timeout=30)
            migrate(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert not any(thread.is_alive() for thread in threads)
        assert errors == []
        assert current_revision(engines[0]) == head_revision()
    finally:
        for engine in engines:
            engine.dispose()


def test_migrate_runs_concurrently_from_two_processes(empty_db_url, tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ANTOAN_HUB")},
        "ANTOAN_HUB__DATABASE__URL": empty_db_url,
        "PYTHONPATH": str(REPO_ROOT),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "hub", "migrate"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "revision 0005" in out


def test_sqlite_connections_use_wal_full_sync_and_foreign_keys(tmp_path):
    db_file = tmp_path / "nested" / "folder" / "hub.db"
    engine = make_engine(f"sqlite:///{db_file}")
    try:
        with engine.connect() as conn:
            pragma = lambda name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
            assert pragma("journal_mode") == "wal"
            assert pragma("synchronous") == 2  # FULL
            assert pragma("busy_timeout") == 30000
            assert pragma("foreign_keys") == 1
        assert db_file.exists()
    finally:
        engine.dispose()


def test_sqlite_ddl_is_transactional(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("CREATE TABLE scratch (x INTEGER)")
            conn.exec_driver_sql("INSERT INTO scratch VALUES (1)")
            conn.rollback()
        assert "scratch" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


# --- HubStore.commit ---------------------------------------------------------------------------------


def test_commit_inserts_events(hub_store):
    epoch = _epoch()
    hub_store.commit(events=[_event("kiosk-a", epoch, seq) for seq in (1, 2, 3)])
    assert hub_store.count_events() == 3
    assert hub_store.count_events("kiosk-a") == 3
    assert hub_store.count_events("kiosk-b") == 0
    assert hub_store.event_keys("kiosk-a") == [(epoch, 1), (epoch, 2), (epoch, 3)]


def test_commit_with_nothing_writes_nothing(hub_store):
    hub_store.commit()
    assert hub_store.stats() == {"events_stored": 0, "dead_letters": 0, "kiosks": []}


def test_event_fields_round_trip_and_device_time_is_kept_as_an_instant(hub_store):
    epoch = _epoch()
    hanoi = timezone(timedelta(hours=7))
    device_time = datetime(2021, 8, 1, 15, 30, 5, 123000, tzinfo=hanoi)
    body = {"venue": "v-001", "direction": "in", "tên": "Nguyễn", "nested": {"n": [1, 2]}}
    received = datetime(2021, 8, 1, 8, 31, tzinfo=UTC)
    store = HubStore(hub_store.engine, clock=FakeClock(received))
    event = _event("kiosk-a", epoch, 7, device_time=device_time, body=body, kind="check_out")
    store.commit(events=[event])
    with store.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM events")).mappings().one()
    assert (row["kiosk_id"], row["epoch"], row["seq"], row["uuid"]) == ("kiosk-a", epoch, 7, event.uuid)
    assert row["kind"] == "check_out"
    stored = sa.select(metadata.tables["events"].c.device_time, metadata.tables["events"].c.body)
    with store.engine.connect() as conn:
        stored_time, stored_body = conn.execute(stored).one()
    if stored_time.tzinfo is None:  # SQLite keeps UTC without an offset
        stored_time = stored_time.replace(tzinfo=UTC)
    assert stored_time == device_time
    assert stored_body == body


def test_duplicates_across_calls_are_stored_once(hub_store):
    epoch = _epoch()
    batch = [_event("kiosk-a", epoch, seq) for seq in range(1, 6)]
    hub_store.commit(events=batch)
    hub_store.commit(events=batch)
    hub_store.commit(events=[*batch[2:], _event("kiosk-a", epoch, 6)])
    assert hub_store.event_keys("kiosk-a") == [(epoch, seq) for seq in range(1, 7)]


def test_duplicates_inside_one_call_are_stored_once(hub_store):
    epoch = _epoch()
    first = _event("kiosk-a", epoch, 1)
    resent = _event("kiosk-a", epoch, 1, uuid=first.uuid)
    hub_store.commit(events=[first, _event("kiosk-a", epoch, 2), resent, first])
    assert hub_store.event_keys("kiosk-a") == [(epoch, 1), (epoch, 2)]


def test_a_duplicate_keeps_the_first_stored_copy(hub_store):
    epoch = _epoch()
    hub_store.commit(events=[_event("kiosk-a", epoch, 1, body={"copy": "first"})])
    hub_store.commit(events=[_event("kiosk-a", epoch, 1, body={"copy": "second"})])
    with hub_store.engine.connect() as conn:
        bodies = conn.execute(sa.select(metadata.tables["events"].c.body)).scalars().all()
    assert bodies == [{"copy": "first"}]


def test_same_seq_under_another_epoch_or_kiosk_is_stored(hub_store):
    epoch_1, epoch_2 = _epoch(), _epoch()
    hub_store.commit(events=[_event("kiosk-a", epoch_1, 1), _event("kiosk-a", epoch_2, 1)])
    hub_store.commit(events=[_event("kiosk-b", epoch_1, 1)])
    assert hub_store.event_keys("kiosk-a") == sorted([(epoch_1, 1), (epoch_2, 1)])
    assert hub_store.event_keys("kiosk-b") == [(epoch_1, 1)]
    assert hub_store.count_events() == 3


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    chunks=st.lists(
        st.lists(st.tuples(st.sampled_from("ab"), st.integers(1, 40)), max_size=30), min_size=1, max_size=5
    )
)
def test_any_resend_pattern_stores_each_key_exactly_once(hub_store, chunks):
    kiosk = f"kiosk-{uuid.uuid4().hex[:12]}"
    epochs = {"a": _epoch(), "b": _epoch()}
    for chunk in chunks:
        hub_store.commit(events=[_event(kiosk, epochs[e], seq) for e, seq in chunk])
    expected = sorted({(epochs[e], seq) for chunk in chunks for e, seq in chunk})
    assert hub_store.event_keys(kiosk) == expected


def test_dead_letters_are_truncated_and_sized_newest_first(hub_store):
    big = bytes(range(256)) * 1000  # 256,000 bytes
    small = DeadLetter("antoan/v1/kiosk/kiosk-a/events", "kiosk-a", "malformed JSON", b"{")
    hub_store.commit(dead_letters=[small])
    hub_store.commit(dead_letters=[DeadLetter("antoan/v1/kiosk/x/events", None, "too big", big)])
    letters = hub_store.dead_letters()
    assert [d["reason"] for d in letters] == ["too big", "malformed JSON"]
    assert letters[0]["payload_size"] == len(big)
    assert letters[0]["kiosk_id"] is None
    assert letters[1] | {"id": None, "received_at": None} == {
        "id": None,
        "received_at": None,
        "topic": "antoan/v1/kiosk/kiosk-a/events",
        "kiosk_id": "kiosk-a",
        "reason": "malformed JSON",
        "payload_size": 1,
    }
    assert all("payload" not in d for d in letters)
    assert hub_store.dead_letters(limit=1) == letters[:1]
    with hub_store.engine.connect() as conn:
        payloads = (
            conn.execute(
                sa.select(metadata.tables["dead_letters"].c.payload).order_by(
                    metadata.tables["dead_letters"].c.id
                )
            )
            .scalars()
            .all()
        )
    assert [bytes(p) for p in payloads] == [b"{", big[:DEAD_LETTER_PAYLOAD_MAX]]


def test_dead_letter_text_that_does_not_fit_its_column_is_cut_not_rejected(hub_store):
    topic = "antoan/v1/kiosk/" + "x" * 1000 + "/events"
    hub_store.commit(dead_letters=[DeadLetter(topic, "k" * 100, "reason with \x00 inside", b"")])
    (letter,) = hub_store.dead_letters()
    assert letter["topic"] == topic[:512]
    assert letter["kiosk_id"] == "k" * 64
    assert "\x00" not in letter["reason"]


def test_kiosk_state_upsert_updates_the_row_and_last_seen(hub_engine):
    clock = FakeClock(datetime(2021, 8, 1, 9, 0, tzinfo=UTC))
    store = HubStore(hub_engine, clock=clock)
    store.commit(states=[_state("kiosk-a", outbox_depth=10)])
    (first,) = store.kiosks()
    assert first["last_seen"] == "2021-08-01T09:00:00.000+00:00"
    assert first["outbox_depth"] == 10
    assert first["list_ages"] == {"trust": 60.0, "status": None}
    assert first["state_sent_at"] == "2021-08-01T08:30:00.000+00:00"

    clock.now = datetime(2021, 8, 1, 9, 5, tzinfo=UTC)
    store.commit(states=[_state("kiosk-a", status="offline", outbox_depth=None, sent_at=None)])
    (second,) = store.kiosks()
    assert second == {
        "kiosk_id": "kiosk-a",
        "status": "offline",
        "version": "1.0.0",
        "outbox_depth": None,
        "oldest_unacked_age_s": 1.5,
        "list_ages": {"trust": 60.0, "status": None},
        "state_sent_at": None,
        "last_seen": "2021-08-01T09:05:00.000+00:00",
    }


def test_several_states_of_one_kiosk_in_one_call_keep_the_last(hub_store):
    hub_store.commit(
        states=[
            _state("kiosk-b", outbox_depth=1),
            _state("kiosk-a", outbox_depth=5),
            _state("kiosk-b", outbox_depth=2, status="offline"),
        ]
    )
    kiosks = {k["kiosk_id"]: k for k in hub_store.kiosks()}
    assert [k["kiosk_id"] for k in hub_store.kiosks()] == ["kiosk-a", "kiosk-b"]
    assert (kiosks["kiosk-b"]["status"], kiosks["kiosk-b"]["outbox_depth"]) == ("offline", 2)


def test_a_failing_commit_leaves_nothing_half_written(hub_store):
    epoch = _epoch()
    hub_store.commit(events=[_event("kiosk-a", epoch, 1)])
    before = hub_store.stats()

    with pytest.raises(sa.exc.IntegrityError):
        hub_store.commit(
            events=[_event("kiosk-a", epoch, 2), _event("kiosk-a", epoch, 3, uuid=None)],
            dead_letters=[DeadLetter("antoan/v1/kiosk/kiosk-a/events", "kiosk-a", "bad", b"x")],
            states=[_state("kiosk-a")],
        )

    assert hub_store.stats() == before
    assert hub_store.event_keys("kiosk-a") == [(epoch, 1)]
    # The caller retries: the same data without the bad row then goes in completely.
    hub_store.commit(
        events=[_event("kiosk-a", epoch, 2)],
        dead_letters=[DeadLetter("antoan/v1/kiosk/kiosk-a/events", "kiosk-a", "bad", b"x")],
        states=[_state("kiosk-a")],
    )
    stats = hub_store.stats()
    assert (stats["events_stored"], stats["dead_letters"], len(stats["kiosks"])) == (2, 1, 1)


def test_stats_reports_counts_and_kiosks(hub_store):
    epoch = _epoch()
    hub_store.commit(
        events=[_event("kiosk-a", epoch, seq) for seq in range(1, 4)],
        dead_letters=[DeadLetter("t", None, "r", b"")],
        states=[_state("kiosk-a")],
    )
    stats = hub_store.stats()
    assert stats["events_stored"] == 3
    assert stats["dead_letters"] == 1
    assert [k["kiosk_id"] for k in stats["kiosks"]] == ["kiosk-a"]


def test_in_memory_sqlite_is_one_database_for_every_thread():
    engine = make_engine("sqlite://")
    try:
        migrate(engine)
        migrate(engine)
        store = HubStore(engine)
        store.commit(events=[_event("kiosk-a", _epoch(), 1)])
        counts: list[int] = []
        thread = threading.Thread(target=lambda: counts.append(store.count_events()))
        thread.start()
        thread.join(timeout=30)
        assert counts == [1]
    finally:
        engine.dispose()
