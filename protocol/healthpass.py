"""Health pass codec: the hub issues signed passes as QR text, kiosks verify them offline.

Modelled on the EU Digital COVID Certificate chain, with a prefix of our own::

    text = PREFIX + Base45(zlib(COSE_Sign1(CWT claims)))

* Base45 (RFC 9285) output and the prefix use only the QR alphanumeric set, so the QR code is generated
  in alphanumeric mode.
* COSE_Sign1 (RFC 9052), CBOR tag 18: ``[protected bstr {1: alg}, unprotected {4: kid}, payload bstr,
  signature]``; the signature covers ``["Signature1", protected, b"", payload]``.
  ``alg`` is ES256 (-7, raw ``r || s``, 64 bytes) or EdDSA (-8, Ed25519, 64 bytes).
* ``kid`` = the first 8 bytes of SHA-256 of the public key's SubjectPublicKeyInfo DER.

CWT claims (CBOR map with integer keys):

=========  ==============  ==============================================================
key        name            value
=========  ==============  ==============================================================
1          iss             issuer, text (e.g. the hub's name)
2          sub             pass id, text (the key of the status list)
4          exp             expiry, integer seconds since the Unix epoch (UTC)
6          iat             issue time, integer seconds since the Unix epoch (UTC)
-70001     colour          text: ``green`` / ``yellow`` / ``red``
-70002     kind            text: ``ncovi`` (domestic declaration) / ``vhd`` (entrant declaration)
-70003     initials        text, 1 to 8 letters (e.g. ``NTA``); full names never go in a pass
-70004     birth year      integer
=========  ==============  ==============================================================

Unknown claims are ignored (room for later additions); a missing or wrongly typed claim is
``MALFORMED``. Verification order: text -> Base45 -> zlib -> COSE structure -> key by kid (one dict
lookup, never a loop over keys) -> signature -> claims -> key validity window (against ``iat``) ->
``iat`` / ``exp`` against ``now`` -> status list. Every failure is a :class:`PassError` whose ``reason``
the kiosk maps to a verdict text.

The trust list travels as the retained MQTT message ``antoan/v1/broadcast/trust`` and the status list
as 32 retained shards ``antoan/v1/broadcast/status/<c>``, one per first character ``c`` of the pass id
(JSON, see :meth:`TrustList.to_json` and :meth:`StatusList.to_json`). One message would pass the broker's
1 MiB limit at about 47,000 entries, and a large F2 flags several times that; a kiosk puts the shards
back together in a :class:`StatusShards`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

PREFIX = "AT1:"

#: Longest pass text accepted, in characters (a version-40 QR holds 4296 alphanumeric characters).
MAX_TEXT_CHARS = 4096
#: Largest decompressed COSE structure; a zlib stream that inflates beyond this is rejected unread.
MAX_COSE_BYTES = 16 * 1024
#: Largest trust-list or status-list JSON accepted.
MAX_LIST_JSON_BYTES = 16 * 1024 * 1024
#: Length of a key id.
KID_BYTES = 8
#: Crockford's base32, digits and letters without I, L, O, U (nothing to mistake for 1, 0 or a word):
#: the alphabet of canonical pass ids (the ``sub`` claim). The hub draws them at random, so their first
#: character also spreads the status list evenly over its 32 shards.
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

#: The QR alphanumeric set, in Base45 value order (RFC 9285, table 1).
BASE45_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_B45_VALUE = {c: i for i, c in enumerate(BASE45_ALPHABET)}

Alg = Literal["ES256", "EdDSA"]
_COSE_ALG: dict[int, Alg] = {-7: "ES256", -8: "EdDSA"}
_COSE_ALG_ID: dict[str, int] = {name: ident for ident, name in _COSE_ALG.items()}
_ES256_HALF = 32
_SIGNATURE_BYTES = 64
_COSE_SIGN1_TAG = 18
_HDR_ALG, _HDR_CRIT, _HDR_KID = 1, 2, 4

CLAIM_ISS = 1
CLAIM_SUB = 2
CLAIM_EXP = 4
CLAIM_IAT = 6
CLAIM_COLOUR = -70001
CLAIM_KIND = -70002
CLAIM_INITIALS = -70003
CLAIM_BIRTH_YEAR = -70004

_MIN_TIMESTAMP = 0
_MAX_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z
_MAX_ID_CHARS = 128
_MAX_INITIALS = 8
_MIN_BIRTH_YEAR = 1900

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class Reason(StrEnum):
    """Why a pass was refused (or, for ``FLAGGED``, why its colour differs from the signed one)."""

    NOT_OURS = "not_ours"  # not an AnToan pass (e.g. an EU "HC1:" certificate, a URL, a CCCD)
    MALFORMED = "malformed"  # bad Base45 / zlib / CBOR / COSE structure, wrong claim types, too big
    TRUNCATED = "truncated"  # data cut short (Base45 length, incomplete zlib stream, CBOR premature end)
    UNKNOWN_KEY = "unknown_key"  # kid not in the trust list (update it, or the pass is not from our hub)
    BAD_SIGNATURE = "bad_signature"  # signature does not verify: tampered or forged
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"  # iat in the future beyond the clock-skew allowance
    KEY_NOT_VALID = "key_not_valid"  # kid known, but the pass was issued outside the key's window
    FLAGGED = "flagged"  # the status list changed the colour; not a failure of the code itself


class PassError(ValueError):
    """A pass that cannot be accepted; ``reason`` is a :class:`Reason`, ``detail`` one English line."""

    def __init__(self, reason: Reason, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class Colour(StrEnum):
    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"

    @property
    def severity(self) -> int:
        """0 for green, 1 for yellow, 2 for red."""
        return _SEVERITY[self]

    @staticmethod
    def worst(a: Colour | str, b: Colour | str) -> Colour:
        """The more severe of two colours (red > yellow > green)."""
        ca, cb = Colour(a), Colour(b)
        return ca if _SEVERITY[ca] >= _SEVERITY[cb] else cb


_SEVERITY = {Colour.GREEN: 0, Colour.YELLOW: 1, Colour.RED: 2}


class PassKind(StrEnum):
    NCOVI = "ncovi"
    VHD = "vhd"


# --------------------------------------------------------------------------------------------- times


def _utc(value: datetime, what: str, *, whole_seconds: bool = False) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, e.g. datetime.now(UTC)")
    value = value.astimezone(UTC)
    return value.replace(microsecond=0) if whole_seconds else value


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _from_timestamp(value: int) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


# --------------------------------------------------------------------------------------------- claims


@dataclass(frozen=True, slots=True)
class PassClaims:
    """What a pass says. Times are normalised to UTC whole seconds (CWT times are integer seconds).

    ``expires_at`` is not required to follow ``issued_at``: such a pass is simply never valid
    (:func:`verify_pass` reports ``EXPIRED``), which is also how tests build expired passes.
    """

    pass_id: str
    colour: Colour
    kind: PassKind
    initials: str
    birth_year: int
    issuer: str
    issued_at: datetime
    expires_at: datetime

    def __post_init__(self) -> None:
        _check_text(self.pass_id, "pass_id", _MAX_ID_CHARS)
        _check_text(self.issuer, "issuer", _MAX_ID_CHARS)
        object.__setattr__(self, "colour", _enum(Colour, self.colour, "colour"))
        object.__setattr__(self, "kind", _enum(PassKind, self.kind, "kind"))
        if not isinstance(self.initials, str) or not (
            1 <= len(self.initials) <= _MAX_INITIALS and self.initials.isalpha()
        ):
            raise ValueError(
                f"initials must be 1 to {_MAX_INITIALS} letters such as 'NTA' (never a full name), "
                f"got {self.initials!r}"
            )
        issued = _utc(self.issued_at, "issued_at", whole_seconds=True)
        expires = _utc(self.expires_at, "expires_at", whole_seconds=True)
        object.__setattr__(self, "issued_at", issued)
        object.__setattr__(self, "expires_at", expires)
        if type(self.birth_year) is not int or not _MIN_BIRTH_YEAR <= self.birth_year <= issued.year:
            raise ValueError(
                f"birth_year must be an integer between {_MIN_BIRTH_YEAR} and the issue year "
                f"{issued.year}, got {self.birth_year!r}"
            )

    def to_cbor_map(self) -> dict[int, Any]:
        """The CWT claims map (see the module docstring for the keys)."""
        return {
            CLAIM_ISS: self.issuer,
            CLAIM_SUB: self.pass_id,
            CLAIM_EXP: int(self.expires_at.timestamp()),
            CLAIM_IAT: int(self.issued_at.timestamp()),
            CLAIM_COLOUR: self.colour.value,
            CLAIM_KIND: self.kind.value,
            CLAIM_INITIALS: self.initials,
            CLAIM_BIRTH_YEAR: self.birth_year,
        }


def _check_text(value: object, what: str, limit: int) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        raise ValueError(f"{what} must be text of 1 to {limit} characters, got {value!r:.80}")


def _enum(cls: type[Colour] | type[PassKind], value: object, what: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise ValueError(f"{what} must be one of {allowed}, got {value!r:.40}") from None


# --------------------------------------------------------------------------------------------- keys


def _spki_der(public_key: PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def kid_for(public_key: PublicKey) -> bytes:
    """The key id of a public key: the first 8 bytes of SHA-256 of its SubjectPublicKeyInfo DER."""
    return hashlib.sha256(_spki_der(public_key)).digest()[:KID_BYTES]


def _alg_of(key: PrivateKey | PublicKey) -> Alg:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and isinstance(
        key.curve, ec.SECP256R1
    ):
        return "ES256"
    raise ValueError(f"unsupported key type {type(key).__name__}: use a P-256 (ES256) or Ed25519 (EdDSA) key")


def _check_alg(alg: str, key: PrivateKey | PublicKey) -> None:
    if alg not in _COSE_ALG_ID:
        raise ValueError(f"alg must be 'ES256' or 'EdDSA', got {alg!r}")
    actual = _alg_of(key)
    if actual != alg:
        raise ValueError(f"alg {alg!r} does not match the key, which is a {actual} key")


@dataclass(frozen=True)
class SigningKey:
    """The hub's private signing key. ``kid`` is derived from the public key when left empty."""

    private_key: PrivateKey = field(repr=False)
    alg: Alg
    kid: bytes = b""

    def __post_init__(self) -> None:
        _check_alg(self.alg, self.private_key)
        derived = kid_for(self.private_key.public_key())
        if not self.kid:
            object.__setattr__(self, "kid", derived)
        elif self.kid != derived:
            raise ValueError(f"kid {self.kid.hex()} does not match the key (expected {derived.hex()})")

    @classmethod
    def generate(cls, alg: Alg = "ES256") -> SigningKey:
        """A fresh key: P-256 for ``"ES256"``, Ed25519 for ``"EdDSA"``."""
        if alg == "ES256":
            return cls(ec.generate_private_key(ec.SECP256R1()), "ES256")
        if alg == "EdDSA":
            return cls(ed25519.Ed25519PrivateKey.generate(), "EdDSA")
        raise ValueError(f"alg must be 'ES256' or 'EdDSA', got {alg!r}")

    def to_pem(self, passphrase: bytes | str | None = None) -> bytes:
        """PKCS#8 PEM, encrypted with ``passphrase`` when one is given."""
        encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
        if passphrase:
            encryption = serialization.BestAvailableEncryption(_passphrase_bytes(passphrase))
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    @classmethod
    def from_pem(cls, data: bytes | str, passphrase: bytes | str | None = None) -> SigningKey:
        """Load a PKCS#8 PEM written by :meth:`to_pem`; raise ``ValueError`` saying what is wrong."""
        raw = data.encode() if isinstance(data, str) else data
        try:
            key = serialization.load_pem_private_key(
                raw, _passphrase_bytes(passphrase) if passphrase else None
            )
        except TypeError as exc:  # cryptography: password given but not encrypted, or missing
            raise ValueError(f"cannot load the signing key: {exc}") from None
        except ValueError as exc:
            raise ValueError(
                f"cannot load the signing key (wrong passphrase or not a PEM private key): {exc}"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise ValueError(f"unsupported key type {type(key).__name__}: use a P-256 or Ed25519 key")
        return cls(key, _alg_of(key))

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key()

    def public_pem(self) -> bytes:
        """The public key as SubjectPublicKeyInfo PEM (what goes to the trust list)."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def trusted(self, not_before: datetime, not_after: datetime) -> TrustedKey:
        """The trust-list entry for this key, accepting passes issued in ``[not_before, not_after]``."""
        return TrustedKey(self.kid, self.alg, self.public_key, not_before, not_after)

    def sign(self, data: bytes) -> bytes:
        """Raw COSE signature of ``data``: ``r || s`` (64 bytes) for ES256, Ed25519 for EdDSA."""
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            return self.private_key.sign(data)
        r, s = decode_dss_signature(self.private_key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(_ES256_HALF, "big") + s.to_bytes(_ES256_HALF, "big")


def _passphrase_bytes(passphrase: bytes | str) -> bytes:
    return passphrase.encode() if isinstance(passphrase, str) else passphrase


@dataclass(frozen=True)
class TrustedKey:
    """A public key the kiosks trust for passes issued between ``not_before`` and ``not_after``."""

    kid: bytes
    alg: Alg
    public_key: PublicKey
    not_before: datetime
    not_after: datetime

    def __post_init__(self) -> None:
        _check_alg(self.alg, self.public_key)
        derived = kid_for(self.public_key)
        if self.kid != derived:
            raise ValueError(f"kid {self.kid.hex()} does not match the key (expected {derived.hex()})")
        nb = _utc(self.not_before, "not_before")
        na = _utc(self.not_after, "not_after")
        if na < nb:
            raise ValueError(f"not_after {_iso(na)} is before not_before {_iso(nb)}")
        object.__setattr__(self, "not_before", nb)
        object.__setattr__(self, "not_after", na)

    def covers(self, when: datetime) -> bool:
        """True when ``when`` lies inside the key's validity window (bounds included)."""
        return self.not_before <= when <= self.not_after

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True when ``signature`` (raw COSE form) is valid for ``data`` under this key."""
        if len(signature) != _SIGNATURE_BYTES:
            return False
        try:
            if isinstance(self.public_key, ed25519.Ed25519PublicKey):
                self.public_key.verify(signature, data)
            else:
                r = int.from_bytes(signature[:_ES256_HALF], "big")
                s = int.from_bytes(signature[_ES256_HALF:], "big")
                self.public_key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


# --------------------------------------------------------------------------------------------- lists


def _list_error(what: str, detail: str) -> PassError:
    return PassError(Reason.MALFORMED, f"{what}: {detail}")


def _load_json_object(data: bytes | str, what: str) -> dict[str, Any]:
    if len(data) > MAX_LIST_JSON_BYTES:
        raise _list_error(what, f"{len(data)} bytes exceeds the limit of {MAX_LIST_JSON_BYTES}")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _list_error(what, f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise _list_error(what, f"expected a JSON object, got {type(obj).__name__}")
    if obj.get("v") != 1:
        raise _list_error(what, f"unsupported format version {obj.get('v')!r}: expected 1 (update the kiosk)")
    return obj


def _json_field(obj: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    if name not in obj:
        raise _list_error(what, f"field {name!r} is missing")
    value = obj[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise _list_error(what, f"field {name!r} must be {expected}, got {type(value).__name__}")
    return value


def _json_time(obj: Mapping[str, Any], name: str, what: str) -> datetime:
    text = _json_field(obj, name, str, what)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _list_error(what, f"field {name!r} is not an ISO 8601 time: {text!r:.40}") from None
    if value.tzinfo is None:
        raise _list_error(what, f"field {name!r} must carry a UTC offset (e.g. 'Z'): {text!r:.40}")
    return value.astimezone(UTC)


def _json_version(obj: Mapping[str, Any], what: str) -> int:
    version = _json_field(obj, "version", int, what)
    if version < 0:
        raise _list_error(what, f"field 'version' must not be negative, got {version}")
    return version


class TrustList:
    """Public keys the kiosks accept, by kid (a pass's key is found with one dict lookup).

    Published by the hub as the retained message ``antoan/v1/broadcast/trust``.
    """

    __slots__ = ("issued_at", "keys", "version")

    def __init__(
        self,
        keys: Iterable[TrustedKey] | Mapping[bytes, TrustedKey],
        version: int,
        issued_at: datetime,
    ):
        if isinstance(keys, Mapping):
            for kid, key in keys.items():
                if kid != key.kid:
                    raise ValueError(f"trust list entry {kid.hex()} holds the key of kid {key.kid.hex()}")
            keys = keys.values()
        by_kid: dict[bytes, TrustedKey] = {}
        for key in keys:
            if key.kid in by_kid:
                raise ValueError(f"kid {key.kid.hex()} appears twice in the trust list")
            by_kid[key.kid] = key
        if type(version) is not int or version < 0:
            raise ValueError(f"version must be a non-negative integer, got {version!r}")
        self.keys: dict[bytes, TrustedKey] = by_kid
        self.version = version
        self.issued_at = _utc(issued_at, "issued_at")

    def get(self, kid: bytes) -> TrustedKey | None:
        """The trusted key with this kid, or None."""
        return self.keys.get(kid)

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self.keys

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrustList):
            return NotImplemented
        return (self.version, self.issued_at, self.keys) == (other.version, other.issued_at, other.keys)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        kids = ", ".join(k.hex() for k in self.keys)
        return f"TrustList(version={self.version}, issued_at={_iso(self.issued_at)}, kids=[{kids}])"

    def to_json(self) -> bytes:
        """JSON: ``{"v":1,"version":n,"issued_at":iso,"keys":[{"kid":hex,"alg",...,"public_key":b64}]}``."""
        keys = [
            {
                "kid": key.kid.hex(),
                "alg": key.alg,
                "public_key": base64.b64encode(_spki_der(key.public_key)).decode("ascii"),
                "not_before": _iso(key.not_before),
                "not_after": _iso(key.not_after),
            }
            for key in self.keys.values()
        ]
        doc = {"v": 1, "version": self.version, "issued_at": _iso(self.issued_at), "keys": keys}
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> TrustList:
        """Parse :meth:`to_json` output; raise :class:`PassError` (``MALFORMED``) saying what is wrong."""
        what = "trust list"
        obj = _load_json_object(data, what)
        version = _json_version(obj, what)
        issued_at = _json_time(obj, "issued_at", what)
        entries = _json_field(obj, "keys", list, what)
        keys: dict[bytes, TrustedKey] = {}
        for i, entry in enumerate(entries):
            where = f"{what} keys[{i}]"
            if not isinstance(entry, dict):
                raise _list_error(where, f"expected an object, got {type(entry).__name__}")
            key = _trusted_key_from_json(entry, where)
            if key.kid in keys:
                raise _list_error(where, f"kid {key.kid.hex()} appears twice")
            keys[key.kid] = key
        return cls(keys, version, issued_at)


def _trusted_key_from_json(entry: Mapping[str, Any], where: str) -> TrustedKey:
    kid_hex = _json_field(entry, "kid", str, where)
    alg = _json_field(entry, "alg", str, where)
    b64 = _json_field(entry, "public_key", str, where)
    not_before = _json_time(entry, "not_before", where)
    not_after = _json_time(entry, "not_after", where)
    try:
        kid = bytes.fromhex(kid_hex)
    except ValueError:
        raise _list_error(where, f"kid is not hex: {kid_hex!r:.40}") from None
    try:
        der = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise _list_error(where, "public_key is not base64") from None
    try:
        public_key = serialization.load_der_public_key(der)
    except (ValueError, TypeError) as exc:
        raise _list_error(where, f"public_key is not a SubjectPublicKeyInfo DER key ({exc})") from None
    if not isinstance(public_key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise _list_error(where, f"unsupported key type {type(public_key).__name__}")
    try:
        return TrustedKey(kid, alg, public_key, not_before, not_after)  # type: ignore[arg-type]
    except ValueError as exc:
        raise _list_error(where, str(exc)) from None


class StatusList:
    """Passes whose colour changed after issue (e.g. a new F1), by pass id.

    The hub builds the whole list (also served over HTTP) and publishes :meth:`shards`, each as the
    retained message ``antoan/v1/broadcast/status/<shard>``. A shard holds only pass ids starting with
    its symbol, so a kiosk knows which shard answers for a pass.
    """

    __slots__ = ("colours", "issued_at", "shard", "version")

    def __init__(
        self,
        version: int,
        issued_at: datetime,
        colours: Mapping[str, Colour | str] | None = None,
        *,
        shard: str | None = None,
    ):
        if type(version) is not int or version < 0:
            raise ValueError(f"version must be a non-negative integer, got {version!r}")
        if shard is not None and (not isinstance(shard, str) or len(shard) != 1 or shard not in CROCKFORD):
            raise ValueError(f"shard must be one Crockford base32 symbol, got {shard!r:.40}")
        self.version = version
        self.issued_at = _utc(issued_at, "issued_at")
        self.shard = shard
        self.colours: dict[str, Colour] = {}
        for pass_id, colour in (colours or {}).items():
            _check_text(pass_id, "pass id", _MAX_ID_CHARS)
            if shard is not None and pass_id[0] != shard:
                raise ValueError(f"pass id {pass_id!r:.40} does not belong in shard {shard!r}")
            self.colours[pass_id] = _enum(Colour, colour, f"colour of pass {pass_id!r}")

    def colour_for(self, pass_id: str) -> Colour | None:
        """The listed colour of a pass, or None when its colour has not changed since issue."""
        return self.colours.get(pass_id)

    def shards(self) -> list[StatusList]:
        """The 32 shards in :data:`CROCKFORD` order, with this list's version and issue time.

        Empty shards are included: a shard whose last entry was removed must be republished empty, or
        the broker would keep handing out its old retained entries. Raises ValueError for a pass id that
        starts with no Crockford symbol (the hub only lists canonical ids).
        """
        if self.shard is not None:
            raise ValueError(f"shard {self.shard!r} is already one shard of the status list")
        split: dict[str, dict[str, Colour]] = {symbol: {} for symbol in CROCKFORD}
        for pass_id, colour in self.colours.items():
            bucket = split.get(pass_id[0])
            if bucket is None:
                raise ValueError(f"pass id {pass_id!r:.40} is not canonical: it belongs in no shard")
            bucket[pass_id] = colour
        return [StatusList(self.version, self.issued_at, split[s], shard=s) for s in CROCKFORD]

    def __len__(self) -> int:
        return len(self.colours)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StatusList):
            return NotImplemented
        return (self.version, self.issued_at, self.shard, self.colours) == (
            other.version,
            other.issued_at,
            other.shard,
            other.colours,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        where = "" if self.shard is None else f"shard={self.shard}, "
        return (
            f"StatusList({where}version={self.version}, issued_at={_iso(self.issued_at)}, {len(self)} passes)"
        )

    def to_json(self) -> bytes:
        """JSON: ``{"v":1,"version":n,"issued_at":iso,"colours":{pass_id: colour}}``, plus ``"shard":c``
        for a shard."""
        doc: dict[str, Any] = {"v": 1, "version": self.version, "issued_at": _iso(self.issued_at)}
        if self.shard is not None:
            doc["shard"] = self.shard
        doc["colours"] = {pid: c.value for pid, c in self.colours.items()}
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> StatusList:
        """Parse :meth:`to_json` output; raise :class:`PassError` (``MALFORMED``) saying what is wrong."""
        what = "status list"
        obj = _load_json_object(data, what)
        version = _json_version(obj, what)
        issued_at = _json_time(obj, "issued_at", what)
        shard = _json_field(obj, "shard", str, what) if "shard" in obj else None
        colours = _json_field(obj, "colours", dict, what)
        try:
            return cls(version, issued_at, colours, shard=shard)
        except ValueError as exc:
            raise _list_error(what, str(exc)) from None


class StatusShards:
    """The status list as a kiosk holds it: the newest shard received for each symbol.

    Offers what verification and the kiosk state read from a :class:`StatusList`. Shards arrive one by
    one and in any order, so until all 32 are here (:attr:`complete`) a pass of a missing shard simply
    has no listed colour. Reads are safe from any thread: :meth:`add` swaps in a new mapping rather than
    changing the one a reader may be iterating.
    """

    __slots__ = ("_by_symbol",)

    def __init__(self, shards: Iterable[StatusList] = ()):
        self._by_symbol: dict[str, StatusList] = {}
        for shard in shards:
            self.add(shard)

    def add(self, shard: StatusList) -> bool:
        """Keep this shard unless the one held for its symbol is newer; True when it was kept."""
        if shard.shard is None:
            raise ValueError("a whole status list is not a shard: split it with StatusList.shards()")
        held = self._by_symbol.get(shard.shard)
        if held is not None and shard.version < held.version:
            return False
        self._by_symbol = {**self._by_symbol, shard.shard: shard}
        return True

    def get(self, symbol: str) -> StatusList | None:
        """The shard held for a symbol, or None."""
        return self._by_symbol.get(symbol)

    def colour_for(self, pass_id: str) -> Colour | None:
        """The listed colour of a pass from its shard; None when unlisted or the shard is not here yet."""
        shard = self._by_symbol.get(pass_id[:1])
        return shard.colour_for(pass_id) if shard is not None else None

    @property
    def held(self) -> int:
        """How many of the 32 shards are here."""
        return len(self._by_symbol)

    @property
    def complete(self) -> bool:
        """True once a shard for every symbol is here."""
        return len(self._by_symbol) == len(CROCKFORD)

    @property
    def version(self) -> int | None:
        """The lowest version held (the list is at least this new everywhere it is held); None if empty."""
        shards = self._by_symbol.values()
        return min(s.version for s in shards) if shards else None

    @property
    def issued_at(self) -> datetime | None:
        """The issue time of the oldest shard held (what the list's age counts from); None if empty."""
        shards = self._by_symbol.values()
        return min(s.issued_at for s in shards) if shards else None

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_symbol.values())

    def __repr__(self) -> str:
        return (
            f"StatusShards({self.held}/{len(CROCKFORD)} shards, version={self.version}, {len(self)} passes)"
        )


# --------------------------------------------------------------------------------------------- Base45


def b45encode(data: bytes) -> str:
    """Base45 (RFC 9285): every 2 bytes become 3 characters, a last odd byte becomes 2."""
    out: list[str] = []
    alphabet = BASE45_ALPHABET
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        n, c = divmod(n, 45)
        e, d = divmod(n, 45)
        out += (alphabet[c], alphabet[d], alphabet[e])
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        out += (alphabet[c], alphabet[d])
    return "".join(out)


def b45decode(text: str) -> bytes:
    """Inverse of :func:`b45encode`; raise :class:`PassError` (``TRUNCATED`` or ``MALFORMED``)."""
    if len(text) % 3 == 1:
        raise PassError(Reason.TRUNCATED, f"Base45 length {len(text)} is not possible (cut short?)")
    try:
        values = [_B45_VALUE[ch] for ch in text]
    except KeyError as exc:
        raise PassError(Reason.MALFORMED, f"character {exc.args[0]!r} is not Base45") from None
    out = bytearray()
    full = len(values) - len(values) % 3
    for i in range(0, full, 3):
        n = values[i] + values[i + 1] * 45 + values[i + 2] * 2025
        if n > 0xFFFF:
            raise PassError(Reason.MALFORMED, f"Base45 group at character {i} is out of range")
        out += n.to_bytes(2, "big")
    if full < len(values):
        n = values[full] + values[full + 1] * 45
        if n > 0xFF:
            raise PassError(Reason.MALFORMED, f"Base45 group at character {full} is out of range")
        out.append(n)
    return bytes(out)


# --------------------------------------------------------------------------------------------- CBOR


def _no_semantic_tag(_value: Any, _immutable: bool) -> Any:
    raise ValueError("CBOR semantic tags are not allowed in a pass")


def _only_cose_tag(tag: cbor2.CBORTag, _immutable: bool) -> Any:
    if tag.tag != _COSE_SIGN1_TAG:
        raise ValueError(f"CBOR tag {tag.tag} is not allowed in a pass")
    return tag


# Tags cbor2 would otherwise turn into Python objects (datetimes, regexes, MIME, shared values...).
_REJECTED_TAGS: dict[int, Callable[[Any, bool], Any]] = dict.fromkeys(
    (
        0,
        1,
        2,
        3,
        4,
        5,
        25,
        28,
        29,
        30,
        35,
        36,
        37,
        38,
        52,
        54,
        100,
        256,
        258,
        260,
        261,
        262,
        263,
        1004,
        55799,
    ),
    _no_semantic_tag,
)


def _cbor_loads(data: bytes, what: str) -> Any:
    """Decode exactly one CBOR item filling ``data``: no trailing bytes, no duplicate map keys."""
    fp = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(
            fp,
            tag_hook=_only_cose_tag,
            semantic_decoders=_REJECTED_TAGS,
            max_depth=16,
            allow_duplicate_keys=False,
        )
        value = decoder.decode()
    except cbor2.CBORDecodeEOF:
        raise PassError(Reason.TRUNCATED, f"{what}: CBOR ends prematurely") from None
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise PassError(Reason.MALFORMED, f"{what}: invalid CBOR ({_first_line(exc)})") from None
    if fp.tell() != len(data):
        raise PassError(Reason.MALFORMED, f"{what}: {len(data) - fp.tell()} unexpected bytes after the CBOR")
    return value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:120]


# --------------------------------------------------------------------------------------------- COSE


@dataclass(frozen=True, slots=True)
class _Sign1:
    protected: bytes
    alg: Alg
    kid: bytes
    payload: bytes
    signature: bytes

    def to_be_signed(self) -> bytes:
        return _sig_structure(self.protected, self.payload)


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])


def _malformed(detail: str) -> PassError:
    return PassError(Reason.MALFORMED, detail)


def _parse_sign1(raw: bytes) -> _Sign1:
    item = _cbor_loads(raw, "COSE_Sign1")
    if not isinstance(item, cbor2.CBORTag) or item.tag != _COSE_SIGN1_TAG:
        raise _malformed("COSE: expected a COSE_Sign1 (CBOR tag 18)")
    body = item.value
    if not isinstance(body, Sequence) or isinstance(body, str | bytes) or len(body) != 4:
        raise _malformed("COSE: COSE_Sign1 must be an array of 4 items")
    protected, unprotected, payload, signature = body
    if not isinstance(protected, bytes):
        raise _malformed("COSE: protected header must be a byte string")
    if not isinstance(unprotected, Mapping):
        raise _malformed("COSE: unprotected header must be a map")
    if not isinstance(payload, bytes):
        raise _malformed("COSE: payload must be a byte string (detached payloads are not used)")
    if not isinstance(signature, bytes):
        raise _malformed("COSE: signature must be a byte string")
    header = _cbor_loads(protected, "COSE protected header") if protected else {}
    if not isinstance(header, Mapping):
        raise _malformed("COSE: protected header must encode a map")
    if _HDR_CRIT in header or _HDR_CRIT in unprotected:
        raise _malformed("COSE: critical headers are not supported")
    alg_id = header.get(_HDR_ALG)
    if alg_id is None:
        raise _malformed("COSE: protected header has no alg (label 1)")
    if type(alg_id) is not int or alg_id not in _COSE_ALG:
        raise _malformed(f"COSE: unsupported alg {alg_id!r:.20}: expected -7 (ES256) or -8 (EdDSA)")
    if _HDR_ALG in unprotected:
        raise _malformed("COSE: alg must be in the protected header only")
    if _HDR_KID in header and _HDR_KID in unprotected:
        raise _malformed("COSE: kid appears in both headers")
    kid = header.get(_HDR_KID, unprotected.get(_HDR_KID))
    if kid is None:
        raise _malformed("COSE: no kid (label 4) in the headers")
    if not isinstance(kid, bytes) or not 1 <= len(kid) <= 32:
        raise _malformed("COSE: kid must be a byte string of 1 to 32 bytes")
    return _Sign1(protected, _COSE_ALG[alg_id], kid, payload, signature)


# --------------------------------------------------------------------------------------------- text


def looks_like_pass(text: str | bytes) -> bool:
    """Cheap routing check for the scanner: does the payload carry our prefix?"""
    if isinstance(text, bytes | bytearray | memoryview):
        return bytes(text[: len(PREFIX)]) == PREFIX.encode("ascii")
    return isinstance(text, str) and text.startswith(PREFIX)


def _body_of(text: str | bytes) -> str:
    """The Base45 part of a pass text, after the prefix and size checks."""
    if isinstance(text, bytes | bytearray | memoryview):
        raw = bytes(text)
        if not raw.startswith(PREFIX.encode("ascii")):
            raise _not_ours(raw[: len(PREFIX)].decode("ascii", "replace"), len(raw))
        if len(raw) > MAX_TEXT_CHARS:
            raise _malformed(f"pass of {len(raw)} bytes exceeds the limit of {MAX_TEXT_CHARS}")
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise _malformed("pass text contains non-ASCII bytes") from None
    if not isinstance(text, str):
        raise TypeError(f"a pass is text or bytes, got {type(text).__name__}")
    if not text.startswith(PREFIX):
        raise _not_ours(text[: len(PREFIX)], len(text))
    if len(text) > MAX_TEXT_CHARS:
        raise _malformed(f"pass of {len(text)} characters exceeds the limit of {MAX_TEXT_CHARS}")
    return text[len(PREFIX) :]


def _not_ours(head: str, length: int) -> PassError:
    if 0 < length < len(PREFIX) and PREFIX.startswith(head):
        return PassError(Reason.TRUNCATED, f"only {length} characters of the {PREFIX!r} prefix")
    if head == "HC1:":
        return PassError(Reason.NOT_OURS, "an EU Digital COVID Certificate (HC1:), not an AnToan pass")
    return PassError(Reason.NOT_OURS, f"no {PREFIX!r} prefix: not an AnToan health pass")


def _inflate(data: bytes) -> bytes:
    """zlib-decompress at most :data:`MAX_COSE_BYTES`; a bomb is rejected before it allocates more."""
    if not data:
        raise PassError(Reason.TRUNCATED, "nothing after the prefix")
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_COSE_BYTES)
    except zlib.error as exc:
        raise _malformed(f"zlib: {exc}") from None
    if inflater.unconsumed_tail or (not inflater.eof and len(out) >= MAX_COSE_BYTES):
        raise _malformed(f"zlib: decompresses to more than {MAX_COSE_BYTES} bytes")
    if not inflater.eof:
        raise PassError(Reason.TRUNCATED, "zlib stream is incomplete (code cut short?)")
    if inflater.unused_data:
        raise _malformed(f"zlib: {len(inflater.unused_data)} unexpected bytes after the stream")
    return out


def _sign1_of(text: str | bytes) -> _Sign1:
    return _parse_sign1(_inflate(b45decode(_body_of(text))))


# --------------------------------------------------------------------------------------------- claims in


def _claim(claims: Mapping[Any, Any], key: int, name: str, kind: type) -> Any:
    if key not in claims:
        raise _malformed(f"claim {key} ({name}) is missing")
    value = claims[key]
    if type(value) is not kind:  # exact: bool is not an int here
        raise _malformed(f"claim {key} ({name}) must be {kind.__name__}, got {type(value).__name__}")
    return value


def _claim_time(claims: Mapping[Any, Any], key: int, name: str) -> datetime:
    value = _claim(claims, key, name, int)
    if not _MIN_TIMESTAMP <= value <= _MAX_TIMESTAMP:
        raise _malformed(f"claim {key} ({name}) is out of range: {value}")
    return _from_timestamp(value)


def _parse_claims(payload: bytes) -> PassClaims:
    claims = _cbor_loads(payload, "CWT claims")
    if not isinstance(claims, Mapping):
        raise _malformed(f"CWT claims must be a map, got {type(claims).__name__}")
    issuer = _claim(claims, CLAIM_ISS, "iss", str)
    pass_id = _claim(claims, CLAIM_SUB, "sub, pass id", str)
    expires_at = _claim_time(claims, CLAIM_EXP, "exp")
    issued_at = _claim_time(claims, CLAIM_IAT, "iat")
    colour = _claim(claims, CLAIM_COLOUR, "colour", str)
    kind = _claim(claims, CLAIM_KIND, "kind", str)
    initials = _claim(claims, CLAIM_INITIALS, "initials", str)
    birth_year = _claim(claims, CLAIM_BIRTH_YEAR, "birth year", int)
    try:
        return PassClaims(
            pass_id=pass_id,
            colour=colour,
            kind=kind,
            initials=initials,
            birth_year=birth_year,
            issuer=issuer,
            issued_at=issued_at,
            expires_at=expires_at,
        )
    except (ValueError, TypeError) as exc:
        raise _malformed(f"claims: {exc}") from None


# --------------------------------------------------------------------------------------------- API


def encode_pass(claims: PassClaims, key: SigningKey) -> str:
    """Sign ``claims`` with ``key`` and return the QR text (alphanumeric mode)."""
    protected = cbor2.dumps({_HDR_ALG: _COSE_ALG_ID[key.alg]})
    payload = cbor2.dumps(claims.to_cbor_map())
    signature = key.sign(_sig_structure(protected, payload))
    cose = cbor2.dumps(cbor2.CBORTag(_COSE_SIGN1_TAG, [protected, {_HDR_KID: key.kid}, payload, signature]))
    if len(cose) > MAX_COSE_BYTES:
        raise ValueError(f"pass of {len(cose)} bytes exceeds {MAX_COSE_BYTES}: shorten the issuer or pass id")
    return PREFIX + b45encode(zlib.compress(cose, 9))


def decode_unverified(text: str | bytes) -> tuple[PassClaims, bytes]:
    """Claims and kid of a pass WITHOUT checking its signature (diagnostics only; never a verdict)."""
    sign1 = _sign1_of(text)
    return _parse_claims(sign1.payload), sign1.kid


@dataclass(frozen=True)
class Verification:
    """An accepted pass. ``colour`` is the effective one: the worse of the signed and the listed colour."""

    claims: PassClaims
    kid: bytes
    colour: Colour
    flagged: bool  # True when the status list made the colour worse than the signed one

    @property
    def reason(self) -> Reason | None:
        """``Reason.FLAGGED`` when the status list changed the colour, else None."""
        return Reason.FLAGGED if self.flagged else None


def verify_pass(
    text: str | bytes,
    *,
    trust: TrustList,
    status: StatusList | StatusShards | None = None,
    now: datetime,
    clock_skew: timedelta = timedelta(minutes=5),
) -> Verification:
    """Verify a pass offline; return the verdict or raise :class:`PassError` with the reason.

    The key must cover the pass's ``iat`` (a pass issued inside the key's window stays valid until it
    expires). ``iat`` may be up to ``clock_skew`` ahead of ``now``; ``exp`` is exclusive.
    """
    now = _utc(now, "now")
    if clock_skew < timedelta(0):
        raise ValueError(f"clock_skew must not be negative, got {clock_skew}")
    sign1 = _sign1_of(text)
    key = trust.get(sign1.kid)
    if key is None:
        raise PassError(
            Reason.UNKNOWN_KEY,
            f"kid {sign1.kid.hex()} is not in trust list v{trust.version} (update the trust list?)",
        )
    if key.alg != sign1.alg:
        raise PassError(Reason.BAD_SIGNATURE, f"pass says {sign1.alg} but key {key.kid.hex()} is {key.alg}")
    if not key.verify(sign1.signature, sign1.to_be_signed()):
        raise PassError(Reason.BAD_SIGNATURE, f"signature does not verify with key {key.kid.hex()}")
    claims = _parse_claims(sign1.payload)
    if not key.covers(claims.issued_at):
        raise PassError(
            Reason.KEY_NOT_VALID,
            f"issued {_iso(claims.issued_at)}, outside key {key.kid.hex()}'s window "
            f"{_iso(key.not_before)} .. {_iso(key.not_after)}",
        )
    if now >= claims.expires_at:
        raise PassError(Reason.EXPIRED, f"expired at {_iso(claims.expires_at)}")
    if claims.issued_at > now + clock_skew:
        raise PassError(
            Reason.NOT_YET_VALID, f"issued at {_iso(claims.issued_at)}, later than now {_iso(now)} (clock?)"
        )
    listed = status.colour_for(claims.pass_id) if status is not None else None
    colour = Colour.worst(claims.colour, listed) if listed is not None else claims.colour
    return Verification(claims=claims, kid=sign1.kid, colour=colour, flagged=colour != claims.colour)
