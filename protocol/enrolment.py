"""The enrolment bundle and QR code district IT hands a kiosk (written by provisioning, read by the kiosk).

Both carry the hub URL (https), the SHA-256 fingerprint of the hub CA to pin, the single-use token and
optionally the kiosk and venue ids. The bundle is ``enrol.json`` (for the Pi's boot partition); the QR
code is ``ATE1:`` + base64url (no padding) of compact JSON, small enough to print and scan.
"""

from __future__ import annotations

import base64
import binascii
import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.topics import is_valid_kiosk_id

QR_PREFIX = "ATE1:"
BUNDLE_FILE = "enrol.json"


class EnrolError(Exception):
    """Enrolment or renewal failed; the message says what to do next."""


@dataclass(frozen=True, slots=True)
class Bundle:
    """What district IT hands the kiosk: where the hub is, which CA to trust, and the token."""

    hub_url: str
    ca_fingerprint: str  # 64 lowercase hex digits
    token: str
    kiosk_id: str | None = None
    venue_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "v": 1,
            "hub_url": self.hub_url,
            "ca_fingerprint": self.ca_fingerprint,
            "token": self.token,
            "kiosk_id": self.kiosk_id,
            "venue_id": self.venue_id,
        }

    def to_qr(self) -> str:
        """The compact enrolment QR payload: ``ATE1:`` + base64url (no padding) of short-keyed JSON."""
        compact = {"u": self.hub_url, "f": self.ca_fingerprint, "t": self.token}
        if self.kiosk_id:
            compact["k"] = self.kiosk_id
        if self.venue_id:
            compact["v"] = self.venue_id
        raw = json.dumps(compact, separators=(",", ":")).encode()
        return QR_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def fingerprint_hex(text: str) -> str:
    """A SHA-256 fingerprint as 64 lowercase hex digits (colons and spaces dropped), or EnrolError."""
    digits = "".join(c for c in str(text) if c not in ": \t").lower()
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise EnrolError("the CA fingerprint must be 64 hex digits (SHA-256); check the bundle or QR code")
    return digits


def _bundle(data: Any) -> Bundle:
    if not isinstance(data, dict):
        raise EnrolError("the enrolment data is not a JSON object; ask district IT for a new bundle")
    url = data.get("hub_url")
    token = data.get("token")
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme != "https":
        raise EnrolError("the hub URL must start with https://; ask district IT for a new bundle")
    if not isinstance(token, str) or not token.strip():
        raise EnrolError("the enrolment bundle has no token; ask district IT for a new bundle")
    for key in ("kiosk_id", "venue_id"):
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or not is_valid_kiosk_id(value)):
            raise EnrolError(f"the bundle's {key} {value!r} is not valid")
    return Bundle(
        hub_url=url.rstrip("/"),
        ca_fingerprint=fingerprint_hex(data.get("ca_fingerprint", "")),
        token=token.strip(),
        kiosk_id=data.get("kiosk_id"),
        venue_id=data.get("venue_id"),
    )


def read_bundle(path: Path) -> Bundle:
    """Read ``enrol.json`` (``path`` may be the file or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / BUNDLE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EnrolError(f"no enrolment bundle at {path}") from None
    except (ValueError, UnicodeDecodeError):
        raise EnrolError(f"{path} is not valid JSON; ask district IT for a new bundle") from None
    return _bundle(data)


def parse_qr(text: str) -> Bundle:
    """Parse an enrolment QR payload (``ATE1:…``)."""
    text = text.strip()
    if not text.startswith(QR_PREFIX):
        raise EnrolError(f"not an enrolment QR code (it should start with {QR_PREFIX})")
    body = text[len(QR_PREFIX) :]
    try:
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, binascii.Error):
        raise EnrolError("the enrolment QR code is damaged; print it again") from None
    if not isinstance(data, dict):
        raise EnrolError("the enrolment QR code is damaged; print it again")
    return _bundle(
        {
            "hub_url": data.get("u"),
            "ca_fingerprint": data.get("f", ""),
            "token": data.get("t"),
            "kiosk_id": data.get("k"),
            "venue_id": data.get("v"),
        }
    )
