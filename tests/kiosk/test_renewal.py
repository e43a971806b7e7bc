"""The running kiosk keeps its certificate current: it checks at start and on a schedule, renews at the
real hub (HTTPS, CA pinned) when close to expiry, and reconnects to the secured broker with the new
certificate; no event is lost or stored twice, and a lost answer from the hub is retried safely.

Time is the kiosk's injected clock: the certificates are real and the hub signs with its own time.
"""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

import pytest
from cryptography import x509

from kiosk import config as kiosk_config
from kiosk.app import KioskApp
from kiosk.config import KioskConfig
from kiosk.enrol import enrol, pending_key_path
from protocol.enrolment import Bundle
from provisioning.pki import BRIDGE_IDENTITY
from tests.helpers import wait_for
from tests.integration.harness import TEST_SYNC, assert_exactly_once, start_bridge, write_config
from tests.provisioning.hub_server import Hub, https_hub

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

KIOSK = "kiosk-001"
#: The hub issues 40-day certificates at enrolment, 365-day ones afterwards (its enrolment.cert_days
#: changed in between), so the renewed certificate is far from expiry at the same kiosk clock.
ENROL_DAYS, RENEW_DAYS = 40, 365
#: 10 days before the first certificate expires: inside the renewal window (min(30, 40 / 3) days).
DUE = dt.timedelta(days=30)


class Clock:
    """The kiosk's clock: real time plus an offset the test moves."""

    def __init__(self, offset: dt.timedelta = dt.timedelta(0)):
        self.offset = offset

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


def _enrolled_kiosk(tmp_path: Path, hub: Hub, pki, **renewal) -> KioskConfig:
    """Enrol kiosk-001 through the real path (token, CSR over HTTPS) and load its configuration."""
    conf = write_config(
        tmp_path / "kiosk.toml",
        {
            "outbox": {"path": str(tmp_path / "outbox.db")},
            "sync": TEST_SYNC,
            "gpio": {"pin_factory": "none"},
            "renewal": renewal,
        },
    )
    bundle = Bundle(hub.url, pki.ca.fingerprint, hub.token(KIOSK), KIOSK, "school-01")
    enrol(bundle, identity_dir=tmp_path / "identity", config_path=conf)
    hub.configure(cert_days=RENEW_DAYS)
    return kiosk_config.load(conf)


def _cert(cfg: KioskConfig) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cfg.mqtt.tls.cert_file.read_bytes())


def _record(app: KioskApp, numbers: range) -> None:
    for i in numbers:
        app.record("check_in", {"direction": "in", "subject": {"type": "pass", "pass_id": f"P{i}"}})


def test_the_running_kiosk_renews_at_a_scheduled_check_and_reconnects_without_losing_events(
    tmp_path, pki, secure_broker, identities
):
    with https_hub(tmp_path / "hub-web", pki, secure_broker, cert_days=ENROL_DAYS) as hub:
        cfg = _enrolled_kiosk(tmp_path, hub, pki, check_interval_s=0.2, retry_interval_s=0.2)
        first = _cert(cfg)
        clock = Clock()
        bridge = start_bridge(hub.store, identities(BRIDGE_IDENTITY))
        app = KioskApp(cfg, clock=clock)
        app.start()
        try:
            wait_for(lambda: app.renewal_stats.checks >= 3, what="checks while far from expiry")
            assert (app.renewal_stats.renewals, _cert(cfg)) == (0, first)
            _record(app, range(100))
            clock.offset = DUE
            wait_for(lambda: app.renewal_stats.renewals == 1, what="the scheduled renewal")
            _record(app, range(100, 200))
            wait_for(lambda: app.outbox.depth() == 0, what="every event acked over the new connection")
            assert_exactly_once(hub.store, KIOSK, app.outbox.epoch, list(range(1, 201)))

            renewed = _cert(cfg)
            assert hub.device(KIOSK).cert_serial == f"{renewed.serial_number:X}"
            lifetime = renewed.not_valid_after_utc - renewed.not_valid_before_utc
            assert dt.timedelta(days=RENEW_DAYS) <= lifetime < dt.timedelta(days=RENEW_DAYS, hours=1)
            assert app.renewal_stats.reconnects == 1 and app.renewal_stats.failures == 0
            assert not pending_key_path(cfg.mqtt.tls.key_file).exists()
            checks = app.renewal_stats.checks
            wait_for(lambda: app.renewal_stats.checks >= checks + 3, what="later checks")
            assert app.renewal_stats.renewals == 1  # the new certificate is far from expiry

            # The live connection holds the new certificate: with the old one revoked and the broker
            # restarted (it reads the CRL at start), the kiosk comes back and syncs.
            pki.ca.revoke(first.serial_number, reason="superseded")
            secure_broker.kill()
            secure_broker.start()
            _record(app, range(200, 210))
            wait_for(lambda: app.outbox.depth() == 0, timeout_s=60, what="events after the broker restart")
            assert_exactly_once(hub.store, KIOSK, app.outbox.epoch, list(range(1, 211)))
        finally:
            app.stop()
            bridge.stop()


class DropFirstRenewalAnswer:
    """WSGI middleware: the hub handles the first renewal completely (it issues and records the new
    certificate), then the connection is cut before the answer leaves."""

    def __init__(self, app):
        self.app = app
        self.renewals = 0
        self.dropped = 0

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != "/api/v1/renew":
            return self.app(environ, start_response)
        self.renewals += 1
        if self.dropped:
            return self.app(environ, start_response)
        answer = self.app(environ, lambda status, headers, exc_info=None: lambda data: None)
        b"".join(answer)
        self.dropped += 1
        environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
        return []


def test_a_lost_renewal_answer_is_retried_with_the_same_key_and_gets_the_certificate_the_hub_issued(
    tmp_path, pki, secure_broker, identities
):
    made: list[DropFirstRenewalAnswer] = []

    def middleware(app):
        made.append(DropFirstRenewalAnswer(app))
        return made[0]

    with https_hub(
        tmp_path / "hub-web", pki, secure_broker, cert_days=ENROL_DAYS, middleware=middleware
    ) as hub:
        cfg = _enrolled_kiosk(tmp_path, hub, pki, check_interval_s=3600, retry_interval_s=0.2)
        first = _cert(cfg)
        bridge = start_bridge(hub.store, identities(BRIDGE_IDENTITY))
        app = KioskApp(cfg, clock=Clock(DUE))  # due from the check at start
        app.start()
        try:
            _record(app, range(50))
            wait_for(lambda: app.renewal_stats.renewals == 1, what="the renewal after the lost answer")
            drops = made[0]
            assert (drops.dropped, drops.renewals, app.renewal_stats.failures) == (1, 2, 1)
            renewed = _cert(cfg)
            assert renewed.serial_number != first.serial_number
            assert hub.device(KIOSK).cert_serial == f"{renewed.serial_number:X}"
            # The retry was answered with the certificate issued for the lost answer: no third one.
            assert len(pki.ca.issued(name=KIOSK)) == 2
            assert not pending_key_path(cfg.mqtt.tls.key_file).exists()
            _record(app, range(50, 100))
            wait_for(lambda: app.outbox.depth() == 0, what="every event acked")
            assert_exactly_once(hub.store, KIOSK, app.outbox.epoch, list(range(1, 101)))
            assert app.renewal_stats.reconnects == 1
        finally:
            app.stop()
            bridge.stop()
