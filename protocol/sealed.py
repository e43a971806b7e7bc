"""Sealed boxes (libsodium, X25519): the kiosk seals ID-card data to the hub's key; only the hub opens it.

Both sides use this module, so the text format (standard base64 of the sealed box) and the size limit
are defined once. Sealed boxes are randomised: sealing the same data twice gives different texts.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

from nacl.bindings import crypto_box_SEALBYTES
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

#: Largest sealed text accepted (a sealed ID card is about 3 KiB at most).
MAX_SEALED_CHARS: Final = 8192


class SealedError(ValueError):
    """A sealed text that cannot be opened; ``reason`` is ``sealed_encoding`` or ``sealed_decrypt``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def seal(plaintext: bytes, public_key: bytes) -> str:
    """Seal ``plaintext`` to the raw 32-byte X25519 ``public_key``; return standard base64 text."""
    key = bytes(public_key)
    if len(key) != PublicKey.SIZE:
        raise ValueError(
            f"the hub public key must be {PublicKey.SIZE} raw bytes (X25519), got {len(key)}; "
            "check the hub encryption key in the kiosk configuration"
        )
    return base64.b64encode(SealedBox(PublicKey(key)).encrypt(plaintext)).decode("ascii")


def open_sealed(text: str, private_key: bytes) -> bytes:
    """Open a text made by :func:`seal` with the raw 32-byte X25519 ``private_key``.

    Raises :class:`SealedError` for text that is not base64 of a sensible size or does not open.
    """
    key = bytes(private_key)
    if len(key) != PrivateKey.SIZE:
        raise ValueError(
            f"the hub private key must be {PrivateKey.SIZE} raw bytes (X25519), got {len(key)}; "
            "check the hub's encryption key file"
        )
    if len(text) > MAX_SEALED_CHARS:
        raise SealedError("sealed_encoding", "the sealed text is longer than any sealed card")
    try:
        ciphertext = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SealedError("sealed_encoding", "the sealed text is not standard base64") from None
    if len(ciphertext) < crypto_box_SEALBYTES:  # shorter than the ephemeral key + MAC
        raise SealedError("sealed_decrypt", "the sealed text is too short to hold anything")
    try:
        return SealedBox(PrivateKey(key)).decrypt(ciphertext)
    except CryptoError:
        raise SealedError("sealed_decrypt", "the sealed text does not open with this key") from None
