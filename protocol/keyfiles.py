"""Key and certificate files shared by the kiosk (its own key, its CSR) and provisioning (the hub CA).

Private keys are written readable by their owner only from the first byte; public files are replaced
atomically so a reader (the broker, a kiosk) never sees half a file.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 private key (what a kiosk makes on first boot, and what the CA uses)."""
    return ec.generate_private_key(ec.SECP256R1())


def make_csr(key: ec.EllipticCurvePrivateKey, *, common_name_hint: str = "kiosk") -> bytes:
    """A PEM CSR for ``key``. The CN is only a hint: the CA replaces it with the kiosk id."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name_hint)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def key_pem(key, passphrase: bytes | None = None) -> bytes:
    """A private key as PKCS#8 PEM, encrypted when a passphrase is given."""
    encryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def write_private(path: Path, data: bytes) -> Path:
    """Write a secret readable by its owner only (0600 from the first byte, never widened later)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_public(path: Path, data: bytes) -> Path:
    """Atomic replace, so the broker never reads a half-written CRL or certificate."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path
