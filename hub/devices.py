"""Venues and enrolled kiosks: enrolment tokens, certificate issue and renewal, revocation, the fleet.

A district IT officer creates a single-use, expiring enrolment token for one kiosk id at one venue
(:func:`create_enrolment_token`); only its SHA-256 is stored. The kiosk redeems it once with a CSR for
a key it made itself (:func:`redeem`): the hub's CA signs the CSR with the kiosk id as CN, and the
token is spent in the same transaction (``UPDATE … WHERE used_at IS NULL`` wins exactly once, even
for two concurrent redeems). Before its certificate expires the kiosk renews over its existing
identity (:func:`renew`): it presents the current certificate and signs the new CSR with the current
key. :func:`revoke` cuts a kiosk off (devices row, CRL, and the broker's live session when the hub
knows how to reload the broker); the bridge reads :func:`revoked_kiosk_ids` to refuse its events.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Connection, Engine, insert, select, update

from hub.db import from_db_time, writing
from hub.db.schema import devices, enrolment_tokens, kiosks, venues
from provisioning.pki import CsrError, HubCA, PkiError, cert_pem, common_name, validate_kiosk_id

log = logging.getLogger(__name__)

#: Default of ``enrolment.ca_dir`` (relative to the hub's working directory).
DEFAULT_CA_DIR = Path("var/hub/ca")
DEFAULT_TOKEN_TTL = dt.timedelta(days=7)
#: Kiosk certificates are valid this long; kiosks renew within ``RENEW_BEFORE_DAYS`` of expiry.
DEFAULT_CERT_DAYS = 90
RENEW_BEFORE_DAYS = 30
#: Venue ids share the kiosk id rule (they appear in configuration and topics).
_TOKEN_BYTES = 15  # 120 bits: 24 base32 characters, short enough for a QR in alphanumeric mode
_VENUE_TYPES = ("office", "hospital", "clinic", "school", "market", "hotel", "restaurant", "other")


class DeviceError(Exception):
    """A venue, token or device operation was refused; ``code`` is stable, the message says what to do."""

    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class EnrolmentRefused(DeviceError, PermissionError):
    """A token or renewal proof that does not entitle the caller to a certificate."""

    code = "refused"


@dataclass(frozen=True, slots=True)
class EnrolmentSettings:
    """What the hub needs to enrol kiosks, resolved from ``HubConfig.enrolment``."""

    ca_dir: Path = DEFAULT_CA_DIR
    broker_host: str = "127.0.0.1"
    broker_port: int = 8883
    cert_days: int = DEFAULT_CERT_DAYS


def enrolment_settings(config: Any) -> EnrolmentSettings:
    """The enrolment settings of a HubConfig (``[enrolment]``); the broker host defaults to ``mqtt.host``."""
    section = config.enrolment
    return EnrolmentSettings(
        ca_dir=Path(section.ca_dir),
        broker_host=section.broker_host or config.mqtt.host,
        broker_port=section.broker_port,
        cert_days=section.cert_days,
    )


@dataclass(frozen=True, slots=True)
class NewToken:
    """A token as created: ``token`` is shown once and never stored."""

    token: str
    kiosk_id: str
    venue_id: str
    expires_at: dt.datetime
    approved: bool


@dataclass(frozen=True, slots=True)
class Enrolled:
    """What a kiosk receives from :func:`redeem` or :func:`renew`."""

    kiosk_id: str
    venue_id: str
    venue_name: str
    cert_pem: str
    ca_pem: str
    cert_not_after: dt.datetime
    broker_host: str
    broker_port: int


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    """A stored time as aware UTC, or None (SQLite gives naive datetimes back; every time stored is UTC)."""
    return None if value is None else from_db_time(value)


def token_digest(token: str) -> str:
    """SHA-256 hex of the normalised token (case and spaces do not matter to a person typing it)."""
    normal = "".join(token.split()).upper()
    return hashlib.sha256(normal.encode("ascii", "replace")).hexdigest()


def _venue_row(conn: Connection, venue_id: str):
    return conn.execute(select(venues).where(venues.c.venue_id == venue_id)).first()


# --------------------------------------------------------------------------------------- venues


def add_venue(
    conn: Connection,
    *,
    venue_id: str,
    name: str,
    venue_type: str = "other",
    province: str | None = None,
    district: str | None = None,
    address: str | None = None,
    now: dt.datetime,
) -> None:
    """Record a venue; its id follows the kiosk id rule (3-64 lowercase letters, digits, dashes)."""
    try:
        validate_kiosk_id(venue_id)
    except PkiError:
        raise DeviceError(
            f"venue id {venue_id!r} is not valid: use 3-64 lowercase letters, digits or dashes"
        ) from None
    if not name.strip():
        raise DeviceError("give the venue a name")
    if venue_type not in _VENUE_TYPES:
        raise DeviceError(f"venue type {venue_type!r} is unknown; use one of: {', '.join(_VENUE_TYPES)}")
    if _venue_row(conn, venue_id) is not None:
        raise DeviceError(f"venue {venue_id} already exists", code="exists")
    conn.execute(
        insert(venues).values(
            venue_id=venue_id,
            name=name.strip(),
            venue_type=venue_type,
            province=province,
            district=district,
            address=address,
            created_at=now,
        )
    )


def list_venues(conn: Connection) -> list[dict[str, Any]]:
    """Every venue, by id."""
    return [dict(r._mapping) for r in conn.execute(select(venues).order_by(venues.c.venue_id))]


# ---------------------------------------------------------------------------------------- tokens


def create_enrolment_token(
    conn: Connection,
    *,
    kiosk_id: str,
    venue_id: str,
    created_by: str,
    now: dt.datetime,
    ttl: dt.timedelta = DEFAULT_TOKEN_TTL,
    auto_approve: bool = False,
) -> NewToken:
    """Create a single-use token for ``kiosk_id`` at ``venue_id``; the clear token is returned once."""
    try:
        validate_kiosk_id(kiosk_id)
    except PkiError as exc:
        raise DeviceError(str(exc)) from None
    if ttl <= dt.timedelta(0):
        raise DeviceError("a token's lifetime must be positive")
    if _venue_row(conn, venue_id) is None:
        raise DeviceError(f"venue {venue_id} does not exist; add it first", code="unknown_venue")
    device = conn.execute(select(devices).where(devices.c.kiosk_id == kiosk_id)).first()
    if device is not None and device.revoked_at is not None:
        raise DeviceError(
            f"kiosk {kiosk_id} is revoked; enrol the replacement device under a new kiosk id",
            code="revoked",
        )
    if device is not None and device.venue_id != venue_id:
        raise DeviceError(
            f"kiosk {kiosk_id} is enrolled at venue {device.venue_id}, not {venue_id}", code="mismatch"
        )
    token = base64.b32encode(secrets.token_bytes(_TOKEN_BYTES)).decode("ascii")
    expires_at = now + ttl
    conn.execute(
        insert(enrolment_tokens).values(
            token_sha256=token_digest(token),
            kiosk_id=kiosk_id,
            venue_id=venue_id,
            created_by=created_by,
            created_at=now,
            expires_at=expires_at,
            approved_at=now if auto_approve else None,
            approved_by=created_by if auto_approve else None,
        )
    )
    return NewToken(token, kiosk_id, venue_id, expires_at, auto_approve)


def approve(conn: Connection, *, kiosk_id: str, approved_by: str, now: dt.datetime) -> int:
    """Approve every unused, unexpired, unapproved token of ``kiosk_id``; return how many."""
    result = conn.execute(
        update(enrolment_tokens)
        .where(
            enrolment_tokens.c.kiosk_id == kiosk_id,
            enrolment_tokens.c.used_at.is_(None),
            enrolment_tokens.c.approved_at.is_(None),
            enrolment_tokens.c.expires_at > now,
        )
        .values(approved_at=now, approved_by=approved_by)
    )
    if result.rowcount == 0:
        raise DeviceError(
            f"kiosk {kiosk_id} has no enrolment token waiting for approval "
            "(create one with `antoan-provision kiosk enrol`)",
            code="not_found",
        )
    return result.rowcount


def _refuse(code: str, message: str) -> EnrolmentRefused:
    return EnrolmentRefused(message, code=code)


def _why_unclaimed(row, now: dt.datetime) -> EnrolmentRefused:
    if row is None:
        return _refuse("unknown_token", "this enrolment token is unknown: check it or ask for a new one")
    if row.used_at is not None:
        return _refuse("token_used", "this enrolment token was already used; ask district IT for a new one")
    if _aware(row.expires_at) <= now:
        return _refuse("token_expired", "this enrolment token has expired; ask district IT for a new one")
    return _refuse(
        "not_approved",
        f"this enrolment token is not approved yet; ask district IT to approve kiosk {row.kiosk_id} "
        "and try again",
    )


def redeem(
    engine: Engine,
    *,
    token: str,
    csr_pem: bytes,
    ca: HubCA,
    now: dt.datetime,
    settings: EnrolmentSettings,
    kiosk_id: str | None = None,
    venue_id: str | None = None,
) -> Enrolled:
    """Spend ``token`` on a certificate for the CSR's key; raise :class:`EnrolmentRefused` with the reason.

    ``kiosk_id`` and ``venue_id``, when the device states them (its bundle names them), must be the
    token's. The token is spent and the device recorded in one transaction with the signing, so a
    refused CSR leaves the token unspent and two concurrent redeems give one certificate. Enrolling a
    kiosk id again (a new token) revokes its previous certificate as superseded.
    """
    digest = token_digest(token)
    with engine.begin() as conn:
        # The claim is the transaction's first statement, so it takes the write lock before reading
        # anything (SQLite) or waits on the row lock (PostgreSQL): only one redeem moves used_at from NULL.
        claimed = conn.execute(
            update(enrolment_tokens)
            .where(
                enrolment_tokens.c.token_sha256 == digest,
                enrolment_tokens.c.used_at.is_(None),
                enrolment_tokens.c.approved_at.is_not(None),
                enrolment_tokens.c.expires_at > now,
            )
            .values(used_at=now)
        )
        row = conn.execute(select(enrolment_tokens).where(enrolment_tokens.c.token_sha256 == digest)).first()
        if claimed.rowcount != 1:
            raise _why_unclaimed(row, now)
        # Any refusal below rolls the claim back: the token stays unspent.
        if kiosk_id is not None and kiosk_id != row.kiosk_id:
            raise _refuse("mismatch", f"this enrolment token is for another kiosk, not {kiosk_id}")
        if venue_id is not None and venue_id != row.venue_id:
            raise _refuse("mismatch", f"this enrolment token is for another venue, not {venue_id}")
        venue = _venue_row(conn, row.venue_id)
        if venue is None:
            raise _refuse("unknown_venue", f"venue {row.venue_id} no longer exists; ask district IT")
        device = conn.execute(select(devices).where(devices.c.kiosk_id == row.kiosk_id)).first()
        if device is not None and device.revoked_at is not None:
            raise _refuse("revoked", f"kiosk {row.kiosk_id} is revoked and cannot be enrolled again")
        if device is not None and device.venue_id != row.venue_id:
            raise _refuse("mismatch", f"kiosk {row.kiosk_id} is enrolled at another venue")
        try:
            cert = ca.sign_kiosk_csr(csr_pem, kiosk_id=row.kiosk_id, days=settings.cert_days)
        except CsrError as exc:
            raise DeviceError(str(exc), code="bad_csr") from None
        serial = f"{cert.serial_number:X}"
        conn.execute(
            update(enrolment_tokens).where(enrolment_tokens.c.id == row.id).values(used_cert_serial=serial)
        )
        values = {
            "venue_id": row.venue_id,
            "cert_serial": serial,
            "cert_not_after": cert.not_valid_after_utc,
            "enrolled_at": now,
        }
        if device is None:
            conn.execute(insert(devices).values(kiosk_id=row.kiosk_id, **values))
        else:
            conn.execute(update(devices).where(devices.c.kiosk_id == row.kiosk_id).values(**values))
    if device is not None and device.cert_serial and device.cert_serial != serial:
        # Re-enrolment (a re-imaged card, a replaced board): the old identity must not live on.
        ca.revoke(int(device.cert_serial, 16), reason="superseded")
    log.info("kiosk %s enrolled at %s (certificate %s)", row.kiosk_id, row.venue_id, serial)
    return _enrolled(row.kiosk_id, venue, cert, ca, settings)


def _enrolled(
    kiosk_id: str, venue, cert: x509.Certificate, ca: HubCA, settings: EnrolmentSettings
) -> Enrolled:
    return Enrolled(
        kiosk_id=kiosk_id,
        venue_id=venue.venue_id,
        venue_name=venue.name,
        cert_pem=cert_pem(cert).decode("ascii"),
        ca_pem=cert_pem(ca.cert).decode("ascii"),
        cert_not_after=cert.not_valid_after_utc,
        broker_host=settings.broker_host,
        broker_port=settings.broker_port,
    )


# --------------------------------------------------------------------------------------- renewal


def renewal_signature(key: ec.EllipticCurvePrivateKey, csr_pem: bytes) -> str:
    """The proof a kiosk sends with a renewal: its current key's ECDSA signature over the new CSR."""
    return base64.b64encode(key.sign(csr_pem, ec.ECDSA(hashes.SHA256()))).decode("ascii")


def renew(
    engine: Engine,
    *,
    cert_pem_text: bytes,
    csr_pem: bytes,
    signature: str,
    ca: HubCA,
    now: dt.datetime,
    settings: EnrolmentSettings,
) -> Enrolled:
    """A new certificate for the kiosk that holds a current one: the presented certificate must be this
    CA's, unexpired, unrevoked, the one the devices row records, and ``signature`` must be its key's
    signature over ``csr_pem``. The old certificate stays valid until it expires.

    Idempotent for a lost answer: when the presented certificate is an older one of the same kiosk and
    the CSR is for the key of the certificate the devices row already records (the kiosk keeps its new
    key until the answer arrives, then asks again with the same key), that certificate is sent again
    instead of a refusal; no second certificate is issued. A CSR for any other key is refused as
    ``superseded``."""
    try:
        current = x509.load_pem_x509_certificate(cert_pem_text)
    except ValueError:
        raise _refuse("bad_certificate", "the presented certificate is not a PEM certificate") from None
    try:
        current.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        raise _refuse(
            "bad_certificate", "the presented certificate was not issued by this hub's CA"
        ) from None
    kiosk_id = common_name(current) or ""
    if not (current.not_valid_before_utc <= now < current.not_valid_after_utc):
        raise _refuse("cert_expired", "the presented certificate has expired; enrol the kiosk again")
    if ca.is_revoked(current.serial_number):
        raise _refuse("revoked", f"the certificate of {kiosk_id} is revoked")
    public_key = current.public_key()
    try:
        raw = base64.b64decode(signature, validate=True)
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise InvalidSignature
        public_key.verify(raw, csr_pem, ec.ECDSA(hashes.SHA256()))
    except (ValueError, InvalidSignature):
        raise _refuse("bad_proof", "the renewal is not signed with the presented certificate's key") from None
    # Reads, then writes: begun with the write lock on SQLite (hub.db.writing), else a commit by the
    # ingest in between makes SQLite refuse the update at once ("database is locked").
    with writing(engine).begin() as conn:
        device = conn.execute(select(devices).where(devices.c.kiosk_id == kiosk_id)).first()
        if device is None:
            raise _refuse("unknown_kiosk", f"kiosk {kiosk_id} is not enrolled")
        if device.revoked_at is not None:
            raise _refuse("revoked", f"kiosk {kiosk_id} is revoked")
        venue = _venue_row(conn, device.venue_id)
        if not hmac.compare_digest(device.cert_serial or "", f"{current.serial_number:X}"):
            already = _renewal_already_issued(ca, device.cert_serial, current, csr_pem, now)
            if already is None:
                raise _refuse(
                    "superseded", f"this is not kiosk {kiosk_id}'s current certificate; use the newest one"
                )
            log.info("kiosk %s asked again for its renewal (%X): sent again", kiosk_id, already.serial_number)
            return _enrolled(kiosk_id, venue, already, ca, settings)
        try:
            cert = ca.sign_kiosk_csr(csr_pem, kiosk_id=kiosk_id, days=settings.cert_days)
        except CsrError as exc:
            raise DeviceError(str(exc), code="bad_csr") from None
        moved = conn.execute(
            update(devices)
            .where(devices.c.kiosk_id == kiosk_id, devices.c.cert_serial == device.cert_serial)
            .values(cert_serial=f"{cert.serial_number:X}", cert_not_after=cert.not_valid_after_utc)
        )
        if moved.rowcount != 1:
            # Another renewal of this kiosk committed in between; this certificate is not recorded, so
            # the kiosk must not use it. Its retry (same key) gets the recorded one.
            raise _refuse("superseded", f"kiosk {kiosk_id} renewed at the same time elsewhere; try again")
    log.info("kiosk %s renewed its certificate (%X)", kiosk_id, cert.serial_number)
    return _enrolled(kiosk_id, venue, cert, ca, settings)


def _public_der(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _renewal_already_issued(
    ca: HubCA, recorded_serial: str | None, presented: x509.Certificate, csr_pem: bytes, now: dt.datetime
) -> x509.Certificate | None:
    """The certificate the devices row records, if it answers this renewal already: issued to the same
    kiosk after the presented one, for the CSR's key, unrevoked and unexpired. Else None."""
    if not recorded_serial:
        return None
    recorded = ca.issued_cert(int(recorded_serial, 16))
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        return None
    if recorded is None or not csr.is_signature_valid:
        return None
    same_kiosk = common_name(recorded) == common_name(presented)
    later = recorded.not_valid_before_utc >= presented.not_valid_before_utc
    valid = recorded.not_valid_before_utc <= now < recorded.not_valid_after_utc
    same_key = hmac.compare_digest(_public_der(recorded.public_key()), _public_der(csr.public_key()))
    if same_kiosk and later and valid and same_key and not ca.is_revoked(recorded.serial_number):
        return recorded
    return None


# ------------------------------------------------------------------------------------ revocation


def revoke(
    engine: Engine,
    *,
    kiosk_id: str,
    reason: str,
    ca: HubCA,
    now: dt.datetime,
    crl_reason: str = "unspecified",
    drop_session: Callable[[HubCA, str], Any] | None = None,
) -> list[int]:
    """Cut ``kiosk_id`` off: mark the device revoked (the bridge refuses its events from then on),
    revoke its certificates in the CRL, and, with ``drop_session`` (e.g. a wrapper of
    :func:`provisioning.broker.revoke_kiosk`), reload the broker and close its live session.
    Returns the serials revoked now."""
    with writing(engine).begin() as conn:  # reads, then writes (see renew)
        device = conn.execute(select(devices).where(devices.c.kiosk_id == kiosk_id)).first()
        if device is None:
            raise DeviceError(f"kiosk {kiosk_id} is not enrolled; check the kiosk id", code="not_found")
        if device.revoked_at is None:
            conn.execute(
                update(devices)
                .where(devices.c.kiosk_id == kiosk_id)
                .values(revoked_at=now, revoked_reason=reason[:200])
            )
    if drop_session is not None:
        serials = drop_session(ca, kiosk_id)
    else:
        serials = ca.revoke_name(kiosk_id, reason=crl_reason)
    log.info("kiosk %s revoked (%d certificate(s))", kiosk_id, len(serials))
    return list(serials)


def revoked_kiosk_ids(conn: Connection) -> set[str]:
    """Ids of every revoked kiosk (the bridge refuses their events)."""
    return set(conn.execute(select(devices.c.kiosk_id).where(devices.c.revoked_at.is_not(None))).scalars())


# ----------------------------------------------------------------------------------------- fleet


@dataclass(frozen=True, slots=True)
class FleetRow:
    """One kiosk as district IT sees it: enrolment, certificate and last reported state."""

    kiosk_id: str
    venue_id: str | None
    venue_name: str | None
    status: str  # online, offline, never seen, revoked
    last_seen: dt.datetime | None
    version: str | None
    outbox_depth: int | None
    oldest_unacked_age_s: float | None
    list_ages: dict[str, float | None]
    cert_not_after: dt.datetime | None
    revoked_at: dt.datetime | None

    def cert_days_left(self, now: dt.datetime) -> float | None:
        if self.cert_not_after is None:
            return None
        return (self.cert_not_after - now).total_seconds() / 86400


def fleet(conn: Connection) -> list[FleetRow]:
    """Every enrolled kiosk, and every kiosk that reported state without being enrolled, by kiosk id."""
    enrolled = conn.execute(
        select(devices, venues.c.name.label("venue_name"))
        .select_from(devices.outerjoin(venues, venues.c.venue_id == devices.c.venue_id))
        .order_by(devices.c.kiosk_id)
    ).all()
    states = {r.kiosk_id: r for r in conn.execute(select(kiosks))}
    rows: dict[str, FleetRow] = {}
    for d in enrolled:
        rows[d.kiosk_id] = _fleet_row(d.kiosk_id, d, states.get(d.kiosk_id))
    for kiosk_id, state in states.items():
        if kiosk_id not in rows:
            rows[kiosk_id] = _fleet_row(kiosk_id, None, state)
    return [rows[k] for k in sorted(rows)]


def _fleet_row(kiosk_id: str, device, state) -> FleetRow:
    revoked_at = _aware(device.revoked_at) if device is not None else None
    if revoked_at is not None:
        status = "revoked"
    elif state is None:
        status = "never seen"
    else:
        status = state.status
    return FleetRow(
        kiosk_id=kiosk_id,
        venue_id=device.venue_id if device is not None else None,
        venue_name=device.venue_name if device is not None else None,
        status=status,
        last_seen=_aware(state.last_seen) if state is not None else None,
        version=state.version if state is not None else None,
        outbox_depth=state.outbox_depth if state is not None else None,
        oldest_unacked_age_s=state.oldest_unacked_age_s if state is not None else None,
        list_ages=dict(state.list_ages or {}) if state is not None else {},
        cert_not_after=_aware(device.cert_not_after) if device is not None else None,
        revoked_at=revoked_at,
    )
