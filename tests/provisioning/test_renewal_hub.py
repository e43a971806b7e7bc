"""The hub's side of certificate renewal: a kiosk whose answer was lost asks again and gets the same
certificate; anything else presented with a superseded certificate is refused (issue 5)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from sqlalchemy import select

from hub import devices
from hub.db.schema import devices as table
from hub.devices import EnrolmentRefused, EnrolmentSettings, renewal_signature
from protocol.keyfiles import make_csr, new_key
from provisioning.pki import HubCA


@pytest.fixture
def ca(tmp_path) -> HubCA:
    return HubCA.init(tmp_path / "ca")


@pytest.fixture
def enrolled(hub_engine, ca):
    """kiosk-001 enrolled at a venue: its certificate and key."""
    now = dt.datetime.now(dt.UTC)
    with hub_engine.begin() as conn:
        devices.add_venue(conn, venue_id="school-01", name="Trường THCS Lê Lợi", now=now)
        token = devices.create_enrolment_token(
            conn, kiosk_id="kiosk-001", venue_id="school-01", created_by="it", now=now, auto_approve=True
        ).token
    key = new_key()
    done = devices.redeem(
        hub_engine, token=token, csr_pem=make_csr(key), ca=ca, now=now, settings=EnrolmentSettings()
    )
    return done.cert_pem.encode(), key


def _renew(engine, ca, cert_pem: bytes, current_key, new_key_):
    csr = make_csr(new_key_)  # a new CSR every time (ECDSA signatures differ), as a kiosk's retry makes
    return devices.renew(
        engine,
        cert_pem_text=cert_pem,
        csr_pem=csr,
        signature=renewal_signature(current_key, csr),
        ca=ca,
        now=dt.datetime.now(dt.UTC),
        settings=EnrolmentSettings(),
    )


def _serial(pem: str | bytes) -> int:
    return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem).serial_number


def _recorded(engine) -> str:
    """The certificate serial the hub records for kiosk-001."""
    with engine.connect() as conn:
        return conn.execute(select(table.c.cert_serial).where(table.c.kiosk_id == "kiosk-001")).scalar_one()


def test_a_renewal_asked_again_with_the_same_key_gets_the_certificate_already_issued(
    hub_engine, ca, enrolled
):
    cert, key = enrolled
    pending = new_key()
    first = _renew(hub_engine, ca, cert, key, pending)  # the kiosk never received this answer
    again = _renew(hub_engine, ca, cert, key, pending)
    assert again.cert_pem == first.cert_pem
    assert _recorded(hub_engine) == f"{_serial(first.cert_pem):X}"
    assert len(ca.issued(name="kiosk-001")) == 2  # the enrolment's and one renewal: nothing more


def test_a_superseded_certificate_with_another_key_is_refused(hub_engine, ca, enrolled):
    cert, key = enrolled
    _renew(hub_engine, ca, cert, key, new_key())
    with pytest.raises(EnrolmentRefused, match="not kiosk kiosk-001's current certificate") as refused:
        _renew(hub_engine, ca, cert, key, new_key())
    assert refused.value.code == "superseded"
    assert len(ca.issued(name="kiosk-001")) == 2


def test_once_the_kiosk_renewed_again_the_older_answer_is_not_sent_any_more(hub_engine, ca, enrolled):
    cert, key = enrolled
    second_key = new_key()
    second = _renew(hub_engine, ca, cert, key, second_key)
    third = _renew(hub_engine, ca, second.cert_pem.encode(), second_key, new_key())
    assert _recorded(hub_engine) == f"{_serial(third.cert_pem):X}"
    # The first certificate with the second key: the hub now records the third, for another key.
    with pytest.raises(EnrolmentRefused, match="current certificate"):
        _renew(hub_engine, ca, cert, key, second_key)


def test_a_revoked_renewal_is_not_sent_again(hub_engine, ca, enrolled):
    cert, key = enrolled
    pending = new_key()
    first = _renew(hub_engine, ca, cert, key, pending)
    ca.revoke(_serial(first.cert_pem), reason="key_compromise")
    with pytest.raises(EnrolmentRefused, match="current certificate"):
        _renew(hub_engine, ca, cert, key, pending)
