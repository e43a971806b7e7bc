"""In-process kiosks and bridges wired to a test's own broker and database; configuration files for
kiosk and hub processes (with their ``[mqtt.tls]`` tables)."""

from __future__ import annotations

from pathlib import Path

from hub.broker_bridge.bridge import Bridge
from hub.config import BridgeSettings
from hub.db.store import HubStore
from kiosk.app import KioskApp
from kiosk.config import KioskConfig, OutboxSettings, SyncSettings
from kiosk.enrol import render_toml
from kiosk.feedback import GpioSettings
from protocol.settings import MqttSettings
from tests.helpers import wait_for

# Short timeouts so resend paths run within a test; production defaults are longer.
TEST_SYNC = {"ack_timeout_s": 3.0, "state_interval_s": 1.0, "linger_ms": 20}


def kiosk_config(tmp: Path, mqtt: MqttSettings, kiosk_id: str = "kiosk-001", **sync) -> KioskConfig:
    return KioskConfig(
        kiosk_id=kiosk_id,
        venue_id="venue-001",
        mqtt=mqtt,
        outbox=OutboxSettings(path=tmp / f"{kiosk_id}.db"),
        sync=SyncSettings(**{**TEST_SYNC, **sync}),
        gpio=GpioSettings(pin_factory="none"),
    )


def start_kiosk(tmp: Path, mqtt: MqttSettings, kiosk_id: str = "kiosk-001", **sync) -> KioskApp:
    app = KioskApp(kiosk_config(tmp, mqtt, kiosk_id, **sync))
    app.start()
    return app


def start_bridge(store: HubStore, mqtt: MqttSettings, **settings) -> Bridge:
    bridge = Bridge(store=store, mqtt_settings=mqtt, settings=BridgeSettings(**settings))
    bridge.start()
    wait_for(lambda: bridge.subscribed.is_set(), timeout_s=15, what="the bridge to subscribe")
    return bridge


def assert_exactly_once(store: HubStore, kiosk_id: str, epoch: str, seqs: list[int]) -> None:
    """Every recorded seq is stored, once, and nothing else is."""
    keys = store.event_keys(kiosk_id)
    assert len(keys) == len(set(keys)), "duplicates stored"
    assert sorted(s for e, s in keys if e == epoch) == sorted(seqs)
    assert store.count_events(kiosk_id) == len(seqs)


def write_config(path: Path, tree: dict) -> Path:
    """Write nested tables (``[mqtt]`` with ``[mqtt.tls]``, …) as a TOML configuration file."""
    path.write_text(render_toml(tree))
    return path
