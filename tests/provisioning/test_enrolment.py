"""Enrolment end to end: token → CSR over HTTPS (CA pinned) → certificate → a real kiosk process on the
TLS broker → events at the hub through a bridge with its own identity; renewal; revocation at the bridge."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from hub import devices
from hub.broker_bridge.bridge import REVOKED_REASON, Bridge
from hub.config import BridgeSettings
from hub.db import make_engine
from hub.devices import EnrolmentSettings
from hub.identity import HubIdentity
from kiosk import config as kiosk_config
from kiosk.__main__ import main as kiosk_cli
from kiosk.app import KioskApp
from protocol.enrolment import Bundle, parse_qr
from protocol.settings import MqttSettings, TlsSettings
from provisioning.broker import connect_once
from provisioning.pki import BRIDGE_IDENTITY
from tests.helpers import Child, wait_for, write_toml
from tests.integration.harness import TEST_SYNC
from tests.provisioning.hub_server import Hub, https_hub


@pytest.fixture
def hub(tmp_path, pki, secure_broker) -> Iterator[Hub]:
    """The hub web app over HTTPS (server certificate from the hub CA) on 127.0.0.1, in a thread."""
    with https_hub(tmp_path / "hub-web", pki, secure_broker) as running:
        yield running


def _bundle_dir(folder: Path, bundle: Bundle) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "enrol.json").write_text(json.dumps(bundle.to_json()))
    return folder


def _enrol(tmp_path: Path, *args: str, config: Path | None = None):
    config = config or tmp_path / "kiosk.toml"
    return CliRunner().invoke(
        kiosk_cli,
        ["--config", str(config), "enrol", "--identity-dir", str(tmp_path / "identity"), *args],
    )


def test_kiosk_enrols_over_https_syncs_renews_and_is_refused_once_revoked(tmp_path, pki, secure_broker, hub):
    bundle = Bundle(
        hub_url=hub.url,
        ca_fingerprint=pki.ca.fingerprint,
        token=hub.token(),
        kiosk_id="kiosk-001",
        venue_id="school-01",
    )
    # The kiosk's own settings (what the SD image ships with); enrolment adds its identity.
    conf = write_toml(
        tmp_path / "kiosk.toml",
        {
            "outbox": {"path": str(tmp_path / "outbox.db")},
            "sync": TEST_SYNC,
            "sample": {"rate_per_s": 50.0, "limit": 5},
            "gpio": {"pin_factory": "none"},
        },
    )
    result = _enrol(tmp_path, "--bundle", str(_bundle_dir(tmp_path / "boot", bundle)))
    assert result.exit_code == 0, result.output
    assert "enrolled as kiosk-001 at Trường THCS Lê Lợi" in result.output
    identity = tmp_path / "identity"
    assert (identity / "kiosk.key").stat().st_mode & 0o777 == 0o600
    cfg = kiosk_config.load(conf)
    assert (cfg.kiosk_id, cfg.venue_id, cfg.mqtt.port) == ("kiosk-001", "school-01", secure_broker.port)
    assert cfg.sample.limit == 5  # the image's own settings are kept
    # ID cards will be sealed to this hub's own key, which the hub can open to link people for tracing.
    assert cfg.hub_public_key == HubIdentity(hub.engine).load().public_key_b64
    cert = x509.load_pem_x509_certificate(cfg.mqtt.tls.cert_file.read_bytes())
    assert cert.subject.rfc4514_string() == "CN=kiosk-001"

    # The same token again: spent.
    again = _enrol(tmp_path / "second", "--bundle", str(_bundle_dir(tmp_path / "boot", bundle)))
    assert again.exit_code == 1 and "already used" in again.output
    assert not (tmp_path / "second" / "identity").exists()

    # The bridge with its own identity; a real kiosk process with the written configuration.
    bridge_cert, bridge_key = pki.client_files(BRIDGE_IDENTITY, service=True)
    bridge_mqtt = MqttSettings(
        host=secure_broker.host,
        port=secure_broker.port,
        tls=TlsSettings(ca_file=pki.ca.layout.ca_cert, cert_file=bridge_cert, key_file=bridge_key),
    )
    bridge = Bridge(
        store=hub.store,
        mqtt_settings=bridge_mqtt,
        settings=BridgeSettings(client_id=BRIDGE_IDENTITY),
        revoked_refresh_s=0.2,
    )
    bridge.start()
    kiosk = Child(["-m", "kiosk", "--config", str(conf), "run"], log_path=tmp_path / "kiosk.log").start()
    app = None
    try:
        wait_for(bridge.subscribed.is_set, timeout_s=15, what="the bridge to subscribe")
        wait_for(lambda: hub.store.count_events("kiosk-001") == 5, timeout_s=60, what="the kiosk's events")
        wait_for(
            lambda: any(r.status == "online" for r in _fleet(hub)), what="the kiosk's retained online state"
        )
        kiosk.terminate()

        # Renewal over the existing identity; the old certificate keeps working until it expires.
        old_cert, old_key = cfg.mqtt.tls.cert_file.read_bytes(), cfg.mqtt.tls.key_file.read_bytes()
        renewed = CliRunner().invoke(kiosk_cli, ["--config", str(conf), "renew", "--force"])
        assert renewed.exit_code == 0, renewed.output
        assert "certificate renewed" in renewed.output
        assert cfg.mqtt.tls.cert_file.read_bytes() != old_cert
        prev_cert = cfg.mqtt.tls.cert_file.with_name("kiosk.pem.prev")
        prev_key = cfg.mqtt.tls.key_file.with_name("kiosk.key.prev")
        assert (prev_cert.read_bytes(), prev_key.read_bytes()) == (old_cert, old_key)
        for cert_file, key_file in ((prev_cert, prev_key), (cfg.mqtt.tls.cert_file, cfg.mqtt.tls.key_file)):
            answer = connect_once(
                host=secure_broker.host,
                port=secure_broker.port,
                ca_file=pki.ca.layout.ca_cert,
                cert_file=cert_file,
                key_file=key_file,
                timeout_s=5,
            )
            assert answer == 0, cert_file
        not_due = CliRunner().invoke(kiosk_cli, ["--config", str(conf), "renew", "--days", "1"])
        assert not_due.exit_code == 0 and "nothing to do" in not_due.output

        # Revoked at the hub, before the broker has reloaded its CRL: the kiosk still reaches the
        # broker, and the bridge dead-letters its events (and acks them, so they are not redelivered).
        app = KioskApp(cfg.model_copy(update={"sample": cfg.sample.model_copy(update={"rate_per_s": 0.0})}))
        app.start()
        wait_for(lambda: app.outbox.depth() == 0, timeout_s=30, what="every earlier event to be acked")
        now = dt.datetime.now(dt.UTC)
        devices.revoke(hub.engine, kiosk_id="kiosk-001", reason="stolen", ca=pki.ca, now=now)
        wait_for(
            lambda: "kiosk-001" in bridge.revoked_kiosks.current(), what="the bridge to see the revocation"
        )
        for i in range(3):
            app.record("check_in", {"after_revocation": i})
        wait_for(
            lambda: sum(d["reason"] == REVOKED_REASON for d in hub.store.dead_letters()) >= 1,
            timeout_s=30,
            what="a 'revoked kiosk' dead letter",
        )
        assert hub.store.count_events("kiosk-001") == 5
        assert app.outbox.depth() == 3  # never acknowledged by the hub
        (row,) = [r for r in _fleet(hub) if r.kiosk_id == "kiosk-001"]
        assert row.status == "revoked"

        # District IT finishes the job from the CLI: the broker reloads its CRL and the live session
        # of the revoked kiosk is closed (it cannot come back: its certificates are on the CRL).
        hub_conf = write_toml(tmp_path / "hub.toml", {"database": {"url": hub.db_url}})
        revoked = _provision(
            "kiosk",
            "revoke",
            "kiosk-001",
            "--hub-config",
            str(hub_conf),
            "--ca-dir",
            str(pki.ca.layout.root),
            "--broker-port",
            str(secure_broker.port),
            "--reload-command",
            f"kill -HUP {secure_broker.proc.pid}",
        )
        assert revoked.exit_code == 0, revoked.output
        assert "closing kiosk-001's session" in revoked.output
        wait_for(lambda: not app.sync.connected_event.is_set(), what="the revoked kiosk to be dropped")
    finally:
        if app is not None:
            app.stop()
        kiosk.terminate()
        bridge.stop()


def _fleet(hub: Hub):
    with hub.engine.connect() as conn:
        return devices.fleet(conn)


def test_a_wrong_ca_fingerprint_makes_the_kiosk_refuse_the_hub_and_write_nothing(tmp_path, hub):
    bundle = Bundle(hub_url=hub.url, ca_fingerprint="ab" * 32, token=hub.token(), venue_id="school-01")
    result = _enrol(tmp_path, "--qr", bundle.to_qr())
    assert result.exit_code == 1
    assert "refusing to enrol" in result.output and "not the pinned" in result.output
    assert not (tmp_path / "identity").exists() and not (tmp_path / "kiosk.toml").exists()


def test_refusals_over_https_are_clear_and_spend_nothing(tmp_path, pki, hub):
    token = hub.token()

    def attempt(name: str, **fields) -> str:
        data = {"hub_url": hub.url, "ca_fingerprint": pki.ca.fingerprint, "token": token, **fields}
        result = _enrol(tmp_path / name, "--qr", Bundle(**data).to_qr())
        assert result.exit_code == 1, result.output
        assert not (tmp_path / name / "identity").exists()
        return result.output

    assert "for another venue" in attempt("venue", venue_id="market-02")
    assert "unknown" in attempt("forged", token="Q" * 24)
    expired = hub.token("kiosk-002", ttl=dt.timedelta(microseconds=1))
    assert "expired" in attempt("expired", token=expired)
    pending = hub.token("kiosk-003", auto_approve=False)
    assert "not approved" in attempt("pending", token=pending)
    # None of that spent the real token.
    ok = _enrol(
        tmp_path / "ok",
        "--qr",
        Bundle(hub.url, pki.ca.fingerprint, token).to_qr(),
        config=tmp_path / "ok.toml",
    )
    assert ok.exit_code == 0, ok.output


def test_enrolment_qr_payload_round_trips_and_rejects_damage(pki):
    bundle = Bundle(
        "https://hub.example:8443", pki.ca.fingerprint.replace(":", "").lower(), "T" * 24, "k-01", "v-01"
    )
    text = bundle.to_qr()
    assert text.startswith("ATE1:") and len(text) < 250
    assert parse_qr(text) == bundle
    from protocol.enrolment import EnrolError

    with pytest.raises(EnrolError, match="start with ATE1"):
        parse_qr("HC1:xyz")
    with pytest.raises(EnrolError, match="damaged"):
        parse_qr("ATE1:%%%")
    with pytest.raises(EnrolError, match="https://"):
        parse_qr(Bundle("http://hub.example", "ab" * 32, "T" * 24).to_qr())


# ------------------------------------------------------------------------------------- the CLI


def _provision(*args: str):
    from provisioning.__main__ import main as provision

    return CliRunner().invoke(provision, list(args))


def test_provisioning_cli_enrols_approves_lists_and_revokes(tmp_path, pki):
    hub_conf = write_toml(tmp_path / "hub.toml", {"database": {"url": f"sqlite:///{tmp_path / 'hub.db'}"}})
    common = ["--hub-config", str(hub_conf)]
    ca = ["--ca-dir", str(pki.ca.layout.root)]
    added = _provision(
        "venue", "add", "clinic-07", "--name", "Trạm y tế Phường 7", "--type", "clinic", *common
    )
    assert added.exit_code == 0 and "venue clinic-07 added" in added.output
    dup = _provision("venue", "add", "clinic-07", "--name", "x", *common)
    assert dup.exit_code == 1 and dup.output.strip() == "Error: venue clinic-07 already exists"

    qr_png = tmp_path / "enrol.png"
    made = _provision(
        "kiosk",
        "enrol",
        "kiosk-701",
        "--venue",
        "clinic-07",
        "--ttl",
        "12h",
        "--needs-approval",
        "--hub-url",
        "https://hub.example",
        "--bundle",
        str(tmp_path / "boot"),
        "--qr",
        str(qr_png),
        *common,
        *ca,
    )
    assert made.exit_code == 0, made.output
    assert "waiting for `antoan-provision kiosk approve`" in made.output
    assert qr_png.read_bytes().startswith(b"\x89PNG")
    bundle_file = tmp_path / "boot" / "enrol.json"
    assert bundle_file.stat().st_mode & 0o777 == 0o600
    written = json.loads(bundle_file.read_text())
    assert (written["kiosk_id"], written["venue_id"], written["hub_url"]) == (
        "kiosk-701",
        "clinic-07",
        "https://hub.example",
    )
    assert written["ca_fingerprint"] == pki.ca.fingerprint.replace(":", "").lower()

    approved = _provision("kiosk", "approve", "kiosk-701", *common)
    assert approved.exit_code == 0 and "approved 1 enrolment token(s)" in approved.output
    nothing = _provision("kiosk", "approve", "kiosk-701", *common)
    assert nothing.exit_code == 1 and "no enrolment token waiting" in nothing.output

    # Redeem it through the domain (the HTTPS path is covered above), then list and revoke.
    from hub.config import load as load_hub

    engine = make_engine(load_hub(hub_conf).database.url)
    try:
        from provisioning.pki import make_csr, new_key

        devices.redeem(
            engine,
            token=written["token"],
            csr_pem=make_csr(new_key()),
            ca=pki.ca,
            now=dt.datetime.now(dt.UTC),
            settings=EnrolmentSettings(ca_dir=pki.ca.layout.root),
        )
    finally:
        engine.dispose()
    table = _provision("fleet", *common)
    assert table.exit_code == 0
    header, row = table.output.splitlines()
    assert header.split()[:3] == ["KIOSK", "VENUE", "STATUS"]
    assert row.split()[:5] == ["kiosk-701", "clinic-07", "never", "seen", "-"]
    revoked = _provision("kiosk", "revoke", "kiosk-701", *common, *ca)
    assert revoked.exit_code == 0 and "revoked kiosk-701: 1 certificate(s)" in revoked.output
    listed = json.loads(_provision("fleet", "--json", *common).output)
    assert [(k["kiosk_id"], k["status"]) for k in listed] == [("kiosk-701", "revoked")]


@pytest.mark.parametrize(("suffix", "magic"), [(".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_the_enrolment_qr_prints_as_pdf_or_svg(tmp_path, pki, suffix, magic):
    hub_conf = write_toml(tmp_path / "hub.toml", {"database": {"url": f"sqlite:///{tmp_path / 'hub.db'}"}})
    common = ["--hub-config", str(hub_conf)]
    assert _provision("venue", "add", "clinic-08", "--name", "Trạm y tế", *common).exit_code == 0
    out = tmp_path / f"enrol{suffix}"
    made = _provision(
        "kiosk", "enrol", "kiosk-801", "--venue", "clinic-08", "--hub-url", "https://hub.example",
        "--qr", str(out), *common, "--ca-dir", str(pki.ca.layout.root),
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert out.read_bytes().startswith(magic)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["kiosk", "enrol", "kiosk-1", "--venue", "nowhere"], "venue nowhere does not exist; add it first"),
        (["kiosk", "enrol", "kiosk-1", "--venue", "v-1", "--ttl", "soon"], "use a number and a unit"),
        (["kiosk", "enrol", "kiosk-1", "--venue", "v-1", "--bundle", "out"], "need --hub-url https://"),
        (["kiosk", "enrol", "Bad Id", "--venue", "v-1"], "is not valid"),
        (["kiosk", "revoke", "kiosk-9"], "kiosk kiosk-9 is not enrolled"),
        (["venue", "add", "v 1", "--name", "x"], "is not valid"),
        (["kiosk", "enrol", "kiosk-1", "--venue", "v-1", "--qr", "enrol.txt"], "a .png, .pdf or .svg file"),
    ],
)
def test_provisioning_cli_errors_are_one_clear_line(tmp_path, pki, args, message):
    hub_conf = write_toml(tmp_path / "hub.toml", {"database": {"url": f"sqlite:///{tmp_path / 'hub.db'}"}})
    extra = (
        ["--ca-dir", str(pki.ca.layout.root)] if args[:2] in (["kiosk", "enrol"], ["kiosk", "revoke"]) else []
    )
    result = _provision(*args, "--hub-config", str(hub_conf), *extra)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert message in lines[-1], result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "command",
    [
        ["venue", "add"],
        ["kiosk", "enrol"],
        ["kiosk", "approve"],
        ["kiosk", "revoke"],
        ["fleet"],
        ["venue"],
        ["kiosk"],
    ],
)
def test_every_device_command_has_help(command):
    result = _provision(*command, "--help")
    assert result.exit_code == 0
    assert len(result.output.split("Usage:")[1].splitlines()[2].strip()) > 10  # the summary line


@pytest.mark.parametrize("command", [["enrol"], ["renew"]])
def test_kiosk_enrolment_commands_have_help_and_clear_usage_errors(tmp_path, command):
    assert CliRunner().invoke(kiosk_cli, [*command, "--help"]).exit_code == 0
    if command == ["enrol"]:
        result = CliRunner().invoke(kiosk_cli, ["--config", str(tmp_path / "k.toml"), "enrol"])
        assert (
            result.exit_code == 2
            and "give one of --bundle DIR, --qr TEXT or --camera SOURCE" in result.output
        )
        missing = CliRunner().invoke(
            kiosk_cli, ["--config", str(tmp_path / "k.toml"), "enrol", "--bundle", str(tmp_path)]
        )
        assert missing.exit_code == 1 and "no enrolment bundle at" in missing.output
