"""Entities decode their addresses through the C parser (model.entities.parse_ipv6): every
spelling of an address gives what ``ipaddress`` gives, and what it refuses is still refused
with pydantic's error."""

from __future__ import annotations

import json
from ipaddress import IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from sixpn.control import codec
from sixpn.model.entities import Machine

pytestmark = pytest.mark.unit

MACHINE = {
    "id": "aaaa0000000001",
    "org": "o",
    "app": "web",
    "network": "default",
    "net_id": 1,
    "host": "h1",
    "host_id": 1,
    "region": "fra",
    "field": 5,
    "address": "fdaa::5",
    "state": "started",
    "process_group": "app",
    "metadata": {},
    "created_at": 0.0,
    "updated_at": 0.0,
}


def decoded(address: object) -> IPv6Address:
    return codec.decode(Machine, json.dumps({**MACHINE, "address": address}).encode()).address


@given(st.integers(0, 2**128 - 1), st.sampled_from(["compressed", "exploded", "upper"]))
def test_every_spelling_decodes_as_ipaddress_reads_it(value: int, spelling: str) -> None:
    address = IPv6Address(value)
    text = address.exploded if spelling == "exploded" else str(address)
    text = text.upper() if spelling == "upper" else text
    machine = codec.decode(Machine, json.dumps({**MACHINE, "address": text}).encode())
    assert machine.address == IPv6Address(text)
    assert type(machine.address) is IPv6Address
    assert json.loads(codec.encode(machine))["address"] == str(address)  # stored as before


@pytest.mark.parametrize("bad", ["nope", "1.2.3.4", "fdaa::1::2", "fdaa:0:0:0:0:0:0:0:1", ""])
def test_what_ipaddress_refuses_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="not a valid IPv6 address"):
        decoded(bad)


def test_a_scope_id_is_left_to_ipaddress() -> None:
    assert decoded("fe80::1%eth0") == IPv6Address("fe80::1%eth0")
