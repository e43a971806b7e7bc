"""``./run demo`` end to end: the local stack starts, a kiosk's check-ins reach the hub, it stops cleanly."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

from provisioning.broker import free_port
from tests.helpers import ROOT

pytestmark = pytest.mark.integration


def test_the_demo_stack_records_syncs_and_stops_cleanly_twice(tmp_path):
    root = tmp_path / "demo"
    args = [
        sys.executable,
        "-m",
        "provisioning.localstack",
        "--root",
        str(root),
        "--rate",
        "20",
        "--duration",
        "6",
        "--web-port",
        str(free_port()),
        "--mqtt-port",
        str(free_port()),
    ]
    for _ in range(2):  # a second run continues on the same data
        done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "http://127.0.0.1:" in done.stdout
        assert "==> stopped" in done.stdout
    engine = create_engine(f"sqlite:///{root / 'hub.db'}")
    with engine.connect() as conn:
        stored = [
            r[0] for r in conn.execute(text("SELECT seq FROM events WHERE kiosk_id = 'kiosk-demo-001'"))
        ]
        dead = conn.execute(text("SELECT count(*) FROM dead_letters")).scalar()
    engine.dispose()
    with sqlite3.connect(root / "kiosk-outbox.db") as outbox:
        held = {r[0] for r in outbox.execute("SELECT seq FROM events")}
        acked = {r[0] for r in outbox.execute("SELECT seq FROM events WHERE acked_at IS NOT NULL")}
    assert len(stored) == len(set(stored)) > 0
    assert acked <= set(stored) <= held  # the kiosk only believes what the hub stored
    assert dead == 0
