"""The entities of the fabric as frozen value types.

Addresses are ``ipaddress`` objects here; strings appear only at the edges (JSON, CLI). Entities
are what the store holds and what the change stream carries. The server owns every field that is
derived or allocated (IDs, addresses, gateway, timestamps); the caller supplies only names and
choices (``control/schemas.py`` keeps the two apart).
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from typing import Annotated, Any


def parse_ipv6(value: object) -> object:
    """An IPv6 address's text through the C parser (``inet_pton``): ~0.4 us against ~4 us for
    ``ipaddress``'s own, which was 60% of decoding a 100k-machine snapshot (docs/benchmarks.md).
    Whatever it refuses (a scope ID, a typo) is left to ``ipaddress``, whose error is kept."""
    if isinstance(value, str):
        try:
            return IPv6Address(int.from_bytes(socket.inet_pton(socket.AF_INET6, value), "big"))
        except OSError:
            pass
    return value


class _FastIPv6:
    """``Annotated`` marker: decoders built with pydantic parse the text with
    :func:`parse_ipv6` first (pydantic is imported only by them: this module stays stdlib)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_before_validator_function(parse_ipv6, handler(source))


Address = Annotated[IPv6Address, _FastIPv6()]  # an entity's address, decoded fast


class MachineState(enum.StrEnum):
    STARTED = "started"
    STOPPED = "stopped"
    DESTROYED = "destroyed"


class TokenKind(enum.StrEnum):
    ADMIN = "admin"  # everything
    ORG = "org"  # everything inside one organization
    HOST = "host"  # read what a host needs (snapshot, watch), write its own status
    JOIN = "join"  # only: join a new host


@dataclass(frozen=True, slots=True)
class Region:
    code: str
    name: str
    latitude: float
    longitude: float


@dataclass(frozen=True, slots=True)
class Org:
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class Network:
    org: str
    name: str
    net_id: int
    created_at: float


@dataclass(frozen=True, slots=True)
class App:
    org: str
    name: str
    network: str
    net_id: int
    created_at: float


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    host_id: int
    region: str
    endpoint: str  # "address:port" where other hosts and peers reach its WireGuard listener
    public_key: str
    gateway: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class HostStatus:
    """What a host reports about itself; written only with that host's credential."""

    host: str
    backend: str  # "kernel" or "wireguard-go"
    applied_revision: int
    reported_at: float
    message: str = ""


@dataclass(frozen=True, slots=True)
class Machine:
    id: str  # 14 lowercase hex characters
    org: str
    app: str
    network: str
    net_id: int
    host: str
    host_id: int
    region: str
    field: int  # the 32-bit machine ID field of the address
    address: Address
    state: MachineState
    process_group: str
    metadata: Mapping[str, str]
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class Peer:
    org: str
    name: str
    network: str
    net_id: int
    gateway: str  # host name
    host_id: int
    slot: int  # index of the peer's /120 in its gateway's peer range (core.addressing)
    address: Address
    public_key: str
    ephemeral: bool
    created_at: float
    routes: tuple[IPv6Network, ...] = ()


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """A client peer as its gateway's WireGuard interface sees it, reported by that gateway's
    agent (``wg show``). Times: ``latest_handshake`` is the gateway's clock (0: never);
    ``last_active`` and ``reported_at`` are the control plane's. ``last_active`` is when a report
    first showed a new handshake or more bytes received from the peer (0: never): the clock of
    ephemeral expiry (SPEC 5)."""

    org: str
    name: str
    gateway: str
    public_key: str
    endpoint: str | None
    latest_handshake: float
    rx_bytes: int
    tx_bytes: int
    last_active: float
    reported_at: float


@dataclass(frozen=True, slots=True)
class Token:
    """A credential's record. The secret itself is never stored, only its hash (the key)."""

    id: str  # short public handle, used to list and revoke
    kind: TokenKind
    created_at: float
    org: str | None = None
    host: str | None = None
    description: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)


Entity = Org | Network | App | Host | HostStatus | Machine | Peer
