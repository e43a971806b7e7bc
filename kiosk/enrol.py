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
current key; it runs when the certificate is within ``days`` of expiry.
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
    """Renew the certificate when it expires within ``within_days`` (or ``force``); return the new
    expiry (ISO), or None when nothing was due. The new key replaces the old only after the hub signed."""
    left = days_left(cert_file, now)
    if left <= 0:
        raise EnrolError(
            "this kiosk's certificate has expired: renewal is no longer possible, enrol it again"
        )
    if not force and left > within_days:
        return None
    current_key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    if not isinstance(current_key, ec.EllipticCurvePrivateKey):
        raise EnrolError(f"{key_file} is not an EC key; enrol the kiosk again")
    fresh = new_key()
    csr = make_csr(fresh)
    signature = base64.b64encode(current_key.sign(csr, ec.ECDSA(hashes.SHA256()))).decode("ascii")
    request = {
        "certificate": Path(cert_file).read_text(encoding="ascii"),
        "csr": csr.decode("ascii"),
        "signature": signature,
    }
    context = _pinned_context(Path(ca_file).read_bytes())
    status, body = _request(f"{hub_url.rstrip('/')}/api/v1/renew", context=context, body=request)
    answer = _answer(status, body, "renewal")
    # Keep a copy of the previous pair: a crash between the two replacements below leaves a key and
    # a certificate that do not match, and the .prev pair (still valid until it expires) to go back to.
    for path in (Path(key_file), Path(cert_file)):
        write_private(path.with_name(path.name + ".prev"), path.read_bytes())
    write_private(Path(key_file), key_pem(fresh))
    write_public(Path(cert_file), answer["certificate"].encode())
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
