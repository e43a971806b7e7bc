"""The kiosk's certificate files around a renewal: when it is due, and repair after a stop half-way."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

from kiosk.enrol import (
    EnrolError,
    pending_key_path,
    recover_identity,
    renewal_due,
    renewal_window_days,
)
from protocol.keyfiles import key_pem, make_csr, new_key, write_private, write_public
from provisioning.pki import HubCA, cert_pem


@pytest.fixture
def ca(tmp_path) -> HubCA:
    return HubCA.init(tmp_path / "ca")


def _issue(ca: HubCA, key, days: float = 90) -> bytes:
    return cert_pem(ca.sign_kiosk_csr(make_csr(key), kiosk_id="kiosk-001", days=days))


@pytest.fixture
def pair(tmp_path, ca):
    """An enrolled kiosk's files, and a renewal's new key and certificate (not yet in place)."""
    old_key, new = new_key(), new_key()
    cert_file, key_file = tmp_path / "id" / "kiosk.pem", tmp_path / "id" / "kiosk.key"
    write_public(cert_file, _issue(ca, old_key))
    write_private(key_file, key_pem(old_key))
    return cert_file, key_file, old_key, new, _issue(ca, new)


def test_the_renewal_window_is_the_configured_days_or_a_third_of_a_short_lifetime(ca):
    long = x509.load_pem_x509_certificate(_issue(ca, new_key(), days=365))
    short = x509.load_pem_x509_certificate(_issue(ca, new_key(), days=12))
    assert renewal_window_days(long, 30) == 30
    assert 4.0 < renewal_window_days(short, 30) < 4.01  # (12 days + 5 min backdating) / 3


def test_renewal_is_due_only_inside_the_window(tmp_path, ca):
    cert_file = write_public(tmp_path / "kiosk.pem", _issue(ca, new_key(), days=90))
    now = dt.datetime.now(dt.UTC)
    assert not renewal_due(cert_file, now, 30)
    assert not renewal_due(cert_file, now + dt.timedelta(days=59), 30)
    assert renewal_due(cert_file, now + dt.timedelta(days=61), 30)
    assert renewal_due(cert_file, now + dt.timedelta(days=85), 3) is False
    assert renewal_due(cert_file, now + dt.timedelta(days=88), 3)


def test_a_matching_pair_is_left_alone_and_a_stale_pending_key_is_removed(pair):
    cert_file, key_file, old_key, _new, _new_cert = pair
    assert recover_identity(cert_file, key_file) is None
    write_private(pending_key_path(key_file), key_pem(old_key))  # a finished renewal's leftover
    assert recover_identity(cert_file, key_file) is None
    assert not pending_key_path(key_file).exists()


def test_a_stop_between_certificate_and_key_is_completed_from_the_pending_key(pair):
    cert_file, key_file, _old_key, new, new_cert = pair
    write_private(pending_key_path(key_file), key_pem(new))
    write_public(cert_file, new_cert)  # the renewal stopped here: new certificate, old key
    assert "finished an interrupted renewal" in recover_identity(cert_file, key_file)
    assert key_file.read_bytes() == key_pem(new)
    assert not pending_key_path(key_file).exists()
    assert recover_identity(cert_file, key_file) is None


def test_a_key_replaced_without_its_certificate_goes_back_to_the_previous_key(pair):
    cert_file, key_file, old_key, new, _new_cert = pair
    write_private(key_file.with_name("kiosk.key.prev"), key_pem(old_key))
    write_private(key_file, key_pem(new))
    assert "previous key" in recover_identity(cert_file, key_file)
    assert key_file.read_bytes() == key_pem(old_key)


def test_a_certificate_replaced_without_its_key_goes_back_to_the_previous_certificate(pair):
    cert_file, key_file, _old_key, _new, new_cert = pair
    old_cert = cert_file.read_bytes()
    write_private(cert_file.with_name("kiosk.pem.prev"), old_cert)
    write_public(cert_file, new_cert)  # and the pending key is gone
    assert "previous certificate" in recover_identity(cert_file, key_file)
    assert cert_file.read_bytes() == old_cert


def test_files_that_cannot_be_paired_again_say_to_enrol_again(pair):
    cert_file, key_file, _old_key, _new, new_cert = pair
    write_public(cert_file, new_cert)
    with pytest.raises(EnrolError, match="enrol the kiosk again"):
        recover_identity(cert_file, key_file)
