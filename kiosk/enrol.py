"""First-boot enrolment and certificate renewal: the kiosk makes its key, the hub signs it, CA pinned.

The kiosk receives an enrolment bundle (``enrol.json`` on the boot partition) or scans an enrolment
QR code (``ATE1:`` + base64url of compact JSON); both carry the hub URL, the hub CA's SHA-256
fingerprint, the token and the kiosk and venue ids. The kiosk then

1. fetches the CA certificate (``GET /api/v1/ca.pem``) and accepts it only if its fingerprint is the
   pinned one (otherwise it stops and writes nothing);
2. from then on verifies the hub's HTTPS certificate against that CA;
3. makes an EC P-256 key (it never leaves the device), posts a CSR with the token, and
4. writes the key (0600), its certificate, the CA and its configuration file.

Renewal (:func:`renew`) posts a CSR for a new key with the current certificate and a signature by the
current key; it runs when the certificate is within ``days`` of expiry (the running kiosk checks daily,
:class:`kiosk.app.KioskApp`). It can be repeated after any failure, including a lost answer.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import json
import logging
import ssl
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from protocol import enrolment as _format
from protocol.enrolment import (  # noqa: F401  (the kiosk's enrolment API includes the format)
    BUNDLE_FILE,
    QR_PREFIX,
    Bundle,
    EnrolError,
    parse_qr,
    read_bundle,
)
from protocol.keyfiles import key_pem, make_csr, new_key, write_private, write_public

log = logging.getLogger(__name__)

#: Kept next to the certificate so renewal knows the hub and the pinned CA.
STATE_FILE = "enrolment.json"
DEFAULT_RENEW_DAYS = 30
_TIMEOUT_S = 20.0


# ------------------------------------------------------------------------------------------ HTTPS


def _request(url: str, *, context: ssl.SSLContext, body: dict | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method="GET" if body is None else "POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=_TIMEOUT_S, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise EnrolError(
                f"the hub at {url} did not prove its identity with the pinned CA ({reason.verify_message}); "
                "refusing to enrol"
            ) from None
        raise EnrolError(f"cannot reach the hub at {url}: {reason}") from None
    except OSError as exc:
        raise EnrolError(f"cannot reach the hub at {url}: {exc}") from None


def fetch_pinned_ca(hub_url: str, fingerprint_hex: str) -> bytes:
    """Fetch the hub's CA certificate and return its PEM if its SHA-256 fingerprint is the pinned one."""
    # Not verified yet: nothing is trusted until the fingerprint matches, and nothing is sent.
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    status, body = _request(f"{hub_url}/api/v1/ca.pem", context=unverified)
    if status != 200:
        raise EnrolError(f"the hub at {hub_url} did not give its CA certificate (HTTP {status})")
    try:
        cert = x509.load_pem_x509_certificate(body)
    except ValueError:
        raise EnrolError(f"the hub at {hub_url} answered with something that is not a certificate") from None
    got = cert.fingerprint(hashes.SHA256()).hex()
    if not hmac.compare_digest(got, _format.fingerprint_hex(fingerprint_hex)):
        raise EnrolError(
            f"the hub's CA fingerprint {got[:16]}… is not the pinned {fingerprint_hex[:16]}…: "
            "this is not your hub (or the bundle is wrong); refusing to enrol"
        )
    return cert.public_bytes(serialization.Encoding.PEM)


def _pinned_context(ca_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _answer(status: int, body: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if status != 201 or not isinstance(data, dict):
        message = data.get("message") if isinstance(data, dict) else None
        raise EnrolError(f"the hub refused the {what}: {message or f'HTTP {status}'}")
    return data


# ------------------------------------------------------------------------------------------ files


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def render_toml(tree: dict[str, Any], prefix: str = "") -> str:
    """TOML for nested dicts of scalars and lists (what a kiosk configuration holds)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in tree.items() if not isinstance(v, dict) and v is not None]
    out = "".join(line + "\n" for line in lines)
    for key, value in tree.items():
        if isinstance(value, dict):
            name = f"{prefix}.{key}" if prefix else key
            out += f"\n[{name}]\n" + render_toml(value, name)
    return out if prefix else out.lstrip("\n")


@dataclass(frozen=True, slots=True)
class KioskFiles:
    """Where an enrolled kiosk keeps its identity."""

    folder: Path

    @property
    def key(self) -> Path:
        return self.folder / "kiosk.key"

    @property
    def cert(self) -> Path:
        return self.folder / "kiosk.pem"

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def state(self) -> Path:
        return self.folder / STATE_FILE


@dataclass(frozen=True, slots=True)
class EnrolResult:
    kiosk_id: str
    venue_id: str
    venue_name: str
    cert_not_after: str
    config_path: Path


def enrol(bundle: Bundle, *, identity_dir: Path, config_path: Path) -> EnrolResult:
    """Enrol this kiosk with ``bundle``; write key, certificate, CA and the configuration file.

    An existing configuration file keeps its other settings (camera, gpio, …); ``kiosk_id``,
    ``venue_id`` and ``[mqtt]`` are replaced. Nothing is written unless the hub signed the CSR.
    """
    config = _existing_config(config_path)  # a broken file must fail before the token is spent
    ca_pem = fetch_pinned_ca(bundle.hub_url, bundle.ca_fingerprint)
    key = new_key()
    request = {"token": bundle.token, "csr": make_csr(key).decode("ascii")}
    if bundle.kiosk_id:
        request["kiosk_id"] = bundle.kiosk_id
    if bundle.venue_id:
        request["venue_id"] = bundle.venue_id
    status, body = _request(f"{bundle.hub_url}/api/v1/enrol", context=_pinned_context(ca_pem), body=request)
    answer = _answer(status, body, "enrolment")
    files = KioskFiles(Path(identity_dir))
    write_private(files.key, key_pem(key))
    write_public(files.cert, answer["certificate"].encode())
    write_public(files.ca, ca_pem)
    write_public(
        files.state,
        json.dumps({"hub_url": bundle.hub_url, "ca_fingerprint": bundle.ca_fingerprint}, indent=1).encode(),
    )
    mqtt = dict(config.get("mqtt") or {})
    mqtt.update(
        host=answer["mqtt"]["host"],
        port=int(answer["mqtt"]["port"]),
        tls={
            "ca_file": str(files.ca.resolve()),
            "cert_file": str(files.cert.resolve()),
            "key_file": str(files.key.resolve()),
        },
    )
    config.update(kiosk_id=answer["kiosk_id"], venue_id=answer["venue_id"], mqtt=mqtt)
    if answer.get("identity_key"):
        # ID cards scanned from now on are sealed to this hub's key (the hub links them for tracing).
        config["hub_public_key"] = answer["identity_key"]
    write_public(Path(config_path), render_toml(config).encode())
    log.info("enrolled as %s at venue %s", answer["kiosk_id"], answer["venue_id"])
    return EnrolResult(
        answer["kiosk_id"],
        answer["venue_id"],
        answer["venue_name"],
        answer["cert_not_after"],
        Path(config_path),
    )


def _existing_config(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise EnrolError(f"{path} is not valid TOML ({exc}); fix or remove it and enrol again") from None


# ---------------------------------------------------------------------------------------- renewal


def days_left(cert_file: Path, now: dt.datetime) -> float:
    """Days until the certificate in ``cert_file`` expires (negative once expired)."""
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    return (cert.not_valid_after_utc - now).total_seconds() / 86400


def renewal_window_days(cert: x509.Certificate, within_days: float) -> float:
    """How close to expiry renewal starts: ``within_days``, but at most a third of the certificate's
    lifetime, so a short-lived certificate (the hub's ``enrolment.cert_days`` below three times the
    window) is not renewed again at every check."""
    lifetime = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() / 86400
    return min(within_days, lifetime / 3)


def renewal_due(cert_file: Path, now: dt.datetime, within_days: float = DEFAULT_RENEW_DAYS) -> bool:
    """Whether the certificate in ``cert_file`` is inside its renewal window (:func:`renewal_window_days`)."""
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    left = (cert.not_valid_after_utc - now).total_seconds() / 86400
    return left <= renewal_window_days(cert, within_days)


def pending_key_path(key_file: Path) -> Path:
    """Where the key of a renewal in progress waits until its certificate has arrived and been written."""
    return Path(key_file).with_name(Path(key_file).name + ".pending")


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _same_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> bool:
    if key is None:
        return False
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*der) == key.public_key().public_bytes(*der)


def recover_identity(cert_file: Path, key_file: Path) -> str | None:
    """Make the certificate and key files a matching pair again after a renewal cut short; say what was
    done (None when nothing was needed).

    A renewal writes the certificate first, then the key (from ``kiosk.key.pending``), then removes the
    pending key. A stop in between leaves the new certificate with the old key: the pending key
    completes the pair. Otherwise the previous key (``kiosk.key.prev``) or certificate
    (``kiosk.pem.prev``) that matches the other file is put back. A pending key equal to the current
    one is a finished renewal's leftover and is removed. Raises :class:`EnrolError` when no matching
    pair can be made.
    """
    cert_file, key_file = Path(cert_file), Path(key_file)
    pending_file = pending_key_path(key_file)
    prev_key_file = key_file.with_name(key_file.name + ".prev")
    prev_cert_file = cert_file.with_name(cert_file.name + ".prev")
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    key, pending = _load_key(key_file), _load_key(pending_file)
    if _same_key(cert, key):
        if pending is not None and _same_key(cert, pending):
            pending_file.unlink()
        return None
    if _same_key(cert, pending):
        write_private(key_file, pending_file.read_bytes())
        pending_file.unlink()
        return "finished an interrupted renewal: installed the new key that belongs to the new certificate"
    if _same_key(cert, _load_key(prev_key_file)):
        write_private(key_file, prev_key_file.read_bytes())
        return "went back to the previous key, which matches the certificate"
    try:
        prev = x509.load_pem_x509_certificate(prev_cert_file.read_bytes())
    except (OSError, ValueError):
        prev = None
    if prev is not None and _same_key(prev, key):
        write_public(cert_file, prev_cert_file.read_bytes())
        return "went back to the previous certificate, which matches the key"
    raise EnrolError(
        f"{cert_file} and {key_file} do not belong together and no earlier pair matches; "
        "enrol the kiosk again"
    )


def renew(
    *,
    cert_file: Path,
    key_file: Path,
    ca_file: Path,
    hub_url: str,
    now: dt.datetime,
    within_days: float = DEFAULT_RENEW_DAYS,
    force: bool = False,
) -> str | None:
    """Renew the certificate when it is due (:func:`renewal_due`) or with ``force``; return the new
    expiry (ISO), or None when nothing was due.

    Safe to repeat after any failure: the new key is written to ``kiosk.key.pending`` before the
    request and reused by every retry until its certificate has arrived, so when the hub's answer was
    lost the retry (still signed by the current, valid certificate) gets the certificate the hub
    already issued for that key. The current pair is replaced only after the hub answered, and the
    previous pair is kept as ``kiosk.pem.prev`` / ``kiosk.key.prev``.
    """
    cert_file, key_file = Path(cert_file), Path(key_file)
    recovered = recover_identity(cert_file, key_file)
    if recovered:
        log.warning("%s", recovered)
    left = days_left(cert_file, now)
    if left <= 0:
        raise EnrolError(
            "this kiosk's certificate has expired: renewal is no longer possible, enrol it again"
        )
    if not force and not renewal_due(cert_file, now, within_days):
        return None
    current_key = _load_key(key_file)
    if current_key is None:
        raise EnrolError(f"{key_file} is not an EC private key; enrol the kiosk again")
    pending_file = pending_key_path(key_file)
    fresh = _load_key(pending_file)
    if fresh is None:
        fresh = new_key()
        write_private(pending_file, key_pem(fresh))
    else:
        log.info("retrying the renewal with the key made for it earlier")
    csr = make_csr(fresh)
    signature = base64.b64encode(current_key.sign(csr, ec.ECDSA(hashes.SHA256()))).decode("ascii")
    request = {
        "certificate": cert_file.read_text(encoding="ascii"),
        "csr": csr.decode("ascii"),
        "signature": signature,
    }
    context = _pinned_context(Path(ca_file).read_bytes())
    status, body = _request(f"{hub_url.rstrip('/')}/api/v1/renew", context=context, body=request)
    answer = _answer(status, body, "renewal")
    try:
        new_cert = x509.load_pem_x509_certificate(answer["certificate"].encode())
    except (KeyError, ValueError):
        raise EnrolError("the hub's renewal answer holds no certificate; try again later") from None
    if not _same_key(new_cert, fresh):
        raise EnrolError("the hub's renewal answer is for another key; kept the current certificate")
    for path in (key_file, cert_file):
        write_private(path.with_name(path.name + ".prev"), path.read_bytes())
    # Certificate first, then key: a stop in between is completed by recover_identity from the pending key.
    write_public(cert_file, answer["certificate"].encode())
    write_private(key_file, key_pem(fresh))
    pending_file.unlink()
    log.info("certificate renewed; valid until %s", answer["cert_not_after"])
    return answer["cert_not_after"]


def read_state(identity_dir: Path) -> dict[str, str]:
    """The hub URL and pinned fingerprint recorded at enrolment."""
    path = KioskFiles(Path(identity_dir)).state
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EnrolError(f"no {path}: this kiosk was not enrolled with `antoan-kiosk enrol`") from None


# ------------------------------------------------------------------------------ enrolment QR by camera


def scan_enrolment_qr(
    source: Any,
    decoder: Any,
    *,
    timeout_s: float = 300.0,
    clock: Any = None,
    on_other_code: Any = None,
) -> Bundle:
    """Read frames from ``source`` until a valid enrolment QR (``ATE1:…``) is seen; return its bundle.

    First boot: district IT holds the printed enrolment QR to the kiosk's own camera. Other codes
    (a citizen's pass, an ID card) are skipped; a damaged ``ATE1:`` code is reported through
    ``on_other_code`` and scanning goes on. Raises :class:`EnrolError` after ``timeout_s`` or when a
    replay source runs out of frames.
    """
    import time

    clock = clock or time.monotonic
    deadline = clock() + timeout_s
    last_problem = "no enrolment QR code was seen"
    source.open()
    try:
        while clock() < deadline:
            frame = source.read()
            if frame is None:
                if getattr(source, "finished", False):
                    break
                continue
            for code in decoder.decode(frame):
                text = code.raw.decode("utf-8", "replace").strip()
                if not text.startswith(QR_PREFIX):
                    if on_other_code is not None:
                        on_other_code("not an enrolment QR code")
                    continue
                try:
                    return parse_qr(text)
                except EnrolError as exc:
                    last_problem = str(exc)
                    if on_other_code is not None:
                        on_other_code(last_problem)
    finally:
        source.close()
    raise EnrolError(f"{last_problem} (scanned for up to {timeout_s:g} s); hold the printed QR to the camera")
