"""The bridge publishes the hub's trust list and status-list shards, retained, and republishes them when they
change; a shard over the broker's limit is not sent."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

import pytest

from hub.broker_bridge.downlink import ListPublisher
from hub.config import PassSettings
from hub.keys import STATUS, KeyRing, list_versions_now
from hub.passes import issue_pass, set_status
from kiosk.lists import DownlinkLists
from kiosk.verdict import judge
from protocol import topics
from protocol.healthpass import CROCKFORD, StatusList, StatusShards, TrustList
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
        client.subscribe([(topics.BROADCAST_TRUST, 1), (topics.BROADCAST_STATUS_SHARDS, 1)])

    def _on_message(self, client, userdata, message):
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def latest(self, topic: str) -> tuple[bytes, bool] | None:
        with self._lock:
            found = [(payload, retain) for t, payload, retain in self.messages if t == topic]
        return found[-1] if found else None

    def shards(self, version: int | None = None) -> dict[str, tuple[bytes, bool]] | None:
        """The latest message of each of the 32 status shards, once all have one (at ``version`` if given)."""
        latest = {c: self.latest(topics.status_shard(c)) for c in CROCKFORD}
        if any(m is None for m in latest.values()):
            return None
        if version is not None and any(
            StatusList.from_json(m[0]).version != version for m in latest.values()
        ):
            return None
        return latest

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

        # A kiosk that connects after the publication gets the trust list and all 32 shards from the broker.
        late = Listener(mqtt_settings, "kiosk-late")
        listeners.append(late)
        trust_msg = wait_for(lambda: late.latest(topics.BROADCAST_TRUST), what="the retained trust list")
        first = wait_for(lambda: late.shards(), what="the 32 retained status shards")
        assert trust_msg[1] and all(retained for _, retained in first.values()), "lists must come retained"
        trust = TrustList.from_json(trust_msg[0])
        assert list(trust.keys) == [bytes.fromhex(key.kid)] and trust.version == 1
        assert {StatusList.from_json(payload).version for payload, _ in first.values()} == {0}
        lists = DownlinkLists(tmp_path / "kiosk-lists")
        assert lists.handle(topics.BROADCAST_TRUST, trust_msg[0])
        for symbol, (payload, _) in first.items():
            assert lists.handle(topics.status_shard(symbol), payload)
        assert lists.status.complete and lists.status.version == 0

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
        with hub_engine.connect() as conn:
            version = list_versions_now(conn)[STATUS]
        assert version >= 1

        # The version moved: all 32 shards are published again, and the pass is in its own shard only.
        moved = wait_for(lambda: late.shards(version), what=f"32 status shards at version {version}")
        listed = {c: StatusList.from_json(payload) for c, (payload, _) in moved.items()}
        assert {c for c, shard in listed.items() if len(shard)} == {issued.pass_id[0]}
        assert listed[issued.pass_id[0]].colour_for(issued.pass_id) == "red"
        for symbol, (payload, _) in moved.items():
            assert lists.handle(topics.status_shard(symbol), payload)
        assert lists.status.version == version
        verdict = judge(
            issued.qr_text.encode(),
            trust=lists.trust,
            status=lists.status,
            hub_public_key=None,
            direction="in",
            now=now,
        )
        assert (verdict.colour, verdict.code) == ("red", "flagged")

        # And the broker now keeps the new shards, retained, for the next kiosk.
        later = Listener(mqtt_settings, "kiosk-later")
        listeners.append(later)
        kept = wait_for(lambda: later.shards(version), what="the new retained shards")
        assert all(retained for _, retained in kept.values())
        held = StatusShards(StatusList.from_json(payload) for payload, _ in kept.values())
        assert held.complete and held.colour_for(issued.pass_id) == "red"
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
        wait_for(lambda: kiosk.lists.trust is not None and kiosk.lists.status.complete, what="the lists")
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


def test_a_shard_over_the_brokers_limit_is_not_sent_and_the_others_are(
    tmp_path, mqtt_settings, hub_engine, monkeypatch, caplog
):
    now = datetime.now(UTC)
    keyring = KeyRing(hub_engine, SETTINGS)
    publisher = ListPublisher(
        engine=hub_engine,
        keyring=keyring,
        mqtt_settings=mqtt_settings,
        client_id="bridge-lists-limit",
        poll_interval_s=0.2,
        clock=lambda: now,  # a fixed issue time, so the shards' sizes are known in advance
    )
    publisher.start()
    listener = None
    try:
        wait_for(lambda: publisher.published.get("status") == 0, what="the first status list")
        issued = _issue(hub_engine, keyring, "Lê Thị Hồng")
        symbol = issued.pass_id[0]
        # Room for an empty shard (even at a 3-digit version) but not for one entry (18 bytes more).
        monkeypatch.setattr(topics, "MAX_MESSAGE_BYTES", len(StatusList(999, now, shard="0").to_json()))
        caplog.set_level(logging.INFO, logger="hub.broker_bridge.downlink")
        with hub_engine.begin() as conn:
            set_status(conn, issued.pass_id, "yellow", "F1 of a case", now)
        with hub_engine.connect() as conn:
            version = list_versions_now(conn)[STATUS]

        wait_for(lambda: publisher.published.get("status") == version, what=f"status list v{version}")
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, errors
        assert topics.status_shard(symbol) in errors[0] and "(1 entries)" in errors[0]

        listener = Listener(mqtt_settings, "kiosk-limit")
        shards = wait_for(
            lambda: (
                (found := listener.shards())
                and sum(StatusList.from_json(p).version == version for p, _ in found.values()) == 31
                and found
            ),
            what="31 shards at the new version",
        )
        # The oversized shard was never sent: the broker still holds its previous, empty version.
        stale = StatusList.from_json(shards[symbol][0])
        assert (stale.version, len(stale)) == (0, 0)
    finally:
        if listener is not None:
            listener.stop()
        publisher.stop()
