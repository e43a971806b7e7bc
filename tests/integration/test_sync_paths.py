"""Sync paths beyond the happy one: resend on ack timeout, foreign acks, last will, shared subscriptions.

All on the secured broker (TLS, a certificate per client, ACL).
"""

from __future__ import annotations

import pytest

from protocol import topics
from protocol.messages import Ack, encode
from protocol.settings import mqtt_client
from provisioning.pki import BRIDGE_IDENTITY, LISTS_IDENTITY
from tests.helpers import Child, wait_for
from tests.integration.harness import TEST_SYNC, assert_exactly_once, start_bridge, start_kiosk, write_config
from tests.tls_fixtures import SECOND_BRIDGE

pytestmark = pytest.mark.integration


def test_batches_sent_before_any_bridge_subscribed_are_resent_after_the_ack_timeout(
    tmp_path, identities, hub_store
):
    kiosk = start_kiosk(tmp_path, identities("kiosk-001"))
    bridge = None
    try:
        wait_for(kiosk.sync.connected_event.is_set, what="the kiosk to connect")
        for i in range(30):
            kiosk.record("check_in", {"i": i})
        # Nobody subscribes yet, so the broker drops these batches: only a resend can deliver them.
        wait_for(lambda: kiosk.sync.stats.events_sent >= 30, what="the batches to go out")
        bridge = start_bridge(hub_store, identities(BRIDGE_IDENTITY))
        wait_for(lambda: kiosk.outbox.depth() == 0, what="the resend after the ack timeout")
        assert kiosk.sync.stats.resends >= 1
        assert_exactly_once(hub_store, "kiosk-001", kiosk.outbox.epoch, list(range(1, 31)))
    finally:
        kiosk.stop()
        if bridge:
            bridge.stop()


def test_an_ack_for_another_epoch_or_a_malformed_ack_marks_nothing(tmp_path, identities):
    kiosk = start_kiosk(tmp_path, identities("kiosk-001"))
    # Only a hub service may write a kiosk's ack topic (the ACL refuses anyone else, see
    # tests/provisioning/test_broker_security.py), so the wrong acks come as from a faulty bridge.
    forger_settings = identities(BRIDGE_IDENTITY)
    forger = mqtt_client(forger_settings, client_id=BRIDGE_IDENTITY)
    forger.connect(forger_settings.host, forger_settings.port)
    forger.loop_start()
    try:
        wait_for(kiosk.sync.connected_event.is_set, what="the kiosk to connect")
        for i in range(5):
            kiosk.record("check_in", {"i": i})
        wait_for(lambda: kiosk.sync.stats.events_sent >= 5, what="the batches to go out")
        forged = encode(Ack(epoch="0" * 32, ranges=[(1, 10**6)]))
        forger.publish(topics.ack("kiosk-001"), forged, qos=1).wait_for_publish(5)
        forger.publish(topics.ack("kiosk-001"), b"{garbage", qos=1).wait_for_publish(5)
        real = encode(Ack(epoch=kiosk.outbox.epoch, ranges=[(1, 2)]))
        forger.publish(topics.ack("kiosk-001"), real, qos=1).wait_for_publish(5)
        # The real ack is handled after the forged ones (one worker, in order): wait for it, then count.
        wait_for(lambda: kiosk.outbox.depth() == 3, what="the genuine ack")
        assert kiosk.sync.stats.events_acked == 2
    finally:
        forger.loop_stop()
        forger.disconnect()
        kiosk.stop()


def test_a_killed_kiosk_shows_offline_at_the_hub_through_its_last_will(tmp_path, identities, hub_store):
    bridge = start_bridge(hub_store, identities(BRIDGE_IDENTITY))
    conf = write_config(
        tmp_path / "kiosk.toml",
        {
            "kiosk_id": "kiosk-001",
            "venue_id": "venue-001",
            "mqtt": identities.toml("kiosk-001"),
            "outbox": {"path": str(tmp_path / "outbox.db")},
            "sync": TEST_SYNC,
            "gpio": {"pin_factory": "none"},
        },
    )
    kiosk = Child(["-m", "kiosk", "--config", str(conf), "run"], log_path=tmp_path / "kiosk.log").start()

    def status():
        rows = [k for k in hub_store.kiosks() if k["kiosk_id"] == "kiosk-001"]
        return rows[0]["status"] if rows else None

    try:
        wait_for(lambda: status() == "online", what="the kiosk's online state")
        kiosk.kill9()
        # The broker publishes the will after 1.5 × keep-alive without traffic.
        wait_for(lambda: status() == "offline", timeout_s=30, what="the last will")
    finally:
        kiosk.terminate()
        bridge.stop()


def test_two_bridges_on_a_shared_subscription_store_everything_once(tmp_path, identities, hub_store):
    # Each bridge worker has an identity of its own: with one, the two would take each other over.
    bridges = [
        start_bridge(hub_store, identities(name), client_id=name, shared_group="ingest")
        for name in (BRIDGE_IDENTITY, SECOND_BRIDGE)
    ]
    kiosks = [
        start_kiosk(tmp_path, identities(f"kiosk-{n:03d}"), kiosk_id=f"kiosk-{n:03d}", batch_size=10)
        for n in range(1, 5)
    ]
    try:
        for i in range(100):
            for kiosk in kiosks:
                kiosk.record("check_in", {"i": i})
        for kiosk in kiosks:
            wait_for(lambda k=kiosk: k.outbox.depth() == 0, what=f"{kiosk.config.kiosk_id} to drain")
            assert_exactly_once(hub_store, kiosk.config.kiosk_id, kiosk.outbox.epoch, list(range(1, 101)))
        assert all(b.stats.messages > 0 for b in bridges), [b.stats for b in bridges]
    finally:
        for kiosk in kiosks:
            kiosk.stop()
        for bridge in bridges:
            bridge.stop()


def test_a_kiosk_that_connects_later_receives_the_retained_lists_and_reports_their_age(
    tmp_path, identities, hub_store
):
    from datetime import UTC, datetime, timedelta

    from protocol.healthpass import SigningKey, StatusList, TrustList

    now = datetime.now(UTC)
    key = SigningKey.generate("ES256")
    trust = TrustList(keys={key.kid: key.trusted(now, now + timedelta(days=1))}, version=4, issued_at=now)
    status = StatusList(version=9, issued_at=now, colours={})
    # The hub's list publisher, with its own service identity (the ACL lets it write the broadcasts).
    lists_settings = identities(LISTS_IDENTITY)
    hub = mqtt_client(lists_settings, client_id=LISTS_IDENTITY)
    hub.connect(lists_settings.host, lists_settings.port)
    hub.loop_start()
    hub.publish(topics.BROADCAST_TRUST, trust.to_json(), qos=1, retain=True).wait_for_publish(5)
    for shard in status.shards():
        hub.publish(topics.status_shard(shard.shard), shard.to_json(), qos=1, retain=True).wait_for_publish(5)
    hub.loop_stop()
    hub.disconnect()
    bridge = start_bridge(hub_store, identities(BRIDGE_IDENTITY))
    kiosk = start_kiosk(tmp_path, identities("kiosk-001"))
    try:
        wait_for(lambda: kiosk.lists.trust is not None and kiosk.lists.status.complete, what="retained lists")
        assert (kiosk.lists.trust.version, kiosk.lists.status.version) == (4, 9)

        def reported():
            rows = [k for k in hub_store.kiosks() if k["kiosk_id"] == "kiosk-001"]
            return rows and rows[0]["list_ages"].get("trust") is not None and rows[0]["list_ages"]

        ages = wait_for(reported, what="list ages in the kiosk's state")
        assert set(ages) == {"trust", "status"}
    finally:
        kiosk.stop()
        bridge.stop()
