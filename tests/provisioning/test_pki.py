"""The hub CA: certificate shapes, CSR signing with the CN forced, revocation list, fingerprints."""

from __future__ import annotations

import datetime as dt
import hashlib
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given
from hypothesis import strategies as st

from protocol.topics import is_valid_kiosk_id
from provisioning.pki import (
    BRIDGE_IDENTITY,
    CaExistsError,
    CaMissingError,
    CsrError,
    HubCA,
    PkiError,
    fingerprint,
    make_csr,
    new_key,
    normalise_fingerprint,
    validate_kiosk_id,
)

NOW = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)


@pytest.fixture
def ca(tmp_path) -> HubCA:
    return HubCA.init(tmp_path / "ca", clock=lambda: NOW)


def _cn(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def _eku(cert: x509.Certificate):
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_the_ca_is_a_self_signed_p256_ca_limited_to_signing_certificates_and_crls(ca):
    cert = ca.cert
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    cert.verify_directly_issued_by(cert)
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature


def test_the_ca_key_file_is_private_and_an_empty_crl_exists_from_the_start(ca):
    assert stat.S_IMODE(ca.layout.ca_key.stat().st_mode) == 0o600
    crl = x509.load_pem_x509_crl(ca.layout.crl.read_bytes())
    assert len(crl) == 0 and crl.is_signature_valid(ca.cert.public_key())


def test_the_ca_key_can_be_encrypted_with_a_passphrase(tmp_path):
    HubCA.init(tmp_path / "ca", passphrase=b"correct horse")
    assert b"ENCRYPTED" in (tmp_path / "ca" / "ca.key").read_bytes()
    with pytest.raises(PkiError, match="passphrase"):
        HubCA.open(tmp_path / "ca")
    with pytest.raises(PkiError, match="wrong passphrase"):
        HubCA.open(tmp_path / "ca", passphrase=b"wrong")
    assert HubCA.open(tmp_path / "ca", passphrase=b"correct horse").fingerprint


def test_init_refuses_to_overwrite_a_ca_and_open_names_the_missing_folder(ca, tmp_path):
    with pytest.raises(CaExistsError):
        HubCA.init(ca.layout.root)
    with pytest.raises(CaMissingError, match="ca init"):
        HubCA.open(tmp_path / "nothing-here")


def test_the_server_certificate_names_the_broker_and_is_for_server_auth(ca):
    pair = ca.issue_server_cert(dns_names=["broker.local", "localhost"], ip_addresses=["127.0.0.1", "::1"])
    pair.cert.verify_directly_issued_by(ca.cert)
    san = pair.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.local", "localhost"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert _eku(pair.cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not pair.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_a_kiosk_csr_is_signed_with_the_kiosk_id_the_ca_chose_not_the_one_it_asked_for(ca):
    key = new_key()
    cert = ca.sign_kiosk_csr(make_csr(key, common_name_hint="antoan-bridge"), kiosk_id="kiosk-hn-0042")
    cert.verify_directly_issued_by(ca.cert)
    assert _cn(cert) == "kiosk-hn-0042"
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert _eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.not_valid_after_utc - NOW == dt.timedelta(days=90)


def test_the_kiosk_certificate_validity_is_configurable(ca):
    cert = ca.sign_kiosk_csr(make_csr(new_key()), kiosk_id="kiosk-001", days=7)
    assert cert.not_valid_after_utc - NOW == dt.timedelta(days=7)


def test_a_csr_whose_signature_does_not_verify_is_refused(ca):
    der = bytearray(x509.load_pem_x509_csr(make_csr(new_key())).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CsrError, match="signature"):
        ca.sign_kiosk_csr(tampered, kiosk_id="kiosk-001")


def test_a_csr_with_an_unaccepted_key_type_or_garbage_is_refused(ca):
    ed = ed25519.Ed25519PrivateKey.generate()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k")]))
        .sign(ed, None)
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(CsrError, match="P-256"):
        ca.sign_kiosk_csr(csr, kiosk_id="kiosk-001")
    with pytest.raises(CsrError, match="not a PEM CSR"):
        ca.sign_kiosk_csr(b"hello", kiosk_id="kiosk-001")


@pytest.mark.parametrize("bad", ["Kiosk-A", "ab", "kiosk/b", "kiosk+", "#", "", "-kiosk", BRIDGE_IDENTITY])
def test_invalid_or_reserved_kiosk_ids_are_refused(ca, bad):
    with pytest.raises(PkiError, match="kiosk id"):
        ca.sign_kiosk_csr(make_csr(new_key()), kiosk_id=bad)


@given(st.text(max_size=70))
def test_kiosk_ids_follow_the_topic_rule_minus_the_service_prefix(text):
    allowed = is_valid_kiosk_id(text) and not text.startswith("antoan-")
    try:
        validate_kiosk_id(text)
    except PkiError:
        assert not allowed
    else:
        assert allowed


def test_the_bridge_identity_is_a_client_certificate_named_antoan_bridge(ca):
    pair = ca.issue_bridge_identity()
    assert _cn(pair.cert) == BRIDGE_IDENTITY
    assert _eku(pair.cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(PkiError, match="service name"):
        ca.issue_client("kiosk-001")  # a service name must start with antoan-


def test_revoking_writes_a_signed_crl_with_the_serial_reason_and_a_next_update(ca):
    keep = ca.sign_kiosk_csr(make_csr(new_key()), kiosk_id="kiosk-001")
    gone = ca.sign_kiosk_csr(make_csr(new_key()), kiosk_id="kiosk-002")
    ca.revoke(gone.serial_number, reason="key-compromise")
    crl = x509.load_pem_x509_crl(ca.layout.crl.read_bytes())
    assert crl.is_signature_valid(ca.cert.public_key())
    entry = crl.get_revoked_certificate_by_serial_number(gone.serial_number)
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.key_compromise
    )
    assert crl.get_revoked_certificate_by_serial_number(keep.serial_number) is None
    assert crl.next_update_utc > NOW
    assert ca.is_revoked(gone.serial_number) and not ca.is_revoked(keep.serial_number)


def test_each_crl_has_a_higher_number_and_revoking_twice_changes_nothing(ca):
    cert = ca.sign_kiosk_csr(make_csr(new_key()), kiosk_id="kiosk-001")
    ca.revoke(cert.serial_number)
    first = x509.load_pem_x509_crl(ca.layout.crl.read_bytes())
    ca.revoke(cert.serial_number)
    ca.write_crl()
    second = x509.load_pem_x509_crl(ca.layout.crl.read_bytes())
    number = lambda crl: crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number  # noqa: E731
    assert number(second) > number(first)
    assert len(second) == 1


def test_revoking_a_kiosk_id_revokes_all_its_certificates_only(ca):
    old = ca.sign_kiosk_csr(make_csr(new_key()), kiosk_id="kiosk-001")
    new = ca.sign_kiosk_csr(make_csr(new_key()), kiosk_id="kiosk-001")
    other = ca.sign_kiosk_csr(make_csr(new_key()), kiosk_id="kiosk-002")
    assert sorted(ca.revoke_name("kiosk-001")) == sorted([old.serial_number, new.serial_number])
    assert not ca.is_revoked(other.serial_number)
    assert ca.revoke_name("kiosk-001") == []  # already revoked


def test_an_unknown_revocation_reason_names_the_known_ones(ca):
    cert = ca.sign_kiosk_csr(make_csr(new_key()), kiosk_id="kiosk-001")
    with pytest.raises(PkiError, match="key-compromise"):
        ca.revoke(cert.serial_number, reason="lost-it")


def test_the_ca_survives_a_reopen_with_its_revocations(ca):
    cert = ca.sign_kiosk_csr(make_csr(new_key()), kiosk_id="kiosk-001")
    ca.revoke(cert.serial_number, reason="superseded")
    again = HubCA.open(ca.layout.root)
    assert again.fingerprint == ca.fingerprint
    assert [r.serial for r in again.revocations()] == [cert.serial_number]
    assert again.revocations()[0].common_name == "kiosk-001"


def test_the_fingerprint_is_sha256_of_the_der_in_colon_hex(ca):
    der = ca.cert.public_bytes(serialization.Encoding.DER)
    assert fingerprint(ca.cert) == ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    assert ca.cert.fingerprint(hashes.SHA256()).hex() == fingerprint(ca.cert).replace(":", "").lower()


@given(st.binary(min_size=32, max_size=32), st.sampled_from([":", "", " "]), st.booleans())
def test_a_fingerprint_typed_any_way_normalises_to_one_form(digest, sep, upper):
    text = digest.hex(sep) if sep else digest.hex()
    text = text.upper() if upper else text
    assert normalise_fingerprint(text) == digest.hex(":").upper()


@pytest.mark.parametrize("bad", ["", "AB:CD", "zz" * 32, "ab" * 33])
def test_a_malformed_fingerprint_is_refused(bad):
    with pytest.raises(PkiError, match="64 hex digits"):
        normalise_fingerprint(bad)
