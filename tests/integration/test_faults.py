"""Fault tests: kill -9 the kiosk, the broker or the bridge mid-stream, restart it, and count.

Every event the kiosk's outbox recorded before (and after) the kill must be in the hub exactly once.
The broker is the secured one (TLS, a certificate per client, ACL); a killed broker restarts with the
same configuration, certificates and port.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kiosk.outbox import Outbox
from provisioning.pki import BRIDGE_IDENTITY, LISTS_IDENTITY
from tests.helpers import Child, wait_for
from tests.integration.harness import TEST_SYNC, assert_exactly_once, start_bridge, write_config
from tests.tls_fixtures import Identities, secure_mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE = 150  # sample check-ins per second from the kiosk process


def _kiosk_conf(tmp: Path, identities: Identities, *, limit: int | None = None) -> Path:
    return write_config(
        tmp / "kiosk.toml",
        {
            "kiosk_id": "kiosk-001",
            "venue_id": "venue-001",
            "mqtt": identities.toml("kiosk-001"),
            "outbox": {"path": str(tmp / "outbox.db")},
            "sync": TEST_SYNC,
            "gpio": {"pin_factory": "none"},
            "sample": {"rate_per_s": RATE, "limit": limit},
        },
    )


def _kiosk(tmp: Path, conf: Path, *, samples: bool = True) -> Child:
    env = {} if samples else {"ANTOAN_KIOSK__SAMPLE__RATE_PER_S": "0"}
    return Child(["-m", "kiosk", "--config", str(conf), "run"], log_path=tmp / "kiosk.log", env=env).start()


def _outbox(tmp: Path) -> tuple[str, list[int], int]:
    """Epoch, every seq held and how many await an ack, read from the kiosk's file."""
    outbox = Outbox(tmp / "outbox.db")
    try:
        return outbox.epoch, outbox.all_seqs(), outbox.depth()
    finally:
        outbox.close()


def _held(tmp: Path) -> int:
    return len(_outbox(tmp)[1]) if (tmp / "outbox.db").exists() else 0


def test_kill9_kiosk_mid_stream_then_restart_delivers_everything_once(tmp_path, identities, hub_store):
    bridge = start_bridge(hub_store, identities(BRIDGE_IDENTITY))
    conf = _kiosk_conf(tmp_path, identities)
    kiosk = _kiosk(tmp_path, conf)
    try:
        wait_for(lambda: hub_store.count_events("kiosk-001") >= 150, what="the stream to arrive")
        kiosk.kill9()
        epoch, seqs, _ = _outbox(tmp_path)
        stored_at_kill = hub_store.count_events("kiosk-001")
        assert len(seqs) >= stored_at_kill
        kiosk = _kiosk(tmp_path, conf, samples=False)
        wait_for(
            lambda: hub_store.count_events("kiosk-001") == len(seqs), timeout_s=60, what="all recorded events"
        )
        assert_exactly_once(hub_store, "kiosk-001", epoch, seqs)
        wait_for(lambda: _outbox(tmp_path)[2] == 0, what="the restarted kiosk to see every ack")
    finally:
        kiosk.terminate()
        bridge.stop()


def test_kill9_broker_mid_stream_then_restart_delivers_everything_once(tmp_path, pki, hub_store):
    broker = secure_mosquitto(tmp_path / "broker", pki).start()
    identities = Identities(pki, broker.host, broker.port)
    bridge = start_bridge(hub_store, identities(BRIDGE_IDENTITY))
    total = 1500
    kiosk = _kiosk(tmp_path, _kiosk_conf(tmp_path, identities, limit=total))
    try:
        wait_for(lambda: hub_store.count_events("kiosk-001") >= 150, what="the stream to arrive")
        broker.kill()
        held_at_kill = _held(tmp_path)
        wait_for(
            lambda: _held(tmp_path) >= held_at_kill + 150, what="the kiosk to record while the broker is down"
        )
        # The same instance: its configuration, certificates, ACL and port are reused as they were.
        broker.start()
        wait_for(lambda: _held(tmp_path) == total, timeout_s=60, what="the kiosk to record all samples")
        wait_for(
            lambda: hub_store.count_events("kiosk-001") == total, timeout_s=60, what="all events in the hub"
        )
        epoch, seqs, _ = _outbox(tmp_path)
        assert_exactly_once(hub_store, "kiosk-001", epoch, seqs)
    finally:
        kiosk.terminate()
        bridge.stop()
        broker.stop()


def test_kill9_bridge_mid_batch_then_restart_delivers_everything_once(
    tmp_path, identities, db_url, hub_store
):
    hub_conf = write_config(
        tmp_path / "hub.toml",
        {
            "database": {"url": db_url},
            "mqtt": identities.toml(BRIDGE_IDENTITY),
            # The bridge process's list publisher is a second client: it needs its own identity.
            "bridge": {"lists_tls": identities.toml(LISTS_IDENTITY)["tls"]},
        },
    )

    def bridge_child() -> Child:
        return Child(
            ["-m", "hub", "--config", str(hub_conf), "bridge"], log_path=tmp_path / "bridge.log"
        ).start()

    total = 1500
    bridge = bridge_child()
    kiosk = _kiosk(tmp_path, _kiosk_conf(tmp_path, identities, limit=total))
    try:
        wait_for(lambda: hub_store.count_events("kiosk-001") >= 150, what="the stream to arrive")
        bridge.kill9()
        held_at_kill = _held(tmp_path)
        wait_for(
            lambda: _held(tmp_path) >= held_at_kill + 150, what="the kiosk to record while the bridge is down"
        )
        bridge = bridge_child()
        wait_for(lambda: _held(tmp_path) == total, timeout_s=60, what="the kiosk to record all samples")
        wait_for(
            lambda: hub_store.count_events("kiosk-001") == total,
            timeout_s=60,
            what=f"all events in the hub (bridge log: {tmp_path / 'bridge.log'})",
        )
        epoch, seqs, _ = _outbox(tmp_path)
        assert_exactly_once(hub_store, "kiosk-001", epoch, seqs)
    finally:
        kiosk.terminate()
        bridge.terminate()
