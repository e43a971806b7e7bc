"""The secured broker, for real: mosquitto 2.0 with the generated TLS configuration and ACL (issue 5).

Every "nothing arrived" assertion follows a barrier: a later message on a path that is allowed and
that the broker would have delivered after the refused one, so the test never sleeps to prove absence.
"""

from __future__ import annotations

import pytest

from protocol import topics
from provisioning.broker import BrokerError, connect_once, free_port, revoke_kiosk
from provisioning.pki import BRIDGE_IDENTITY, HubCA
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(60)

NOT_AUTHORIZED = 0x87


def _online(client, what: str):
    wait_for(client.connected.is_set, timeout_s=10, what=what)
    return client


def _bridge(connect, *filters: str):
    bridge = _online(connect(BRIDGE_IDENTITY), "the bridge to connect")
    mids = [bridge.subscribe(f) for f in filters or (topics.EVENTS_ALL, topics.STATE_ALL)]
    wait_for(lambda: all(m in bridge.record.subacks for m in mids), timeout_s=10, what="the bridge's SUBACK")
    for mid in mids:
        assert not any(rc.is_failure for rc in bridge.record.subacks[mid])
    return bridge


def _puback(client, mid: int):
    return wait_for(lambda: client.record.pubacks.get(mid), timeout_s=10, what=f"PUBACK for mid {mid}")


def _refused(client) -> None:
    """The broker refused this client at TLS level: an error or a dropped link, and never a CONNACK."""
    wait_for(
        lambda: client.handshake_error is not None or client.record.disconnects,
        timeout_s=10,
        what="the broker to refuse the connection",
    )
    assert client.record.connacks == []


def test_secure_broker_starts_and_the_bridge_identity_connects(secure_broker, connect):
    conf = secure_broker.layout.conf.read_text()
    for line in (
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "allow_anonymous false",
    ):
        assert line in conf
    assert "crlfile " in conf and "acl_file " in conf
    _bridge(connect)


def test_a_kiosk_publishes_its_own_events_and_state_and_the_bridge_receives_them(connect):
    bridge = _bridge(connect, f"$share/bridge/{topics.EVENTS_ALL}", topics.STATE_ALL)
    kiosk = _online(connect("kiosk-a"), "kiosk-a to connect")
    assert _puback(kiosk, kiosk.publish(topics.events("kiosk-a"), b"batch-1")).value == 0
    assert _puback(kiosk, kiosk.publish(topics.state("kiosk-a"), b"online")).value == 0
    wait_for(lambda: len(bridge.messages()) == 2, timeout_s=10, what="the bridge to receive both")
    assert bridge.messages() == [(topics.events("kiosk-a"), b"batch-1"), (topics.state("kiosk-a"), b"online")]


def test_the_bridge_answers_a_kiosk_on_its_ack_config_and_broadcast_topics(connect):
    bridge = _bridge(connect)
    kiosk = _online(connect("kiosk-a"), "kiosk-a to connect")
    mids = [
        kiosk.subscribe(t) for t in (topics.ack("kiosk-a"), topics.config("kiosk-a"), topics.BROADCAST_TRUST)
    ]
    wait_for(lambda: all(m in kiosk.record.subacks for m in mids), timeout_s=10, what="kiosk SUBACKs")
    for topic in (topics.ack("kiosk-a"), topics.config("kiosk-a"), topics.BROADCAST_TRUST):
        assert _puback(bridge, bridge.publish(topic, b"from-hub")).value == 0
    wait_for(lambda: len(kiosk.messages()) == 3, timeout_s=10, what="kiosk-a to receive the hub's messages")


@pytest.mark.parametrize(
    "topic",
    [
        topics.events("kiosk-b"),  # another kiosk's events: forged check-ins
        topics.state("kiosk-b"),
        topics.ack("kiosk-a"),  # hub -> kiosk topics, even its own
        topics.config("kiosk-a"),
        topics.BROADCAST_TRUST,  # a forged trust list would let fake passes through
    ],
)
def test_a_kiosk_publishing_outside_its_own_topics_is_not_authorized_and_nothing_arrives(connect, topic):
    bridge = _bridge(connect, "antoan/#")
    kiosk = _online(connect("kiosk-a"), "kiosk-a to connect")
    # mosquitto 2.0 answers a denied QoS 1 publish with PUBACK 0x87 "Not authorized" (MQTT v5).
    assert _puback(kiosk, kiosk.publish(topic, b"forged")).value == NOT_AUTHORIZED
    # Barrier: the same connection's next, allowed message is delivered after the refused one would be.
    kiosk.publish(topics.events("kiosk-a"), b"barrier")
    wait_for(
        lambda: (topics.events("kiosk-a"), b"barrier") in bridge.messages(), timeout_s=10, what="barrier"
    )
    assert all(payload != b"forged" for _, payload in bridge.messages())


def test_a_kiosk_asking_for_another_kiosks_client_id_gets_its_own_identity(connect):
    bridge = _bridge(connect)
    kiosk_b = _online(connect("kiosk-b"), "kiosk-b to connect")
    kiosk_a = _online(connect("kiosk-a", client_id="kiosk-b"), "kiosk-a (asking to be kiosk-b) to connect")
    # Still itself: its own events pass, kiosk-b's are refused ...
    assert _puback(kiosk_a, kiosk_a.publish(topics.events("kiosk-a"), b"a")).value == 0
    assert _puback(kiosk_a, kiosk_a.publish(topics.events("kiosk-b"), b"as-b")).value == NOT_AUTHORIZED
    # ... and kiosk-b's session was not taken over: it was never disconnected and still publishes.
    assert _puback(kiosk_b, kiosk_b.publish(topics.events("kiosk-b"), b"b")).value == 0
    wait_for(lambda: len(bridge.messages()) == 2, timeout_s=10, what="both kiosks' events")
    assert sorted(bridge.messages()) == [(topics.events("kiosk-a"), b"a"), (topics.events("kiosk-b"), b"b")]
    assert kiosk_b.record.disconnects == [] and len(kiosk_b.record.connacks) == 1


def test_a_kiosk_subscribing_to_everything_receives_only_its_own_and_broadcast_topics(connect):
    bridge = _bridge(connect)
    kiosk_b = _online(connect("kiosk-b"), "kiosk-b to connect")
    spy = _online(connect("kiosk-a"), "kiosk-a to connect")
    mid = spy.subscribe("#")
    # mosquitto 2.0.11 grants the '#' subscription; the ACL then filters every delivery.
    wait_for(lambda: mid in spy.record.subacks, timeout_s=10, what="SUBACK for '#'")
    for topic in (topics.ack("kiosk-b"), topics.config("kiosk-b")):
        bridge.publish(topic, b"for-b")
    kiosk_b.publish(topics.events("kiosk-b"), b"b-events")
    wait_for(
        lambda: (topics.events("kiosk-b"), b"b-events") in bridge.messages(), timeout_s=10, what="b's event"
    )
    bridge.publish(topics.status_shard("0"), b"for-all")
    bridge.publish(topics.ack("kiosk-a"), b"barrier")  # published last, so delivered to the spy last
    wait_for(lambda: (topics.ack("kiosk-a"), b"barrier") in spy.messages(), timeout_s=10, what="barrier")
    assert spy.messages() == [(topics.status_shard("0"), b"for-all"), (topics.ack("kiosk-a"), b"barrier")]


def test_a_connection_without_a_client_certificate_is_refused(connect):
    _refused(connect(None))


def test_a_certificate_from_another_ca_is_refused(connect, tmp_path):
    stranger = HubCA.init(tmp_path / "other-ca").issue_client("kiosk-a", service=False)
    stranger.write(tmp_path / "stranger.pem", tmp_path / "stranger.key")
    _refused(connect(None, files=(tmp_path / "stranger.pem", tmp_path / "stranger.key")))


def test_a_revoked_certificate_is_refused_once_the_broker_reloads_its_crl(connect, pki, secure_broker):
    bridge = _bridge(connect)
    cert, key = pki.client_files("kiosk-a")
    pki.ca.revoke_name("kiosk-a", reason="key_compromise")
    secure_broker.reload()
    # SIGHUP is asynchronous: wait until the broker answers with the new CRL.
    wait_for(
        lambda: (
            connect_once(
                host=secure_broker.host,
                port=secure_broker.port,
                ca_file=pki.ca.layout.ca_cert,
                cert_file=cert,
                key_file=key,
                timeout_s=2,
            )
            is None
        ),
        timeout_s=10,
        what="the reloaded CRL to refuse kiosk-a",
    )
    revoked = _refused_and_return(connect(None, files=(cert, key)))
    revoked.publish(topics.events("kiosk-a"), b"revoked")
    barrier = _online(connect("kiosk-b"), "kiosk-b to connect")
    barrier.publish(topics.events("kiosk-b"), b"barrier")
    wait_for(lambda: bridge.messages(), timeout_s=10, what="kiosk-b's barrier")
    assert bridge.messages() == [(topics.events("kiosk-b"), b"barrier")]


def _refused_and_return(client):
    _refused(client)
    return client


def test_a_crl_reload_alone_keeps_a_live_session(connect, pki, secure_broker):
    """Measured on mosquitto 2.0.11: why revoke_kiosk must also drop the session."""
    bridge = _bridge(connect)
    kiosk = _online(connect("kiosk-a"), "kiosk-a to connect")
    pki.ca.revoke_name("kiosk-a")
    check_cert, check_key = pki.client_files("antoan-crl-check", service=True)
    pki.ca.revoke_name("antoan-crl-check")
    secure_broker.reload()
    wait_for(
        lambda: (
            connect_once(
                host=secure_broker.host,
                port=secure_broker.port,
                ca_file=pki.ca.layout.ca_cert,
                cert_file=check_cert,
                key_file=check_key,
                timeout_s=2,
            )
            is None
        ),
        timeout_s=10,
        what="the broker to load the new CRL",
    )
    assert _puback(kiosk, kiosk.publish(topics.events("kiosk-a"), b"still-here")).value == 0
    wait_for(lambda: bridge.messages(), timeout_s=10, what="the revoked kiosk's message")
    assert kiosk.record.disconnects == []


def test_revoking_a_connected_kiosk_drops_it_and_nothing_it_sends_afterwards_arrives(
    connect, pki, secure_broker
):
    bridge = _bridge(connect)
    # Like the real kiosk: persistent session, paho reconnecting by itself.
    kiosk = _online(connect("kiosk-a", clean_start=False, session_expiry_s=3600), "kiosk-a to connect")
    assert _puback(kiosk, kiosk.publish(topics.events("kiosk-a"), b"before")).value == 0
    wait_for(lambda: bridge.messages(), timeout_s=10, what="the event sent before revocation")

    serials = revoke_kiosk(
        pki.ca, "kiosk-a", host=secure_broker.host, port=secure_broker.port, reload=secure_broker.reload
    )

    assert serials and all(pki.ca.is_revoked(s) for s in serials)
    wait_for(lambda: not kiosk.connected.is_set() and kiosk.record.disconnects, timeout_s=10, what="the drop")
    kiosk.publish(topics.events("kiosk-a"), b"after")
    # paho retries every second; wait for a refused retry, so "after" has had its chance to leak.
    wait_for(lambda: len(kiosk.record.disconnects) >= 2, timeout_s=15, what="a refused reconnection")
    assert len(kiosk.record.connacks) == 1
    other = _online(connect("kiosk-b"), "kiosk-b to connect")
    other.publish(topics.events("kiosk-b"), b"barrier")
    wait_for(lambda: len(bridge.messages()) == 2, timeout_s=10, what="kiosk-b's barrier")
    assert bridge.messages() == [
        (topics.events("kiosk-a"), b"before"),
        (topics.events("kiosk-b"), b"barrier"),
    ]


def test_revoking_a_kiosk_leaves_the_other_kiosks_connected(connect, pki, secure_broker):
    _bridge(connect)
    kiosk_b = _online(connect("kiosk-b"), "kiosk-b to connect")
    _online(connect("kiosk-a"), "kiosk-a to connect")
    revoke_kiosk(
        pki.ca, "kiosk-a", host=secure_broker.host, port=secure_broker.port, reload=secure_broker.reload
    )
    assert _puback(kiosk_b, kiosk_b.publish(topics.events("kiosk-b"), b"b")).value == 0
    assert kiosk_b.record.disconnects == []
    assert not pki.ca.is_revoked(pki.ca.issued(name="kiosk-b")[0].serial_number)


def test_the_revoke_command_cuts_a_connected_kiosk_off(connect, pki, secure_broker, tmp_path):
    from click.testing import CliRunner

    from provisioning.__main__ import main

    kiosk = _online(connect("kiosk-a"), "kiosk-a to connect")
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text(f"{secure_broker.proc.pid}\n")
    args = ["revoke", "kiosk-a", "--ca-dir", str(pki.ca.layout.root), "--reason", "key-compromise"]
    args += ["--broker-port", str(secure_broker.port), "--broker-pid-file", str(pid_file)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "revoked kiosk-a" in result.output
    wait_for(lambda: not kiosk.connected.is_set() and kiosk.record.disconnects, timeout_s=10, what="the drop")


def test_the_revoke_command_explains_what_is_missing(pki, tmp_path):
    from click.testing import CliRunner

    from provisioning.__main__ import main

    base = ["revoke", "kiosk-a", "--ca-dir", str(pki.ca.layout.root)]
    no_reload = CliRunner().invoke(main, base)
    assert no_reload.exit_code == 1 and "--broker-pid-file" in no_reload.output
    unknown = CliRunner().invoke(main, [*base, "--reload-command", "true"])
    assert unknown.exit_code == 1 and "never issued a certificate to 'kiosk-a'" in unknown.output
    assert len(unknown.output.strip().splitlines()) == 1


def test_two_clients_with_one_certificate_take_over_each_other_so_each_hub_client_needs_its_own(connect, pki):
    """The client id is the CN: the bridge's list publisher (antoan-bridge-lists) cannot share its cert."""
    files = pki.client_files(BRIDGE_IDENTITY, service=True)
    first = _online(connect(None, files=files, client_id="antoan-bridge"), "the first bridge client")
    _online(connect(None, files=files, client_id="antoan-bridge-lists"), "the second, same certificate")
    wait_for(lambda: first.record.disconnects, timeout_s=10, what="the first client to be taken over")
    lists = _online(connect("antoan-bridge-lists", service=True), "the list publisher's own identity")
    # 0x10 "no matching subscribers" is a success: what matters is that it is not 0x87.
    assert not _puback(lists, lists.publish(topics.BROADCAST_TRUST, b"keys")).is_failure


def test_revoke_refuses_to_guess_when_the_broker_certificate_does_not_match_the_host(pki, secure_broker):
    cert, key = pki.client_files("kiosk-a")
    # The broker now presents a certificate for another name (SIGHUP reloads certificates too).
    root = secure_broker.layout.root
    pki.ca.issue_server_cert(dns_names=["broker.example"], ip_addresses=[]).write(
        root / "server.pem", root / "server.key"
    )
    secure_broker.reload()

    def mismatch_seen() -> bool:
        try:
            connect_once(
                host=secure_broker.host,
                port=secure_broker.port,
                ca_file=pki.ca.layout.ca_cert,
                cert_file=cert,
                key_file=key,
                timeout_s=2,
            )
        except BrokerError:
            return True
        return False

    wait_for(mismatch_seen, timeout_s=10, what="the broker to present the new certificate")
    with pytest.raises(BrokerError, match="did not prove its identity"):
        revoke_kiosk(
            pki.ca, "kiosk-a", host=secure_broker.host, port=secure_broker.port, reload=secure_broker.reload
        )


def test_revoke_says_so_when_the_broker_cannot_be_reached(pki):
    pki.client_files("kiosk-a")
    with pytest.raises(BrokerError, match="cannot reach the broker"):
        revoke_kiosk(pki.ca, "kiosk-a", host="127.0.0.1", port=free_port(), reload=lambda: None)
