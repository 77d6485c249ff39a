"""LISTEN and TARGET of `sixpn forward`: the grammar, the checks, and their error messages.

Pure values and functions (no I/O): a bad value is ``InvalidInput`` naming it (CLI exit 2).
LISTEN is an IP literal (``[V6]:PORT``, ``V4:PORT``) or ``:PORT`` for every address; TARGET is
``HOST:PORT`` with HOST a DNS name or IPv4, or ``[V6]:PORT``. A bare IPv6 without brackets is
refused with the bracketed form to use, since ``::1:5432`` is ambiguous.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from sixpn.model.errors import InvalidInput

# One label at a time: a single regex over the whole name backtracks exponentially on a long
# label followed by a bad character. Underscores are allowed (service names, AWS internal names).
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def _is_hostname(host: str) -> bool:
    name = host[:-1] if host.endswith(".") else host
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


@dataclass(frozen=True)
class Endpoint:
    """A host (an IP literal, or a DNS name for a target) and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _split(value: str, what: str) -> tuple[str, str]:
    """``[v6]:port``, ``host:port`` or ``:port`` into (host, port text)."""
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise InvalidInput(f"{what} {value!r}: expected [IPV6]:PORT", field=what)
        return host, rest[1:]
    host, sep, port = value.rpartition(":")
    if not sep:
        raise InvalidInput(f"{what} {value!r}: expected HOST:PORT (no port given)", field=what)
    if ":" in host:
        raise InvalidInput(
            f"{what} {value!r}: put an IPv6 address in brackets, as [{host}]:{port}", field=what
        )
    return host, port


def _port(value: str, text: str, what: str, *, zero_ok: bool) -> int:
    if not text.isdigit() or not (0 if zero_ok else 1) <= int(text) <= 65535:
        low = 0 if zero_ok else 1
        raise InvalidInput(f"{what} {value!r}: port must be {low}..65535", field=what)
    return int(text)


def parse_listen(value: str) -> Endpoint:
    """``[ADDR]:PORT``, ``ADDR:PORT`` (IPv4) or ``:PORT`` (every address); ADDR is a literal."""
    host, port_text = _split(value.strip(), "listen")
    port = _port(value, port_text, "listen", zero_ok=True)
    if host == "":
        return Endpoint("::", port)
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise InvalidInput(
            f"listen {value!r}: {host!r} is not an IP address (listen on an address, not a name)",
            field="listen",
        ) from None
    if value.strip().startswith("[") != (addr.version == 6):
        raise InvalidInput(
            f"listen {value!r}: write IPv6 as [ADDR]:PORT and IPv4 as ADDR:PORT", field="listen"
        )
    return Endpoint(str(addr), port)


def parse_target(value: str) -> Endpoint:
    """``HOST:PORT`` (a DNS name or IPv4) or ``[IPV6]:PORT``."""
    host, port_text = _split(value.strip(), "target")
    port = _port(value, port_text, "target", zero_ok=False)
    if value.strip().startswith("["):
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError(host)
        except ValueError:
            raise InvalidInput(
                f"target {value!r}: {host!r} in brackets is not an IPv6 address", field="target"
            ) from None
        return Endpoint(str(ipaddress.ip_address(host)), port)
    if not _is_hostname(host):
        raise InvalidInput(
            f"target {value!r}: {host!r} is neither an IPv4 address nor a DNS name", field="target"
        )
    return Endpoint(host, port)


def check_limits(max_connections: int, idle_timeout: float, grace: float) -> None:
    if max_connections < 1:
        raise InvalidInput(
            f"--max-connections {max_connections}: must be at least 1", field="max_connections"
        )
    if idle_timeout < 0:
        raise InvalidInput(
            f"--idle-timeout {idle_timeout}: must be 0 (none) or more", field="idle_timeout"
        )
    if grace < 0:
        raise InvalidInput(f"--grace {grace}: must be 0 or more", field="grace")
