"""The kiosk outbox: durable before return, ordered, never reuses numbers, never drops unacked events."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import datetime

import pytest

from kiosk.outbox import Outbox, OutboxError
from protocol.messages import MAX_EVENT_BODY_BYTES, parse_batch
from tests.helpers import ROOT


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    yield box
    box.close()


def test_the_file_runs_in_wal_with_full_sync(outbox):
    conn = outbox._db.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_epoch_is_kept_with_the_file_and_new_for_a_new_file(tmp_path, outbox):
    again = Outbox(tmp_path / "outbox.db")
    other = Outbox(tmp_path / "other.db")
    try:
        assert again.epoch == outbox.epoch
        assert other.epoch != outbox.epoch
        assert len(outbox.epoch) == 32
    finally:
        again.close()
        other.close()


def test_append_returns_increasing_seqs_and_keeps_vietnamese_text(outbox):
    first = outbox.append("check_in", {"name": "Trần Văn Đức"})
    second = outbox.append("check_out", {"name": "Lê Thị Hương"})
    assert second.seq == first.seq + 1
    assert first.device_time.tzinfo is not None
    pending = outbox.pending(after_seq=0, limit=10, max_bytes=10_000)
    assert [p.seq for p in pending] == [first.seq, second.seq]
    assert "Trần Văn Đức" in pending[0].wire


def test_seq_is_never_reused_after_the_newest_rows_are_pruned(outbox):
    rows = [outbox.append("check_in", {"i": i}) for i in range(3)]
    outbox.mark_acked([(1, 3)])
    assert outbox.prune_acked(older_than_s=-1) == 3
    assert outbox.append("check_in", {}).seq == rows[-1].seq + 1


def test_prune_never_deletes_unacked_events(outbox):
    for i in range(10):
        outbox.append("check_in", {"i": i})
    outbox.mark_acked([(1, 4)])
    assert outbox.prune_acked(older_than_s=-1) == 4
    assert outbox.all_seqs() == list(range(5, 11))
    assert outbox.depth() == 6


def test_mark_acked_counts_only_newly_acked_rows(outbox):
    for i in range(5):
        outbox.append("check_in", {"i": i})
    assert outbox.mark_acked([(1, 3)]) == 3
    assert outbox.mark_acked([(2, 5), (9, 12)]) == 2
    assert outbox.depth() == 0
    assert outbox.oldest_unacked_age() is None


def test_pending_respects_cursor_limit_and_byte_budget(outbox):
    for i in range(20):
        outbox.append("check_in", {"pad": "x" * 100, "i": i})
    assert [p.seq for p in outbox.pending(after_seq=5, limit=3, max_bytes=10**6)] == [6, 7, 8]
    small = outbox.pending(after_seq=0, limit=20, max_bytes=600)
    assert 1 <= len(small) < 20
    assert sum(len(p.wire) + 1 for p in small) <= 600


def test_pending_events_form_a_valid_batch(outbox):
    outbox.append("check_in", {"a": [1, 2, {"b": None}]})
    from protocol.messages import batch_payload

    batch = parse_batch(
        batch_payload(
            "kiosk-001",
            outbox.epoch,
            [p.wire for p in outbox.pending(after_seq=0, limit=10, max_bytes=10**6)],
        )
    )
    assert batch.events[0].body == {"a": [1, 2, {"b": None}]}


@pytest.mark.parametrize(
    ("kind", "body", "message"),
    [
        ("check_in", {"blob": "x" * (MAX_EVENT_BODY_BYTES + 1)}, "larger than"),
        ("check_in", {"when": datetime.now()}, "not JSON"),
        ("check_in", {"nan": float("nan")}, "not JSON"),
    ],
)
def test_bad_events_are_refused_and_nothing_is_stored(outbox, kind, body, message):
    with pytest.raises(OutboxError, match=message):
        outbox.append(kind, body)
    assert outbox.all_seqs() == []


def test_unknown_kind_is_refused(outbox):
    with pytest.raises(ValueError):
        outbox.append("teleport", {})


def test_naive_device_time_is_refused(outbox):
    with pytest.raises(OutboxError, match="time zone"):
        outbox.append("check_in", {}, device_time=datetime(2026, 1, 1))


def test_a_file_from_a_newer_version_is_refused_with_advice(tmp_path):
    path = tmp_path / "newer.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(OutboxError, match="upgrade"):
        Outbox(path)


def test_every_append_that_returned_survives_kill_9(tmp_path):
    """A writer prints each seq once append() returns; kill -9 it mid-stream; each printed seq is on disk."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from kiosk.outbox import Outbox
        box = Outbox({str(tmp_path / "k.db")!r})
        for i in range(100000):
            print(box.append("check_in", {{"i": i}}).seq, flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    reported = []
    for line in proc.stdout:
        reported.append(int(line))
        if len(reported) == 300:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    proc.stdout.close()
    box = Outbox(tmp_path / "k.db")
    try:
        stored = set(box.all_seqs())
    finally:
        box.close()
    assert set(reported) <= stored
    assert stored == set(range(1, len(stored) + 1))
