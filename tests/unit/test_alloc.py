"""Allocation: counters never reuse, machine fields never collide, peer slots only go up."""

from __future__ import annotations

import random
from collections.abc import Callable
from ipaddress import IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from sixpn.core import addressing as a
from sixpn.core.alloc import (
    MACHINE_ID_RE,
    is_machine_id,
    new_machine_id,
    next_id,
    next_peer_slot,
    pick_free,
    pick_machine_field,
)
from sixpn.model.errors import Exhausted

pytestmark = pytest.mark.unit


def test_next_id_starts_at_one_and_counts() -> None:
    assert next_id(0, what="network ID") == 1
    assert next_id(41, what="host ID") == 42
    assert next_id(a.MAX_ID - 1, what="host ID") == a.MAX_ID


def test_next_id_exhausted_message() -> None:
    with pytest.raises(Exhausted) as info:
        next_id(a.MAX_ID, what="network ID")
    assert info.value.message == "allocating network ID: all 4294967295 IDs have been used"
    with pytest.raises(Exhausted, match="all 3 IDs"):
        next_id(3, what="thing", maximum=3)


def test_next_id_refuses_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        next_id(-1, what="network ID")


@given(st.randoms(use_true_random=False), st.sets(st.integers(0, a.MAX_ID), max_size=50))
def test_pick_machine_field_in_range_and_free(rng: random.Random, taken: set[int]) -> None:
    field = pick_machine_field(taken, rng.randrange)
    assert a.is_machine_field(field)
    assert field not in taken


def test_pick_machine_field_falls_back_to_scan() -> None:
    # A random source stuck on one taken value: the scan must still find the next free one.
    taken = {a.MACHINE_FIELD_MIN + i for i in range(10)}
    assert pick_machine_field(taken, lambda n: 0) == a.MACHINE_FIELD_MIN + 10
    # The scan wraps around the top of the range.
    top = {a.MACHINE_FIELD_MAX}
    assert pick_machine_field(top, lambda n: n - 1, tries=3) == a.MACHINE_FIELD_MIN


def test_pick_machine_field_rejects_bad_random_source() -> None:
    with pytest.raises(ValueError, match="rand_below"):
        pick_machine_field(set(), lambda n: n)


@given(
    st.integers(0, 40),
    st.integers(0, 40),
    st.data(),
)
def test_pick_free_small_ranges(low: int, width: int, data: st.DataObject) -> None:
    high = low + width
    taken = data.draw(st.sets(st.integers(low, high)))
    stuck: Callable[[int], int] = data.draw(st.sampled_from([lambda n: 0, lambda n: n - 1]))
    if len(taken) == width + 1:
        with pytest.raises(Exhausted, match="widget"):
            pick_free(taken, stuck, low=low, high=high, what="widget", tries=2)
    else:
        got = pick_free(taken, stuck, low=low, high=high, what="widget", tries=2)
        assert low <= got <= high
        assert got not in taken


def test_pick_free_with_plain_container_scans_whole_range() -> None:
    class Evens:
        def __contains__(self, x: object) -> bool:
            return isinstance(x, int) and x % 2 == 0

    assert pick_free(Evens(), lambda n: 0, low=0, high=9, what="odd", tries=1) == 1
    with pytest.raises(Exhausted):
        pick_free(Evens(), lambda n: 0, low=0, high=0, what="odd")


def test_next_peer_slot() -> None:
    assert next_peer_slot(None) == 0
    assert next_peer_slot(0) == 1
    assert next_peer_slot(a.PEER_SLOTS - 2) == a.PEER_SLOTS - 1
    with pytest.raises(Exhausted, match="peer slot"):
        next_peer_slot(a.PEER_SLOTS - 1)


@given(st.binary(min_size=7, max_size=7))
def test_new_machine_id(raw: bytes) -> None:
    mid = new_machine_id(lambda n: raw[:n])
    assert MACHINE_ID_RE.fullmatch(mid)
    assert is_machine_id(mid)
    assert bytes.fromhex(mid) == raw


def test_new_machine_id_wrong_length() -> None:
    with pytest.raises(ValueError, match="7"):
        new_machine_id(lambda n: b"\x00")
    assert not is_machine_id("0123456789abcd\n")
    assert not is_machine_id("0123456789ABCD")


class Fabric(RuleBasedStateMachine):
    """Networks, hosts and machines come and go; allocation keeps its promises."""

    def __init__(self) -> None:
        super().__init__()
        self.last_net = 0
        self.last_host = 0
        self.ever_nets: set[int] = set()
        self.ever_hosts: set[int] = set()
        self.nets: set[int] = set()
        self.hosts: set[int] = set()
        # (net, host) -> machine id -> field
        self.machines: dict[tuple[int, int], dict[str, int]] = {}
        self.rand_below: Callable[[int], int] = random.Random(0).randrange
        self.rand_bytes: Callable[[int], bytes] = random.Random(0).randbytes

    @initialize(rng=st.randoms(use_true_random=False), narrow=st.integers(0, 8))
    def seed(self, rng: random.Random, narrow: int) -> None:
        # narrow > 0 squeezes the random source into a few values so collisions and the
        # fallback scan happen often.
        if narrow:
            self.rand_below = lambda n: rng.randrange(min(n, narrow))
        else:
            self.rand_below = rng.randrange
        self.rand_bytes = rng.randbytes

    @rule()
    def create_network(self) -> None:
        net = next_id(self.last_net, what="network ID")
        assert net not in self.ever_nets
        assert net >= 1
        self.last_net = net
        self.ever_nets.add(net)
        self.nets.add(net)

    @precondition(lambda self: self.nets)
    @rule(data=st.data())
    def delete_network(self, data: st.DataObject) -> None:
        net = data.draw(st.sampled_from(sorted(self.nets)))
        self.nets.discard(net)
        for key in [k for k in self.machines if k[0] == net]:
            del self.machines[key]

    @rule()
    def create_host(self) -> None:
        host = next_id(self.last_host, what="host ID")
        assert host not in self.ever_hosts
        assert host >= 1
        self.last_host = host
        self.ever_hosts.add(host)
        self.hosts.add(host)

    @precondition(lambda self: self.hosts)
    @rule(data=st.data())
    def delete_host(self, data: st.DataObject) -> None:
        host = data.draw(st.sampled_from(sorted(self.hosts)))
        self.hosts.discard(host)
        for key in [k for k in self.machines if k[1] == host]:
            del self.machines[key]

    @precondition(lambda self: self.nets and self.hosts)
    @rule(data=st.data())
    def create_machine(self, data: st.DataObject) -> None:
        net = data.draw(st.sampled_from(sorted(self.nets)))
        host = data.draw(st.sampled_from(sorted(self.hosts)))
        live = self.machines.setdefault((net, host), {})
        field = pick_machine_field(set(live.values()), self.rand_below)
        mid = new_machine_id(self.rand_bytes)
        while any(mid in m for m in self.machines.values()):  # the store would retry too
            mid = new_machine_id(self.rand_bytes)
        live[mid] = field

    @precondition(lambda self: any(self.machines.values()))
    @rule(data=st.data())
    def destroy_machine(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(k for k, v in self.machines.items() if v)))
        mid = data.draw(st.sampled_from(sorted(self.machines[key])))
        del self.machines[key][mid]

    @invariant()
    def fields_unique_and_in_range(self) -> None:
        for (net, host), live in self.machines.items():
            assert net in self.nets
            assert host in self.hosts
            fields = list(live.values())
            assert len(fields) == len(set(fields))
            assert all(a.is_machine_field(f) for f in fields)

    @invariant()
    def ids_only_go_up(self) -> None:
        assert self.ever_nets == set(range(1, self.last_net + 1))
        assert self.ever_hosts == set(range(1, self.last_host + 1))
        assert self.nets <= self.ever_nets
        assert self.hosts <= self.ever_hosts

    @invariant()
    def addresses_decode(self) -> None:
        seen: set[IPv6Address] = set()
        for (net, host), live in self.machines.items():
            for mid, field in live.items():
                assert is_machine_id(mid)
                addr = a.machine_address(net, host, field)
                assert a.decode(addr) == a.Decoded(net, host, field, 2)
                assert addr not in seen
                seen.add(addr)


Fabric.TestCase.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)
TestFabric = Fabric.TestCase
