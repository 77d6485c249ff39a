"""The 6PN address layout (SPEC section 2): encoding, decoding and the prefixes built from it.

Every private address is inside ``fdaa::/16``. Most significant bits first::

    bits     width  field
    0-15     16     fdaa
    16-47    32     network ID        -> fdaa:<net32>::/48             the unit of isolation
    48-79    32     host ID           -> fdaa:<net32>:<host32>::/80    what the mesh routes
    80-111   32     field             -> ...:<field32>::/112           one machine (or peer range)
    112-127  16     low               -> the machine's own /112; its address is ``::2`` in it

Example: ``fdaa:0:18:a7b:7d:f066:b83b:2`` is network ``0x18``, host ``0x0a7b007d``, field
``0xf066b83b``, low ``2``.

Rules that hold here:

- The 32-bit field is split in ranges that never meet, so a peer's /120 never overlaps a
  machine's /112 on the same host:

  ====================  ======================  ==========================================
  field                 used by                 shape
  ====================  ======================  ==========================================
  ``0x0``-``0x9``       nobody (reserved)
  ``0xa``-``0xffff``    WireGuard peers         /120 each: ``...:<field32>:<nn>00/120``
  ``0x1_0000``-max      machines                /112 each: ``...:<field32>:0/112``
  ====================  ======================  ==========================================

  :func:`machine_prefix` and :func:`machine_address` refuse a field outside the machine range,
  so a machine address can never equal a peer address.
- Peer slot ``s`` (0 <= s < :data:`PEER_SLOTS`) on a gateway host is field
  ``PEER_FIELD_MIN + s // 256`` and byte ``nn = s % 256``; the peer's address is ``...:<nn>02``.
  The first 256 slots reproduce Fly's observed ``<net48>:<host32>:0:a:<nn>02``.
- Host ID 0 is never given to a host: ``<net48>::3`` (net, host 0, field 0, low 3) is the DNS
  server and gateway address that WireGuard peers of a network use, and ``fdaa::3`` (network 0)
  is the DNS server every machine sees on its own host.
- Functions taking ``ipaddress`` objects are for the control plane and the agent; the per-query
  DNS path uses :func:`net_id_from_packed`, which works on the 16 packed bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import AddressValueError, IPv6Address, IPv6Network

from sixpn.model.errors import InvalidInput

SIXPN_PREFIX = IPv6Network("fdaa::/16")
DNS_ADDRESS = IPv6Address("fdaa::3")
MAX_ID = 2**32 - 1
MACHINE_FIELD_MIN = 0x0001_0000
MACHINE_FIELD_MAX = 0xFFFF_FFFF
PEER_FIELD_MIN = 0x0000_000A
PEER_FIELD_MAX = 0x0000_FFFF
PEER_SLOTS = (PEER_FIELD_MAX - PEER_FIELD_MIN + 1) * 256
MAX_LOW = 0xFFFF

MACHINE_LOW = 0x2  # a machine's address inside its /112
PEER_LOW_BYTE = 0x02  # a peer's address inside its /120
SERVICE_LOW = 0x3  # <net48>::3 and fdaa::3

_PREFIX_INT = 0xFDAA << 112
_PREFIX_PACKED = b"\xfd\xaa"


@dataclass(frozen=True, slots=True)
class Decoded:
    """The four numbers inside a 6PN address (the ``fdaa`` prefix is implied)."""

    net_id: int
    host_id: int
    field: int
    low: int  # the last 16 bits


def _check(name: str, value: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} {value!r}: must be an integer", field=name)
    if not 0 <= value <= maximum:
        raise InvalidInput(
            f"{name} {value}: out of range, must be between 0 and {maximum:#x}", field=name
        )


def _int(net_id: int, host_id: int, field: int, low: int) -> int:
    _check("net_id", net_id, MAX_ID)
    _check("host_id", host_id, MAX_ID)
    _check("field", field, MAX_ID)
    _check("low", low, MAX_LOW)
    return _PREFIX_INT | (net_id << 80) | (host_id << 48) | (field << 16) | low


def encode(net_id: int, host_id: int = 0, field: int = 0, low: int = 0) -> IPv6Address:
    """The 6PN address with these fields. Raises InvalidInput naming a field out of range."""
    return IPv6Address(_int(net_id, host_id, field, low))


def decode(addr: IPv6Address | str) -> Decoded:
    """Split a 6PN address into its fields. Raises InvalidInput outside ``fdaa::/16``."""
    if isinstance(addr, str):
        try:
            addr = IPv6Address(addr)
        except (AddressValueError, ValueError) as exc:
            raise InvalidInput(
                f"address {addr!r}: not an IPv6 address ({exc})", field="address"
            ) from exc
    elif not isinstance(addr, IPv6Address):
        raise InvalidInput(f"address {addr!r}: not an IPv6 address", field="address")
    value = int(addr)
    if value >> 112 != 0xFDAA:
        raise InvalidInput(f"address {addr}: not inside {SIXPN_PREFIX}", field="address")
    return Decoded(
        net_id=(value >> 80) & MAX_ID,
        host_id=(value >> 48) & MAX_ID,
        field=(value >> 16) & MAX_ID,
        low=value & MAX_LOW,
    )


def is_machine_field(field: int) -> bool:
    """Whether ``field`` is in the range machines are allocated from."""
    return MACHINE_FIELD_MIN <= field <= MACHINE_FIELD_MAX


def is_peer_field(field: int) -> bool:
    """Whether ``field`` is in the range peers' /120s are carved from."""
    return PEER_FIELD_MIN <= field <= PEER_FIELD_MAX


def network_prefix(net_id: int) -> IPv6Network:
    """``fdaa:<net32>::/48``: a network's whole address space."""
    return IPv6Network((_int(net_id, 0, 0, 0), 48))


def host_prefix(net_id: int, host_id: int) -> IPv6Network:
    """``fdaa:<net32>:<host32>::/80``: what the mesh routes to a host for one network."""
    return IPv6Network((_int(net_id, host_id, 0, 0), 80))


def _check_machine_field(field: int) -> None:
    _check("field", field, MAX_ID)
    if not is_machine_field(field):
        raise InvalidInput(
            f"machine field {field:#x}: must be between {MACHINE_FIELD_MIN:#x} and "
            f"{MACHINE_FIELD_MAX:#x} (lower values belong to peers or are reserved)",
            field="field",
        )


def machine_prefix(net_id: int, host_id: int, field: int) -> IPv6Network:
    """``...:<field32>:0/112``: one machine's prefix (its interface's anti-spoofing range)."""
    _check_machine_field(field)
    return IPv6Network((_int(net_id, host_id, field, 0), 112))


def machine_address(net_id: int, host_id: int, field: int) -> IPv6Address:
    """The machine's own address, ``::2`` inside its /112."""
    _check_machine_field(field)
    return IPv6Address(_int(net_id, host_id, field, MACHINE_LOW))


def _peer_field_low(slot: int) -> tuple[int, int]:
    if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < PEER_SLOTS:
        raise InvalidInput(
            f"peer slot {slot!r}: out of range, must be between 0 and {PEER_SLOTS - 1}",
            field="slot",
        )
    return PEER_FIELD_MIN + slot // 256, (slot % 256) << 8


def peer_prefix(net_id: int, host_id: int, slot: int) -> IPv6Network:
    """``<net48>:<host32>:<field32>:<nn>00/120``: the /120 of peer slot ``slot`` on a gateway."""
    field, low = _peer_field_low(slot)
    return IPv6Network((_int(net_id, host_id, field, low), 120))


def peer_address(net_id: int, host_id: int, slot: int) -> IPv6Address:
    """The peer's interface address, ``...:<nn>02`` inside its /120."""
    field, low = _peer_field_low(slot)
    return IPv6Address(_int(net_id, host_id, field, low | PEER_LOW_BYTE))


def peer_slot_of(addr: IPv6Address | str) -> int | None:
    """The peer slot whose address is ``addr``; None if ``addr`` is not a peer address."""
    try:
        d = decode(addr)
    except InvalidInput:
        return None
    if not is_peer_field(d.field) or d.low & 0xFF != PEER_LOW_BYTE:
        return None
    return (d.field - PEER_FIELD_MIN) * 256 + (d.low >> 8)


def network_service_address(net_id: int) -> IPv6Address:
    """``<net48>::3``: DNS server and gateway address as seen by the network's WireGuard peers."""
    return IPv6Address(_int(net_id, 0, 0, SERVICE_LOW))


def net_id_from_packed(packed: bytes) -> int | None:
    """The network ID of a 16-byte packed address if it starts with ``fdaa``, else None.

    Hot path (once per DNS query): bytes slicing only, no ``ipaddress`` objects.
    """
    if len(packed) != 16 or packed[:2] != _PREFIX_PACKED:
        return None
    return int.from_bytes(packed[2:6], "big")
