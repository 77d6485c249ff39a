"""The 6PN layout: round-trips, prefix nesting, peer ranges never meeting machine ranges."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sixpn.core import addressing as a
from sixpn.model.errors import InvalidInput

pytestmark = pytest.mark.unit

ids = st.integers(0, a.MAX_ID)
host_ids = st.integers(1, a.MAX_ID)
fields = st.integers(0, a.MAX_ID)
lows = st.integers(0, 0xFFFF)
machine_fields = st.integers(a.MACHINE_FIELD_MIN, a.MACHINE_FIELD_MAX)
slots = st.integers(0, a.PEER_SLOTS - 1)


def test_spec_example_decodes_exactly() -> None:
    d = a.decode("fdaa:0:18:a7b:7d:f066:b83b:2")
    assert d == a.Decoded(net_id=0x18, host_id=0x0A7B007D, field=0xF066B83B, low=2)
    assert a.machine_address(0x18, 0x0A7B007D, 0xF066B83B) == IPv6Address(
        "fdaa:0:18:a7b:7d:f066:b83b:2"
    )
    assert a.machine_prefix(0x18, 0x0A7B007D, 0xF066B83B) == IPv6Network(
        "fdaa:0:18:a7b:7d:f066:b83b:0/112"
    )


def test_constants() -> None:
    assert IPv6Network("fdaa::/16") == a.SIXPN_PREFIX
    assert a.DNS_ADDRESS == IPv6Address("fdaa::3") == a.encode(0, 0, 0, 3)
    assert a.PEER_SLOTS == (0xFFFF - 0xA + 1) * 256
    assert not any(a.is_peer_field(f) for f in (a.MACHINE_FIELD_MIN, a.MACHINE_FIELD_MAX))
    assert not a.is_machine_field(a.PEER_FIELD_MAX)
    assert not a.is_machine_field(0)
    assert not a.is_peer_field(0)
    assert not a.is_peer_field(9)


def test_fly_observed_peer_pattern() -> None:
    assert a.peer_address(0x18, 0x7D, 0) == IPv6Address("fdaa:0:18:0:7d:0:a:2")
    assert a.peer_address(0x18, 0x7D, 0x3F) == IPv6Address("fdaa:0:18:0:7d:0:a:3f02")
    assert a.peer_prefix(0x18, 0x7D, 0x3F) == IPv6Network("fdaa:0:18:0:7d:0:a:3f00/120")
    assert a.peer_address(0x18, 0x7D, 256) == IPv6Address("fdaa:0:18:0:7d:0:b:2")
    last = a.PEER_SLOTS - 1
    assert a.peer_prefix(1, 2, last) == IPv6Network("fdaa:0:1:0:2:0:ffff:ff00/120")


def test_service_addresses() -> None:
    assert a.network_service_address(0x18) == IPv6Address("fdaa:0:18::3")
    assert a.network_service_address(0x18) in a.network_prefix(0x18)
    assert a.network_prefix(0x18) == IPv6Network("fdaa:0:18::/48")
    assert a.host_prefix(0x18, 0x0A7B007D) == IPv6Network("fdaa:0:18:a7b:7d::/80")


@given(ids, ids, fields, lows)
def test_encode_decode_round_trip(net: int, host: int, field: int, low: int) -> None:
    addr = a.encode(net, host, field, low)
    assert addr in a.SIXPN_PREFIX
    assert a.decode(addr) == a.Decoded(net, host, field, low)
    assert a.decode(str(addr)) == a.Decoded(net, host, field, low)
    assert a.encode(*_fields(a.decode(addr))) == addr


def _fields(d: a.Decoded) -> tuple[int, int, int, int]:
    return d.net_id, d.host_id, d.field, d.low


@given(st.integers(0, 2**128 - 1))
def test_decode_then_encode_is_identity_inside_fdaa(value: int) -> None:
    addr = IPv6Address(value)
    if addr in a.SIXPN_PREFIX:
        assert a.encode(*_fields(a.decode(addr))) == addr
    else:
        with pytest.raises(InvalidInput):
            a.decode(addr)


@given(ids, host_ids, machine_fields)
def test_machine_prefixes_nest(net: int, host: int, field: int) -> None:
    n48, h80 = a.network_prefix(net), a.host_prefix(net, host)
    m112, addr = a.machine_prefix(net, host, field), a.machine_address(net, host, field)
    assert (n48.prefixlen, h80.prefixlen, m112.prefixlen) == (48, 80, 112)
    assert h80.subnet_of(n48)
    assert m112.subnet_of(h80)
    assert m112.subnet_of(a.SIXPN_PREFIX)
    assert addr in m112
    assert addr == m112.network_address + 2
    assert a.decode(addr) == a.Decoded(net, host, field, 2)


@given(ids, host_ids, slots)
def test_peer_prefixes_nest_and_invert(net: int, host: int, slot: int) -> None:
    p120, addr = a.peer_prefix(net, host, slot), a.peer_address(net, host, slot)
    assert p120.prefixlen == 120
    assert p120.subnet_of(a.host_prefix(net, host))
    assert addr in p120
    assert addr == p120.network_address + 2
    assert a.is_peer_field(a.decode(addr).field)
    assert a.peer_slot_of(addr) == slot
    assert a.peer_slot_of(str(addr)) == slot


@given(ids, host_ids, slots, machine_fields)
def test_peer_prefix_never_overlaps_machine_prefix(
    net: int, host: int, slot: int, field: int
) -> None:
    p120 = a.peer_prefix(net, host, slot)
    m112 = a.machine_prefix(net, host, field)
    assert not p120.overlaps(m112)
    assert a.peer_slot_of(a.machine_address(net, host, field)) is None


@given(slots, slots)
def test_peer_prefixes_distinct(s1: int, s2: int) -> None:
    assert (a.peer_prefix(7, 9, s1).overlaps(a.peer_prefix(7, 9, s2))) == (s1 == s2)


@given(ids, ids, fields, lows)
def test_peer_slot_of_rejects_non_peer_addresses(net: int, host: int, f: int, low: int) -> None:
    slot = a.peer_slot_of(a.encode(net, host, f, low))
    if a.is_peer_field(f) and low & 0xFF == 2:
        assert slot is not None
        assert a.peer_address(net, host, slot) == a.encode(net, host, f, low)
    else:
        assert slot is None


def test_peer_slot_of_outside_6pn() -> None:
    assert a.peer_slot_of(IPv6Address("2001:db8::a:2")) is None
    assert a.peer_slot_of("not an address") is None


@given(st.binary(min_size=16, max_size=16))
def test_net_id_from_packed_agrees_with_decode(packed: bytes) -> None:
    addr = IPv6Address(packed)
    got = a.net_id_from_packed(packed)
    if addr in a.SIXPN_PREFIX:
        assert got == a.decode(addr).net_id
    else:
        assert got is None


@given(ids, ids, fields, lows)
def test_net_id_from_packed_on_6pn(net: int, host: int, field: int, low: int) -> None:
    assert a.net_id_from_packed(a.encode(net, host, field, low).packed) == net


def test_net_id_from_packed_wrong_length() -> None:
    assert a.net_id_from_packed(b"\xfd\xaa") is None
    assert a.net_id_from_packed(b"\xfd\xaa" + bytes(15)) is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"net_id": -1}, "net_id"),
        ({"net_id": 2**32}, "net_id"),
        ({"net_id": 1, "host_id": 2**32}, "host_id"),
        ({"net_id": 1, "field": -5}, "field"),
        ({"net_id": 1, "low": 0x10000}, "low"),
        ({"net_id": True}, "net_id"),
    ],
)
def test_encode_rejects_out_of_range(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        a.encode(**kwargs)
    assert info.value.field == field
    assert field in info.value.message


@pytest.mark.parametrize("bad", ["fd00::1", "::1", "2001:db8::1", "nonsense", "10.0.0.1"])
def test_decode_rejects(bad: str) -> None:
    with pytest.raises(InvalidInput) as info:
        a.decode(bad)
    assert info.value.field == "address"


@pytest.mark.parametrize("field", [0, 9, a.PEER_FIELD_MIN, a.PEER_FIELD_MAX])
def test_machine_functions_refuse_non_machine_fields(field: int) -> None:
    with pytest.raises(InvalidInput, match="machine field"):
        a.machine_address(1, 1, field)
    with pytest.raises(InvalidInput, match="machine field"):
        a.machine_prefix(1, 1, field)


@pytest.mark.parametrize("slot", [-1, a.PEER_SLOTS])
def test_peer_functions_refuse_bad_slots(slot: int) -> None:
    with pytest.raises(InvalidInput) as info:
        a.peer_address(1, 1, slot)
    assert info.value.field == "slot"
    with pytest.raises(InvalidInput):
        a.peer_prefix(1, 1, slot)
