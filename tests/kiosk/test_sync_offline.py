"""Sync while the broker is unreachable: the worker sleeps instead of spinning."""

from __future__ import annotations

from kiosk.config import SyncSettings
from kiosk.outbox import Outbox
from kiosk.sync import _MAX_WAIT_S, Sync
from protocol.settings import MqttSettings


def test_an_offline_worker_waits_the_full_interval_even_with_a_state_due(tmp_path):
    """Regression: offline, the due state message made the wait 0 and the worker spun, starving scans."""
    outbox = Outbox(tmp_path / "o.db")
    clock = [1000.0]
    sync = Sync(
        outbox=outbox,
        kiosk_id="kiosk-001",
        mqtt_settings=MqttSettings(),
        settings=SyncSettings(),
        version="test",
        prune_acked_after_s=86400,
        monotonic=lambda: clock[0],
    )
    try:
        sync._next_prune = clock[0] + 3600
        assert sync._next_state <= clock[0]  # a state message is due, but there is no connection
        assert sync._wait_s() == _MAX_WAIT_S
        sync._connected = True
        assert sync._wait_s() == 0.0  # connected: send the state now
    finally:
        outbox.close()
