"""Rendering the secured broker's configuration and ACL, and the `broker-config` / `ca` commands."""

from __future__ import annotations

import getpass

import pytest
from click.testing import CliRunner

from protocol import topics
from provisioning.__main__ import main
from provisioning.acl import render_acl
from provisioning.broker import BrokerError, MosquittoProcess, free_port, render_secure_conf
from provisioning.pki import HubCA, PkiError
from tests.helpers import wait_for
from tests.provisioning.clients import TlsClient


def _conf(tmp_path, **kw) -> str:
    files = {k: tmp_path / k for k in ("ca_file", "cert_file", "key_file", "crl_file", "acl_file")}
    return render_secure_conf(port=8883, data_dir=tmp_path / "data", **files, **kw)


def test_the_secure_config_has_one_mutual_tls_listener_and_no_anonymous_access(tmp_path):
    text = _conf(tmp_path)
    assert text.count("\nlistener ") == 1
    for line in (
        "listener 8883 0.0.0.0",
        f"cafile {tmp_path / 'ca_file'}",
        f"crlfile {tmp_path / 'crl_file'}",
        f"acl_file {tmp_path / 'acl_file'}",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "allow_anonymous false",
    ):
        assert line in text.splitlines()
    assert "allow_anonymous true" not in text


def test_an_insecure_listener_is_added_on_loopback_only_when_asked(tmp_path):
    text = _conf(tmp_path, insecure_listener_port=1883)
    lines = text.splitlines()
    assert "listener 1883 127.0.0.1" in lines
    # Its anonymous access comes after its own listener line (per_listener_settings), not the TLS one.
    assert lines.index("allow_anonymous true") > lines.index("listener 1883 127.0.0.1")
    assert "per_listener_settings true" in lines
    with pytest.raises(BrokerError, match="port of its own"):
        _conf(tmp_path, insecure_listener_port=8883)


def test_the_acl_confines_kiosks_by_certificate_name_and_grants_the_bridge_its_topics():
    lines = render_acl().splitlines()
    for channel, access in (("events", "write"), ("state", "write"), ("ack", "read"), ("config", "read")):
        assert f"pattern {access} {topics.PREFIX}/kiosk/%u/{channel}" in lines
    assert f"pattern read {topics.PREFIX}/broadcast/#" in lines
    bridge = lines[lines.index("user antoan-bridge") :]
    assert f"topic read {topics.EVENTS_ALL}" in bridge and f"topic read {topics.STATE_ALL}" in bridge
    assert f"topic write {topics.PREFIX}/kiosk/+/ack" in bridge
    assert f"topic write {topics.PREFIX}/broadcast/#" in bridge
    # Nothing for everyone before the first user line except the per-kiosk patterns.
    assert not any(line.startswith("topic ") for line in lines[: lines.index("user antoan-bridge")])


def test_the_acl_accepts_only_service_names_for_service_rights():
    assert "user antoan-bridge-lists" in render_acl(services=["antoan-bridge", "antoan-bridge-lists"])
    with pytest.raises(PkiError, match="service name"):
        render_acl(services=["kiosk-001"])


def test_ca_init_and_show_print_the_fingerprint(tmp_path):
    runner = CliRunner()
    made = runner.invoke(main, ["ca", "init", "--ca-dir", str(tmp_path / "ca")], catch_exceptions=False)
    assert made.exit_code == 0
    fp = HubCA.open(tmp_path / "ca").fingerprint
    assert fp in made.output
    shown = runner.invoke(main, ["ca", "show", "--ca-dir", str(tmp_path / "ca")], catch_exceptions=False)
    assert fp in shown.output and "revoked:     0" in shown.output
    again = runner.invoke(main, ["ca", "init", "--ca-dir", str(tmp_path / "ca")])
    assert again.exit_code == 1 and "already exists" in again.output


def test_broker_config_tls_writes_the_files_and_says_what_it_wrote(tmp_path):
    HubCA.init(tmp_path / "ca")
    args = ["broker-config", "--tls", "--ca-dir", str(tmp_path / "ca"), "--out-dir", str(tmp_path / "out")]
    result = CliRunner().invoke(
        main, [*args, "--ip", "10.0.0.5", "--hostname", "hub.local"], catch_exceptions=False
    )
    assert result.exit_code == 0
    for name in ("mosquitto.conf", "acl", "server.pem", "server.key"):
        assert (tmp_path / "out" / name).exists()
        assert str(tmp_path / "out" / name) in result.output
    conf = (tmp_path / "out" / "mosquitto.conf").read_text()
    assert f"crlfile {(tmp_path / 'ca' / 'crl.pem').resolve()}" in conf
    assert "listener 8883 0.0.0.0" in conf
    rerun = CliRunner().invoke(main, args, catch_exceptions=False)
    assert "kept" in rerun.output  # the broker's certificate is not reissued on every run


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "choose one: --tls"),
        (["--tls", "--insecure"], "choose one"),
        (["--tls"], "--tls needs --ca-dir"),
        (["--tls", "--ca-dir", "{tmp}/none", "--out-dir", "{tmp}/out"], "no CA in"),
    ],
)
def test_broker_config_errors_are_one_clear_line(tmp_path, args, message):
    result = CliRunner().invoke(main, ["broker-config", *(a.format(tmp=tmp_path) for a in args)])
    assert result.exit_code == 1
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_mosquitto_starts_with_the_config_the_command_wrote_and_accepts_the_bridge(tmp_path):
    ca = HubCA.init(tmp_path / "ca")
    port = free_port()
    args = [
        "broker-config", "--tls", "--ca-dir", str(tmp_path / "ca"), "--out-dir", str(tmp_path / "out"),
        "--port", str(port), "--bind", "127.0.0.1", "--data-dir", str(tmp_path / "data"),
        # As root, mosquitto would drop to its own user, which cannot read the 0600 server key.
        "--broker-user", getpass.getuser(),
    ]  # fmt: skip
    assert CliRunner().invoke(main, args, catch_exceptions=False).exit_code == 0
    conf = (tmp_path / "out" / "mosquitto.conf").read_text()
    broker = MosquittoProcess(tmp_path / "broker", port=port, config=lambda _: conf).start()
    try:
        ca.issue_bridge_identity().write(tmp_path / "bridge.pem", tmp_path / "bridge.key")
        bridge = TlsClient(
            host="127.0.0.1",
            port=port,
            ca_file=ca.layout.ca_cert,
            cert_file=tmp_path / "bridge.pem",
            key_file=tmp_path / "bridge.key",
        ).start()
        wait_for(bridge.connected.is_set, timeout_s=10, what="the bridge to connect over TLS")
        bridge.stop()
    finally:
        broker.stop()


def test_service_cert_issues_once_keeps_a_current_one_and_replaces_another_cas(tmp_path):
    from cryptography import x509

    ca = HubCA.init(tmp_path / "ca")
    args = [
        "ca",
        "service-cert",
        "antoan-bridge",
        "--ca-dir",
        str(ca.layout.root),
        "--out-dir",
        str(tmp_path / "c"),
    ]
    made = CliRunner().invoke(main, args, catch_exceptions=False)
    assert made.exit_code == 0 and made.output.startswith("wrote ") and len(made.output.splitlines()) == 1
    cert_file, key_file = tmp_path / "c" / "antoan-bridge.pem", tmp_path / "c" / "antoan-bridge.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    first = cert_file.read_bytes()
    assert x509.load_pem_x509_certificate(first).subject.rfc4514_string() == "CN=antoan-bridge"
    kept = CliRunner().invoke(main, args, catch_exceptions=False)
    assert kept.output.startswith("kept ") and cert_file.read_bytes() == first
    due = CliRunner().invoke(main, [*args, "--renew-within-days", "400"], catch_exceptions=False)
    assert due.output.startswith("wrote ") and cert_file.read_bytes() != first
    HubCA.init(tmp_path / "other").issue_client("antoan-bridge").write(cert_file, key_file)
    replaced = CliRunner().invoke(main, args, catch_exceptions=False)
    assert replaced.output.startswith("wrote ")
    x509.load_pem_x509_certificate(cert_file.read_bytes()).verify_directly_issued_by(ca.cert)


def test_service_cert_refuses_a_kiosk_name(tmp_path):
    ca = HubCA.init(tmp_path / "ca")
    result = CliRunner().invoke(
        main, ["ca", "service-cert", "kiosk-001", "--ca-dir", str(ca.layout.root), "--out-dir", str(tmp_path)]
    )
    assert result.exit_code == 1 and "is not valid: use 'antoan-'" in result.output
    assert len(result.output.strip().splitlines()) == 1
