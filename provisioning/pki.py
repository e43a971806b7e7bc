"""The hub's certificate authority: CA, broker and client certificates, revocation list, CA pinning.

One folder holds the CA (:class:`CaLayout`)::

    ca.pem          the CA certificate (public: every kiosk and the broker get it)
    ca.key          the CA private key (0600; optionally encrypted with a passphrase)
    crl.pem         the revocation list the broker reads (``crlfile``); rewritten on every revocation
    revoked.json    what the CRL is made from: serial, reason, time and CN of each revoked certificate
    issued/         a copy of every certificate issued, named by serial (``<SERIAL-HEX>.pem``), so a
                    kiosk id can be revoked without having its certificate in hand

Kiosk certificates carry the kiosk id as the subject CN, chosen by the CA (never taken from the CSR),
because the broker uses the CN as the MQTT user name and client id (``use_identity_as_username``,
``use_username_as_clientid``), and the ACL confines each user to its own topics. Hub services (the
broker bridge) have identities whose names start with ``antoan-``; that prefix is refused for kiosks
so a kiosk can never hold a hub service's rights.

The CRL has a ``next_update``: OpenSSL refuses *every* client certificate once the broker's CRL is
past it, so the hub must re-sign it well before then: :meth:`HubCA.refresh_crl` (``antoan-provision ca
refresh-crl``, run daily by ``provisioning/systemd/antoan-crl-refresh.timer``), and the bridge warns
(:func:`crl_expiry_warning`) once it is within :data:`CRL_WARN_DAYS` of expiry.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocol.keyfiles import key_pem, make_csr, new_key, write_private, write_public  # noqa: F401  (part of the CA API)
from protocol.topics import is_valid_kiosk_id

#: Client certificates for kiosks are valid this long unless told otherwise; renewal comes before expiry.
DEFAULT_CLIENT_DAYS = 90
DEFAULT_CA_DAYS = 10 * 365
DEFAULT_SERVER_DAYS = 397
DEFAULT_SERVICE_DAYS = 365
#: How long a CRL stays valid. The broker refuses every client once its CRL is past ``next_update``.
DEFAULT_CRL_DAYS = 30
#: ``ca refresh-crl`` re-signs the CRL once its ``next_update`` is this close (it runs daily, so a
#: few missed days are absorbed).
DEFAULT_CRL_REFRESH_DAYS = 10
#: The hub bridge warns in its log once the CRL is this close to its ``next_update``.
CRL_WARN_DAYS = 7

#: Names with this prefix belong to hub services, never to kiosks.
SERVICE_PREFIX = "antoan-"
BRIDGE_IDENTITY = "antoan-bridge"
#: The bridge's list publisher is a second MQTT client; with the client id forced to the CN it needs
#: a certificate of its own, or the two would take over each other's session in a loop.
LISTS_IDENTITY = "antoan-bridge-lists"
#: Hub services that get the bridge's rights in the broker ACL unless told otherwise.
DEFAULT_SERVICES = (BRIDGE_IDENTITY, LISTS_IDENTITY)

#: Backdating absorbs small clock differences between the hub and a freshly booted kiosk.
_BACKDATE = dt.timedelta(minutes=5)

Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class PkiError(Exception):
    """A certificate operation failed; the message says what to do next."""


class CaExistsError(PkiError, FileExistsError):
    """Initialising a CA where one already exists."""


class CaMissingError(PkiError, FileNotFoundError):
    """Opening a CA folder that holds no CA."""


class CsrError(PkiError, ValueError):
    """A certificate signing request that the CA will not sign."""


def validate_kiosk_id(kiosk_id: str) -> str:
    """Return ``kiosk_id`` if it may be a kiosk's certificate CN, else raise :class:`PkiError`.

    The rule is the topic rule of :mod:`protocol.topics` (the id appears in topics), plus the
    ``antoan-`` prefix being reserved for hub services.
    """
    if not is_valid_kiosk_id(kiosk_id):
        raise PkiError(f"kiosk id {kiosk_id!r} is not valid: use 3-64 lowercase letters, digits or dashes")
    if kiosk_id.startswith(SERVICE_PREFIX):
        raise PkiError(
            f"kiosk id {kiosk_id!r} is reserved: ids starting with {SERVICE_PREFIX!r} are hub services"
        )
    return kiosk_id


def validate_service_name(name: str) -> str:
    """Return ``name`` if it may be a hub service identity (``antoan-…``), else raise :class:`PkiError`."""
    if not is_valid_kiosk_id(name) or not name.startswith(SERVICE_PREFIX):
        raise PkiError(
            f"service name {name!r} is not valid: use {SERVICE_PREFIX!r} followed by lowercase letters, "
            "digits or dashes"
        )
    return name


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER as upper-case hex pairs joined by colons (as ``openssl x509 -fingerprint``)."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def normalise_fingerprint(text: str) -> str:
    """Accept a fingerprint typed with or without colons/spaces, any case; return :func:`fingerprint` form."""
    digits = "".join(c for c in text if c not in ": \t").lower()
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise PkiError("a CA fingerprint is 64 hex digits (SHA-256), optionally in pairs separated by colons")
    return bytes.fromhex(digits).hex(":").upper()


def common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A certificate with the private key the CA made for it (broker and hub service identities)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def write(self, cert_path: Path, key_path: Path) -> None:
        """Certificate 0644, key 0600."""
        write_public(cert_path, cert_pem(self.cert))
        write_private(key_path, key_pem(self.key))


@dataclass(frozen=True, slots=True)
class Revocation:
    serial: int
    reason: x509.ReasonFlags
    revoked_at: dt.datetime
    common_name: str | None


@dataclass(frozen=True, slots=True)
class CaLayout:
    """Where one CA keeps its files (see the module docstring)."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    @property
    def revoked(self) -> Path:
        return self.root / "revoked.json"

    @property
    def issued(self) -> Path:
        return self.root / "issued"

    def exists(self) -> bool:
        return self.ca_cert.exists() and self.ca_key.exists()


def _reason(reason: x509.ReasonFlags | str) -> x509.ReasonFlags:
    if isinstance(reason, x509.ReasonFlags):
        return reason
    try:
        return x509.ReasonFlags[reason.replace("-", "_")]
    except KeyError:
        known = ", ".join(r.name.replace("_", "-") for r in x509.ReasonFlags)
        raise PkiError(f"unknown revocation reason {reason!r}; use one of: {known}") from None


class HubCA:
    """The hub's CA, opened from (or initialised into) a :class:`CaLayout` folder."""

    def __init__(
        self,
        layout: CaLayout,
        *,
        cert: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        clock: Clock = _utcnow,
    ):
        self.layout = layout
        self.cert = cert
        self._key = key
        self._clock = clock

    # --- creation -------------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        root: Path,
        *,
        common_name: str = "AnToan Hub CA",
        days: int = DEFAULT_CA_DAYS,
        passphrase: bytes | None = None,
        clock: Clock = _utcnow,
    ) -> HubCA:
        """Make a new CA in ``root`` (refuses to overwrite one) and write an empty CRL."""
        layout = CaLayout(Path(root))
        if layout.ca_cert.exists() or layout.ca_key.exists():
            raise CaExistsError(f"a CA already exists in {layout.root}; use it, or choose an empty folder")
        key = new_key()
        now = clock()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        layout.root.mkdir(parents=True, exist_ok=True)
        layout.issued.mkdir(exist_ok=True)
        write_private(layout.ca_key, key_pem(key, passphrase))
        write_public(layout.ca_cert, cert_pem(cert))
        ca = cls(layout, cert=cert, key=key, clock=clock)
        ca._save_revoked({"crl_number": 0, "revoked": []})
        ca.write_crl()
        return ca

    @classmethod
    def open(cls, root: Path, *, passphrase: bytes | None = None, clock: Clock = _utcnow) -> HubCA:
        """Load the CA in ``root``; :class:`CaMissingError` when there is none."""
        layout = CaLayout(Path(root))
        if not layout.exists():
            raise CaMissingError(
                f"no CA in {layout.root} (expected ca.pem and ca.key); run `antoan-provision ca init` first"
            )
        try:
            key = serialization.load_pem_private_key(layout.ca_key.read_bytes(), password=passphrase)
        except TypeError:
            raise PkiError(f"{layout.ca_key} is encrypted: give its passphrase") from None
        except ValueError:
            raise PkiError(
                f"cannot read {layout.ca_key}: wrong passphrase or not a PEM private key"
            ) from None
        cert = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
        if cert.public_key().public_numbers() != key.public_key().public_numbers():
            raise PkiError(f"{layout.ca_key} does not belong to {layout.ca_cert}")
        layout.issued.mkdir(exist_ok=True)
        ca = cls(layout, cert=cert, key=key, clock=clock)
        if not layout.revoked.exists():
            ca._save_revoked({"crl_number": 0, "revoked": []})
        return ca

    @property
    def fingerprint(self) -> str:
        """The CA certificate's SHA-256 fingerprint, for pinning in an enrolment bundle or QR code."""
        return fingerprint(self.cert)

    # --- issuing --------------------------------------------------------------------------------

    def _builder(self, subject_cn: str, public_key, days: float) -> x509.CertificateBuilder:
        now = self._clock()
        not_after = min(now + dt.timedelta(days=days), self.cert.not_valid_after_utc)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )

    def _sign(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        cert = builder.sign(self._key, hashes.SHA256())
        write_public(self.layout.issued / f"{cert.serial_number:X}.pem", cert_pem(cert))
        return cert

    @staticmethod
    def _key_usage(*, key_encipherment: bool = False) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=key_encipherment,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )

    def issue_server_cert(
        self,
        *,
        dns_names: Iterable[str] = ("localhost",),
        ip_addresses: Iterable[str] = ("127.0.0.1",),
        days: int = DEFAULT_SERVER_DAYS,
    ) -> KeyPair:
        """The broker's TLS server certificate (and a new key) for the given names and addresses."""
        dns = [x509.DNSName(n) for n in dns_names]
        try:
            ips = [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        except ValueError as exc:
            raise PkiError(f"not an IP address: {exc}") from None
        if not dns and not ips:
            raise PkiError("the broker certificate needs at least one DNS name or IP address")
        key = new_key()
        cn = dns[0].value if dns else str(ips[0].value)
        builder = (
            self._builder(cn, key.public_key(), days)
            .add_extension(x509.SubjectAlternativeName([*dns, *ips]), critical=False)
            .add_extension(self._key_usage(), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        )
        return KeyPair(self._sign(builder), key)

    def _client_builder(self, cn: str, public_key, days: float) -> x509.CertificateBuilder:
        return (
            self._builder(cn, public_key, days)
            .add_extension(self._key_usage(), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )

    def sign_kiosk_csr(
        self, csr_pem: bytes, *, kiosk_id: str, days: float = DEFAULT_CLIENT_DAYS
    ) -> x509.Certificate:
        """Sign a kiosk's CSR as ``kiosk_id``: the CSR's own subject and extensions are ignored.

        The CSR's signature must verify (the kiosk holds the key) and its key must be EC P-256/P-384
        or RSA of at least 2048 bits.
        """
        validate_kiosk_id(kiosk_id)
        if days <= 0:
            raise PkiError("certificate validity must be positive")
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError:
            raise CsrError("the certificate request is not a PEM CSR") from None
        if not csr.is_signature_valid:
            raise CsrError("the certificate request's signature does not verify; make a new request")
        public_key = csr.public_key()
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            if not isinstance(public_key.curve, ec.SECP256R1 | ec.SECP384R1):
                raise CsrError(f"EC curve {public_key.curve.name} is not accepted; use P-256")
        elif isinstance(public_key, rsa.RSAPublicKey):
            if public_key.key_size < 2048:
                raise CsrError("RSA keys under 2048 bits are not accepted; use EC P-256")
        else:
            raise CsrError("only EC P-256/P-384 or RSA keys are accepted; use EC P-256")
        return self._sign(self._client_builder(kiosk_id, public_key, days))

    def issue_client(self, name: str, *, days: float = DEFAULT_SERVICE_DAYS, service: bool = True) -> KeyPair:
        """A client certificate and a new key made here: hub services (``antoan-…``), or test kiosks.

        Real kiosks make their own key and send a CSR (:meth:`sign_kiosk_csr`); the private key of a
        hub service never leaves the hub either, so the CA making it is fine.
        """
        if service:
            validate_service_name(name)
        else:
            validate_kiosk_id(name)
        key = new_key()
        return KeyPair(self._sign(self._client_builder(name, key.public_key(), days)), key)

    def issue_bridge_identity(self, *, days: float = DEFAULT_SERVICE_DAYS) -> KeyPair:
        """The broker bridge's client identity (CN ``antoan-bridge``)."""
        return self.issue_client(BRIDGE_IDENTITY, days=days)

    def issued_cert(self, serial: int) -> x509.Certificate | None:
        """The certificate this CA issued with ``serial`` (from ``issued/``), or None if it never did."""
        path = self.layout.issued / f"{serial:X}.pem"
        try:
            return x509.load_pem_x509_certificate(path.read_bytes())
        except FileNotFoundError:
            return None

    def issued(self, *, name: str | None = None) -> list[x509.Certificate]:
        """Every certificate this CA issued (optionally only those whose CN is ``name``), oldest first."""
        certs = [
            x509.load_pem_x509_certificate(p.read_bytes()) for p in sorted(self.layout.issued.glob("*.pem"))
        ]
        if name is not None:
            certs = [c for c in certs if common_name(c) == name]
        return sorted(certs, key=lambda c: c.not_valid_before_utc)

    # --- revocation -----------------------------------------------------------------------------

    def _load_revoked(self) -> dict:
        try:
            return json.loads(self.layout.revoked.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"crl_number": 0, "revoked": []}

    def _save_revoked(self, state: dict) -> None:
        write_public(self.layout.revoked, json.dumps(state, indent=1).encode())

    @staticmethod
    def _revocation(entry: dict) -> Revocation:
        return Revocation(
            serial=int(entry["serial"], 16),
            reason=x509.ReasonFlags[entry["reason"]],
            revoked_at=dt.datetime.fromisoformat(entry["revoked_at"]),
            common_name=entry.get("common_name"),
        )

    def revocations(self) -> list[Revocation]:
        return [self._revocation(r) for r in self._load_revoked()["revoked"]]

    def is_revoked(self, serial: int) -> bool:
        return any(r.serial == serial for r in self.revocations())

    def revoke(
        self,
        serial: int,
        *,
        reason: x509.ReasonFlags | str = x509.ReasonFlags.unspecified,
        write: bool = True,
    ) -> Revocation:
        """Add ``serial`` to the revocation list (idempotent) and, unless ``write=False``, rewrite the CRL.

        A reload of the broker is still needed for the CRL to take effect, and it only blocks new
        connections: :func:`provisioning.broker.revoke_kiosk` also drops the live session.
        """
        flag = _reason(reason)
        if flag is x509.ReasonFlags.remove_from_crl:
            raise PkiError("remove-from-crl is not a revocation reason")
        state = self._load_revoked()
        for entry in state["revoked"]:
            if int(entry["serial"], 16) == serial:
                return self._revocation(entry)
        issued = self.layout.issued / f"{serial:X}.pem"
        cn = common_name(x509.load_pem_x509_certificate(issued.read_bytes())) if issued.exists() else None
        now = self._clock().replace(microsecond=0)
        state["revoked"].append(
            {"serial": f"{serial:X}", "reason": flag.name, "revoked_at": now.isoformat(), "common_name": cn}
        )
        self._save_revoked(state)
        if write:
            self.write_crl()
        return Revocation(serial=serial, reason=flag, revoked_at=now, common_name=cn)

    def revoke_name(
        self, name: str, *, reason: x509.ReasonFlags | str = x509.ReasonFlags.unspecified
    ) -> list[int]:
        """Revoke every unrevoked certificate issued to ``name`` (a kiosk id); return their serials."""
        revoked = {r.serial for r in self.revocations()}
        serials = [c.serial_number for c in self.issued(name=name) if c.serial_number not in revoked]
        for serial in serials:
            self.revoke(serial, reason=reason, write=False)
        self.write_crl()
        return serials

    def write_crl(self, *, days: float = DEFAULT_CRL_DAYS) -> x509.CertificateRevocationList:
        """Sign a fresh CRL with every revocation and write it (atomically) to ``crl.pem``."""
        state = self._load_revoked()
        state["crl_number"] = int(state.get("crl_number", 0)) + 1
        now = self._clock()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - _BACKDATE)
            .next_update(now + dt.timedelta(days=days))
            .add_extension(x509.CRLNumber(state["crl_number"]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )
        for entry in state["revoked"]:
            revoked = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(entry["serial"], 16))
                .revocation_date(dt.datetime.fromisoformat(entry["revoked_at"]))
                .add_extension(x509.CRLReason(x509.ReasonFlags[entry["reason"]]), critical=False)
                .build()
            )
            builder = builder.add_revoked_certificate(revoked)
        crl = builder.sign(self._key, hashes.SHA256())
        self._save_revoked(state)
        write_public(self.layout.crl, crl.public_bytes(serialization.Encoding.PEM))
        return crl

    def refresh_crl(
        self,
        *,
        within_days: float = DEFAULT_CRL_REFRESH_DAYS,
        force: bool = False,
        days: float = DEFAULT_CRL_DAYS,
    ) -> CrlRefresh:
        """Re-sign the CRL when its ``next_update`` is within ``within_days`` (or already past, or the
        file is missing or unreadable), or always with ``force``. The revocations stay as they are.

        The broker only reads the new file on a reload (SIGHUP).
        """
        now = self._clock()
        try:
            before: dt.datetime | None = crl_next_update(self.layout.crl)
        except PkiError:
            before = None
        if not force and before is not None and before - now > dt.timedelta(days=within_days):
            return CrlRefresh(refreshed=False, next_update=before, previous_next_update=before)
        crl = self.write_crl(days=days)
        return CrlRefresh(refreshed=True, next_update=crl.next_update_utc, previous_next_update=before)


@dataclass(frozen=True, slots=True)
class CrlRefresh:
    """What :meth:`HubCA.refresh_crl` did."""

    refreshed: bool
    next_update: dt.datetime
    previous_next_update: dt.datetime | None


def crl_next_update(crl_file: Path) -> dt.datetime:
    """The ``next_update`` of the PEM CRL in ``crl_file`` (aware UTC); :class:`PkiError` if unreadable."""
    try:
        crl = x509.load_pem_x509_crl(Path(crl_file).read_bytes())
    except FileNotFoundError:
        raise PkiError(f"no CRL at {crl_file}; run `antoan-provision ca refresh-crl --force`") from None
    except ValueError:
        raise PkiError(
            f"{crl_file} is not a PEM CRL; run `antoan-provision ca refresh-crl --force`"
        ) from None
    if crl.next_update_utc is None:
        raise PkiError(
            f"the CRL {crl_file} has no next update; re-sign it with `antoan-provision ca refresh-crl`"
        )
    return crl.next_update_utc


def crl_expiry_warning(ca_dir: Path, now: dt.datetime, *, within_days: float = CRL_WARN_DAYS) -> str | None:
    """A warning when the CRL in ``ca_dir`` is past or within ``within_days`` of its ``next_update``;
    None when it is fresh, or when ``ca_dir`` holds no CRL (no CA configured on this host)."""
    crl_file = CaLayout(Path(ca_dir)).crl
    if not crl_file.exists():
        return None
    try:
        next_update = crl_next_update(crl_file)
    except PkiError as exc:
        return f"{exc} (without a valid CRL the broker refuses every kiosk)"
    left = next_update - now
    if left > dt.timedelta(days=within_days):
        return None
    when = f"{next_update:%Y-%m-%d %H:%M} UTC"
    fix = (
        "run `antoan-provision ca refresh-crl` and reload the broker "
        "(daily: provisioning/systemd/antoan-crl-refresh.timer)"
    )
    if left <= dt.timedelta(0):
        return f"the CRL {crl_file} expired at {when}: the broker refuses every kiosk; {fix}"
    return (
        f"the CRL {crl_file} expires at {when} ({left.total_seconds() / 86400:.1f} days); after that the "
        f"broker refuses every kiosk: {fix}"
    )
