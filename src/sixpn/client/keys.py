"""WireGuard key pairs (X25519), generated where they are used: on the peer's own machine.

The private key never leaves the process that called :func:`generate_keypair`; only the public
key is sent to the control plane. Keys are written the way ``wg genkey``/``wg pubkey`` write them:
32 bytes in standard base64.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sixpn.model.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class KeyPair:
    private_key: str = field(repr=False)  # secret: kept out of repr and logs
    public_key: str


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def generate_keypair() -> KeyPair:
    """A fresh X25519 key pair from the operating system's random source."""
    private = X25519PrivateKey.generate()
    return KeyPair(
        private_key=_b64(private.private_bytes_raw()),
        public_key=_b64(private.public_key().public_bytes_raw()),
    )


def public_key_of(private_key: str) -> str:
    """The public key of a base64 private key (what ``wg pubkey`` prints)."""
    try:
        raw = base64.b64decode(private_key, validate=True)
        key = X25519PrivateKey.from_private_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(
            "private key: not a WireGuard key (32 bytes in base64)", field="private_key"
        ) from exc
    return _b64(key.public_key().public_bytes_raw())
