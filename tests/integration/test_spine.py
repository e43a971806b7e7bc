"""The spine end to end: kiosk outbox → real mosquitto (TLS, a certificate per client, ACL) → bridge →
hub database, exactly once."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from protocol import topics
from protocol.messages import batch_payload, event_json
from protocol.settings import MqttSettings, mqtt_client
from provisioning.broker import free_port
from provisioning.pki import BRIDGE_IDENTITY
from tests.helpers import wait_for
from tests.integration.harness import assert_exactly_once, start_bridge, start_kiosk
from tests.tls_fixtures import Identities, secure_mosquitto

pytestmark = pytest.mark.integration


def _sample(i: int) -> dict:
    return {"direction": "in", "subject": {"type": "pass", "pass_id": f"P{i}"}, "name_hint": "Nguyễn Thị Ánh"}


def test_round_trip_stores_every_event_once_and_empties_the_outbox(tmp_path, identities, hub_store):
    bridge = start_bridge(hub_store, identities(BRIDGE_IDENTITY))
    kiosk = start_kiosk(tmp_path, identities("kiosk-001"))
    try:
        for i in range(250):
            kiosk.record("check_in", _sample(i))
        wait_for(lambda: kiosk.outbox.depth() == 0, what="all events acked")
        assert_exactly_once(hub_store, "kiosk-001", kiosk.outbox.epoch, kiosk.outbox.all_seqs())
        stored = hub_store.stats()
        assert stored["events_stored"] == 250
        # Vietnamese text survives the trip.
        state = wait_for(
            lambda: [k for k in hub_store.kiosks() if k["kiosk_id"] == "kiosk-001"], what="state"
        )
        assert state[0]["status"] == "online"
    finally:
        kiosk.stop()
        bridge.stop()
    # A clean stop leaves the retained state "offline" for the hub.
    bridge = start_bridge(hub_store, identities(BRIDGE_IDENTITY))
    try:
        wait_for(
            lambda: [k for k in hub_store.kiosks() if k["status"] == "offline"], what="retained offline state"
        )
    finally:
        bridge.stop()


def _raw_client(settings: MqttSettings, client_id: str):
    client = mqtt_client(settings, client_id=client_id)
    acks: list[bytes] = []
    client.on_message = lambda c, u, m: acks.append(m.payload)
    client.connect(settings.host, settings.port)
    client.loop_start()
    return client, acks


#: Resent events keep their time, as a kiosk's outbox resends them (PostgreSQL's key holds it).
_T0 = datetime.now(UTC)


def _events(seqs, kind="check_in"):
    return [
        event_json(s, str(uuid.uuid4()), kind, (_T0 + timedelta(seconds=s)).isoformat(), json.dumps({"s": s}))
        for s in seqs
    ]


def test_duplicates_and_out_of_order_batches_are_stored_once(identities, hub_store):
    bridge = start_bridge(hub_store, identities(BRIDGE_IDENTITY))
    client, acks = _raw_client(identities("kiosk-raw"), "kiosk-raw")
    try:
        client.subscribe(topics.ack("kiosk-raw"), qos=1)
        epoch = uuid.uuid4().hex
        batches = [range(51, 101), range(1, 51), range(1, 51), range(26, 76), range(100, 121)]
        for seqs in batches:
            payload = batch_payload("kiosk-raw", epoch, _events(seqs))
            client.publish(topics.events("kiosk-raw"), payload, qos=1).wait_for_publish(5)
        wait_for(lambda: len(acks) == len(batches), what="an ack per batch")
        assert_exactly_once(hub_store, "kiosk-raw", epoch, list(range(1, 121)))
        acked = {tuple(r) for a in acks for r in json.loads(a)["ranges"]}
        assert acked == {(51, 100), (1, 50), (26, 75), (100, 120)}
    finally:
        client.loop_stop()
        client.disconnect()
        bridge.stop()


def test_events_recorded_while_the_broker_is_down_all_arrive_once(tmp_path, pki, hub_store):
    port = free_port()
    identities = Identities(pki, "127.0.0.1", port)
    kiosk = start_kiosk(tmp_path, identities("kiosk-001"))
    broker = None
    bridge = None
    try:
        for i in range(1000):
            kiosk.record("check_in", _sample(i))
        assert kiosk.outbox.depth() == 1000
        broker = secure_mosquitto(tmp_path / "broker", pki, port=port).start()
        bridge = start_bridge(hub_store, identities(BRIDGE_IDENTITY))
        wait_for(lambda: kiosk.outbox.depth() == 0, timeout_s=60, what="the backlog to drain")
        assert_exactly_once(hub_store, "kiosk-001", kiosk.outbox.epoch, list(range(1, 1001)))
    finally:
        kiosk.stop()
        if bridge:
            bridge.stop()
        if broker:
            broker.stop()


def test_bad_messages_go_to_dead_letters_and_the_bridge_keeps_going(identities, hub_store):
    bridge = start_bridge(hub_store, identities(BRIDGE_IDENTITY), max_payload_bytes=64 * 1024)
    # The broker lets kiosk-bad write only its own topic, so every bad message arrives on it.
    client, acks = _raw_client(identities("kiosk-bad"), "kiosk-bad")
    epoch = uuid.uuid4().hex
    try:
        client.subscribe(topics.ack("kiosk-bad"), qos=1)
        bad = [
            b"{not json",
            b"\xff\xfe\x00binary",
            json.dumps({"v": 1, "kiosk_id": "kiosk-bad", "epoch": epoch, "events": []}).encode(),
            json.dumps({"v": 2, "kiosk_id": "kiosk-bad", "epoch": epoch, "events": _events([1])}).encode(),
            batch_payload("kiosk-bad", epoch, _events([1], kind="teleport")),
            b"x" * (65 * 1024),
            batch_payload("kiosk-other", epoch, _events([1])),
        ]
        for payload in bad:
            client.publish(topics.events("kiosk-bad"), payload, qos=1).wait_for_publish(5)
        good = batch_payload("kiosk-bad", epoch, _events([1, 2, 3]))
        client.publish(topics.events("kiosk-bad"), good, qos=1).wait_for_publish(5)
        wait_for(lambda: hub_store.count_events("kiosk-bad") == 3, what="the good batch after the bad ones")
        dead = wait_for(lambda: len(hub_store.dead_letters()) == len(bad) and hub_store.dead_letters())
        reasons = " | ".join(d["reason"] for d in dead)
        for expected in ("malformed JSON", "events", "v:", "kind", "exceeds the limit", "claims kiosk"):
            assert expected in reasons
        assert all(d["kiosk_id"] == "kiosk-bad" for d in dead)
        assert hub_store.count_events("kiosk-other") == 0
        # Acks follow the commit; the bad messages came first, so an ack of theirs would precede this one.
        wait_for(lambda: acks, what="the good batch's ack")
        assert len(acks) == 1
    finally:
        client.loop_stop()
        client.disconnect()
        bridge.stop()
