"""WireGuard values: key validation and endpoint parsing.

A WireGuard key is 32 bytes, written as standard base64 (44 characters ending in '='), the
form `wg genkey`/`wg pubkey` print and wg-quick files carry.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re

from sixpn.model.errors import InvalidInput

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"
)


def validate_key(value: str, *, field: str = "public_key") -> str:
    """Return ``value`` if it is a base64 WireGuard key, else InvalidInput naming ``field``."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32 or len(value) != 44:
        raise InvalidInput(
            f"{field} {value[:60]!r}: not a WireGuard key (32 bytes in base64, 44 characters)",
            field=field,
        )
    return value


def split_endpoint(value: str, *, field: str = "endpoint") -> tuple[str, int]:
    """Split "host:port" ("1.2.3.4:51820", "[2001:db8::1]:51820", "gw.example.com:51820")."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidInput(
            f"{field} {value!r}: expected ADDRESS:PORT with a port from 1 to 65535", field=field
        )
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError as exc:
            raise InvalidInput(f"{field} {value!r}: bad IPv6 address", field=field) from exc
        return host[1:-1], int(port_text)
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        if not _HOSTNAME.match(host):
            raise InvalidInput(
                f"{field} {value!r}: expected an IPv4 address, [IPv6] address or host name",
                field=field,
            ) from None
    return host, int(port_text)


def validate_endpoint(value: str, *, field: str = "endpoint") -> str:
    split_endpoint(value, field=field)
    return value
