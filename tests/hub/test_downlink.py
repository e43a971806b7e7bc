"""The bridge publishes the hub's trust and status lists, retained, and republishes them when they change."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from hub.broker_bridge.downlink import ListPublisher
from hub.config import PassSettings
from hub.keys import KeyRing
from hub.passes import issue_pass, set_status
from kiosk.lists import DownlinkLists
from kiosk.verdict import judge
from protocol import topics
from protocol.healthpass import StatusList, TrustList
from protocol.settings import MqttSettings, mqtt_client
from tests.helpers import Child, wait_for, write_toml
from tests.integration.harness import start_kiosk

pytestmark = pytest.mark.integration

SETTINGS = PassSettings()


class Listener:
    """A kiosk-side subscriber to the broadcast topics that keeps every message it gets."""

    def __init__(self, mqtt: MqttSettings, client_id: str):
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._client = mqtt_client(mqtt, client_id=client_id)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.connect(mqtt.host, mqtt.port, keepalive=mqtt.keepalive_s)
        self._client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe([(topics.BROADCAST_TRUST, 1), (topics.BROADCAST_STATUS, 1)])

    def _on_message(self, client, userdata, message):
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def latest(self, topic: str) -> tuple[bytes, bool] | None:
        with self._lock:
            found = [(payload, retain) for t, payload, retain in self.messages if t == topic]
        return found[-1] if found else None

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def _issue(engine, keyring: KeyRing, name: str):
    now = datetime.now(UTC)
    with engine.begin() as conn:
        return issue_pass(
            conn,
            declaration_id=1,
            kind="ncovi",
            full_name=name,
            birth_year=1990,
            colour="green",
            keyring=keyring,
            settings=SETTINGS,
            now=now,
        )


def test_the_bridge_publishes_retained_lists_for_late_kiosks_and_follows_status_changes(
    tmp_path, mosquitto, mqtt_settings, db_url, hub_engine
):
    hub_conf = write_toml(
        tmp_path / "hub.toml",
        {
            "database": {"url": db_url},
            "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "keepalive_s": 5},
        },
    )
    bridge = Child(
        ["-m", "hub", "--config", str(hub_conf), "bridge"], log_path=tmp_path / "bridge.log"
    ).start()
    listeners: list[Listener] = []
    try:
        wait_for(
            lambda: (
                "trust list v1 published" in bridge.log_text()
                and "status list v0 published" in bridge.log_text()
            ),
            what=f"the bridge to publish the lists (log: {tmp_path / 'bridge.log'})",
        )
        keyring = KeyRing(hub_engine, SETTINGS)
        (key,) = keyring.list_keys()  # the bridge made the hub's first key at start-up

        # A kiosk that connects after the publication gets both lists from the broker.
        late = Listener(mqtt_settings, "kiosk-late")
        listeners.append(late)
        trust_msg = wait_for(lambda: late.latest(topics.BROADCAST_TRUST), what="the retained trust list")
        status_msg = wait_for(lambda: late.latest(topics.BROADCAST_STATUS), what="the retained status list")
        assert trust_msg[1] and status_msg[1], "both lists must arrive as retained messages"
        trust = TrustList.from_json(trust_msg[0])
        assert list(trust.keys) == [bytes.fromhex(key.kid)] and trust.version == 1
        assert StatusList.from_json(status_msg[0]).version == 0
        lists = DownlinkLists(tmp_path / "kiosk-lists")
        assert lists.handle(topics.BROADCAST_TRUST, trust_msg[0])
        assert lists.handle(topics.BROADCAST_STATUS, status_msg[0])

        issued = _issue(hub_engine, keyring, "Phạm Minh Khôi")
        now = datetime.now(UTC)
        verdict = judge(
            issued.qr_text.encode(),
            trust=lists.trust,
            status=lists.status,
            hub_public_key=None,
            direction="in",
            now=now,
        )
        assert verdict.colour == "green"

        with hub_engine.begin() as conn:
            set_status(conn, issued.pass_id, "red", "case confirmed", now)

        def flagged():
            latest = late.latest(topics.BROADCAST_STATUS)
            status = StatusList.from_json(latest[0])
            return status if status.colour_for(issued.pass_id) is not None else None

        status = wait_for(flagged, what="a new status list after set_status")
        assert status.version >= 1
        assert lists.handle(topics.BROADCAST_STATUS, late.latest(topics.BROADCAST_STATUS)[0])
        verdict = judge(
            issued.qr_text.encode(),
            trust=lists.trust,
            status=lists.status,
            hub_public_key=None,
            direction="in",
            now=now,
        )
        assert (verdict.colour, verdict.code) == ("red", "flagged")

        # And the broker now keeps the new list for the next kiosk.
        later = Listener(mqtt_settings, "kiosk-later")
        listeners.append(later)
        payload, retained = wait_for(
            lambda: later.latest(topics.BROADCAST_STATUS), what="the new retained list"
        )
        assert retained and StatusList.from_json(payload).colour_for(issued.pass_id) == "red"
    finally:
        for listener in listeners:
            listener.stop()
        assert bridge.terminate() == 0, bridge.log_text()


def test_a_kiosk_app_follows_a_key_rotation_through_the_publisher(tmp_path, mqtt_settings, hub_engine):
    keyring = KeyRing(hub_engine, SETTINGS)
    publisher = ListPublisher(
        engine=hub_engine,
        keyring=keyring,
        mqtt_settings=mqtt_settings,
        client_id="bridge-lists-test",
        poll_interval_s=0.2,
    )
    publisher.start()
    kiosk = None
    try:
        wait_for(lambda: publisher.published.get("trust") == 1, what="the first trust list")
        kiosk = start_kiosk(tmp_path, mqtt_settings)
        wait_for(lambda: kiosk.lists.trust is not None and kiosk.lists.status is not None, what="the lists")
        before = _issue(hub_engine, keyring, "Nguyễn Thị Ánh")
        assert kiosk.handle_scan(before.qr_text.encode()).colour == "green"

        keyring.rotate(datetime.now(UTC))
        after = _issue(hub_engine, keyring, "Trần Văn Đức")
        assert after.kid != before.kid
        wait_for(lambda: kiosk.lists.trust.version == 2, what="the kiosk to receive the rotated trust list")
        assert kiosk.handle_scan(after.qr_text.encode()).colour == "green"
        assert kiosk.handle_scan(before.qr_text.encode()).colour == "green"
    finally:
        if kiosk is not None:
            kiosk.stop()
        publisher.stop()
