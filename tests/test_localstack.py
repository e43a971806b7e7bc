"""``./run demo`` end to end on the secured broker: the kiosk enrols, its check-ins reach the hub, the
broker refuses clients without a certificate, a second run continues with the same CA and identity."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from protocol.settings import MqttSettings, TlsSettings, probe_broker
from provisioning.broker import free_port
from tests.helpers import ROOT, wait_for

pytestmark = pytest.mark.integration

KIOSK = "kiosk-demo-001"


def _stored_seqs(root: Path) -> list[int]:
    engine = create_engine(f"sqlite:///{root / 'hub.db'}")
    try:
        with engine.connect() as conn:
            return [
                r[0] for r in conn.execute(text("SELECT seq FROM events WHERE kiosk_id = :k"), {"k": KIOSK})
            ]
    except OperationalError:  # not migrated yet
        return []
    finally:
        engine.dispose()


def _demo_f1(out: Path) -> int:
    """The latest F1 count the demo printed for its case (0 before it printed one)."""
    lines = [x for x in out.read_text().splitlines() if x.startswith("==> tracing: case")]
    return int(lines[-1].split("(F0): ")[1].split(" F1")[0]) if lines else 0


def test_the_secured_demo_enrols_syncs_refuses_strangers_and_continues(tmp_path):
    root = tmp_path / "demo"
    args = [
        sys.executable,
        "-m",
        "provisioning.localstack",
        "--root",
        str(root),
        "--rate",
        "20",
        "--web-port",
        str(free_port()),
        "--mqtt-port",
        str(free_port()),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "first-run.txt"
    with out.open("w") as sink:
        demo = subprocess.Popen(
            [*args, "--duration", "300"], cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, env=env
        )
    try:
        wait_for(
            lambda: "running locally" in out.read_text() or demo.poll() is not None,
            timeout_s=120,
            what="the demo to start",
        )
        assert demo.poll() is None, out.read_text()
        wait_for(lambda: _stored_seqs(root), timeout_s=60, what="kiosk events at the hub")
        # A green verdict needs the trust list, which the bridge's list publisher (its own identity) sent.
        wait_for(lambda: "kiosk: green" in out.read_text(), timeout_s=60, what="a green verdict")
        # The sample pass the hub listed yellow (an F1) shows yellow: the status shards reached the kiosk.
        wait_for(lambda: "kiosk: yellow (flagged)" in out.read_text(), timeout_s=60, what="a flagged verdict")
        # The sample F0's check-in reached the hub: the demo opens a case and finds the other visitors.
        # The case is looked at again as check-ins arrive, as an official would press "look again".
        wait_for(lambda: _demo_f1(out) >= 1, timeout_s=90, what="an F1 in the demo case")
        case_lines = [x for x in out.read_text().splitlines() if x.startswith("==> tracing: case")]
        # Where the F0 was is flagged for the safety map (a venue, not "none yet").
        assert "flagged on the safety map: none yet" not in case_lines[-1], case_lines

        hub = tomllib.loads((root / "hub.toml").read_text())
        port = hub["mqtt"]["port"]
        ca_file = Path(hub["mqtt"]["tls"]["ca_file"])
        plain = probe_broker(MqttSettings(host="127.0.0.1", port=port))
        no_cert = probe_broker(MqttSettings(host="127.0.0.1", port=port, tls=TlsSettings(ca_file=ca_file)))
        # The same probe with a certificate from the demo CA gets in, so the refusals above are real.
        web_identity = TlsSettings(**hub["web"]["broker_probe_tls"])
        with_cert = probe_broker(MqttSettings(host="127.0.0.1", port=port, tls=web_identity))
        assert plain is not None, "the demo broker accepted a plain-TCP client"
        assert no_cert is not None, "the demo broker accepted a TLS client without a certificate"
        assert with_cert is None
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGTERM)
        demo.wait(60)
    first = out.read_text()
    assert demo.returncode == 0, first
    assert "hub CA made" in first
    assert f"enrolled as {KIOSK}" in first
    assert "https://127.0.0.1:" in first and "http://127.0.0.1:" not in first
    assert "==> stopped" in first
    kiosk_conf = tomllib.loads((root / "kiosk.toml").read_text())
    assert Path(kiosk_conf["mqtt"]["tls"]["cert_file"]).parts[-2:] == ("kiosk-identity", "kiosk.pem")

    # A second run continues on the same data: same CA, no new enrolment.
    done = subprocess.run(
        [*args, "--duration", "6"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "hub CA kept" in done.stdout
    assert "already enrolled" in done.stdout and "enrols:" not in done.stdout
    assert "==> stopped" in done.stdout

    stored = _stored_seqs(root)
    engine = create_engine(f"sqlite:///{root / 'hub.db'}")
    with engine.connect() as conn:
        dead = conn.execute(text("SELECT count(*) FROM dead_letters")).scalar()
        # ID-card check-ins were opened with the hub's own key and linked to people by a keyed hash.
        card_people = conn.execute(
            text(
                "SELECT count(DISTINCT v.person_id) FROM visits v JOIN persons p ON p.id = v.person_id "
                "LEFT JOIN declaration_persons d ON d.person_id = p.id "
                "WHERE p.person_key LIKE 'id:%' AND d.person_id IS NULL"
            )
        ).scalar()
    engine.dispose()
    with sqlite3.connect(root / "kiosk-outbox.db") as outbox:
        held = {r[0] for r in outbox.execute("SELECT seq FROM events")}
        acked = {r[0] for r in outbox.execute("SELECT seq FROM events WHERE acked_at IS NOT NULL")}
    assert len(stored) == len(set(stored)) > 0
    assert acked <= set(stored) <= held  # the kiosk only believes what the hub stored
    assert dead == 0
    assert card_people >= 2
