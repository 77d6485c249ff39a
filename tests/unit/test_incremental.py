"""One host's desired state kept change by change (core/incremental.py) equals the one built
from scratch (core/desired.py), after every change of random fleets and change sequences, on
every host; it says "changed" exactly when the state moved, and the plan of what it journaled
is the plan between the states before and after."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixpn.core.desired import desired_state
from sixpn.core.hoststate import HostState
from sixpn.core.incremental import IncrementalDesired
from sixpn.core.plan import Moves, plan, plan_moves
from sixpn.model.entities import Host, Machine, MachineState, Peer
from sixpn.view import Delta, View
from tests.unit.test_plan import KEYS, host, machine, vpc_peer

pytestmark = pytest.mark.unit

HOSTS = {h.name: h for h in (host("a", 1, gateway=True), host("b", 2), host("c", 3))}
IDS = [f"{i:04x}aaaa000000" for i in range(1, 9)]
STATES = [MachineState.STARTED, MachineState.STOPPED, MachineState.DESTROYED]


def orchestrator_netns(machine_id: str) -> str | None:
    """Some machines live in a namespace their orchestrator made."""
    return f"orch-{machine_id}" if int(machine_id[:4], 16) % 3 == 0 else None


changes = st.lists(
    st.one_of(
        st.tuples(
            st.just("machine"),
            st.sampled_from(IDS),
            st.sampled_from(sorted(HOSTS)),
            st.sampled_from([1, 2, 3]),
            st.sampled_from([*STATES, None]),  # None: deleted
        ),
        st.tuples(
            st.just("peer"),
            st.sampled_from(["laptop", "vpc"]),
            st.sampled_from([1, 2]),
            st.sampled_from(["a", "b"]),  # its gateway
            st.booleans(),  # with a route
            st.booleans(),  # present (else deleted)
        ),
        st.tuples(
            st.just("host"),
            st.sampled_from([*sorted(HOSTS), "d"]),
            st.sampled_from(["endpoint", "gateway", "remove"]),
        ),
    ),
    min_size=1,
    max_size=30,
)


def from_scratch(
    me: str, hosts: dict[str, Host], machines: dict[str, Machine], peers: dict[str, Peer]
) -> HostState:
    netns = {m: ns for m in machines if (ns := orchestrator_netns(m)) is not None}
    return desired_state(
        hosts[me],
        hosts,
        machines.values(),
        peers.values(),
        listen_port=51820,
        wg="wg0",
        netns_of=netns,
    )


def change(view: View, step: tuple) -> Delta | None:  # type: ignore[type-arg]
    """Apply one step to the view, as the change stream would; the delta it made."""
    hosts, machines, peers = view.hosts, view.machines, view.peers
    match step:
        case ("machine", mid, on, net, state):
            old = machines.get(mid)
            if old is None and (on not in hosts or state is None):
                return None
            new = None
            if state is not None:
                new = dataclasses.replace(machine(mid, hosts[on], net), state=state)
                if old is not None:  # a machine keeps its host and network
                    new = dataclasses.replace(old, state=state)
                machines[mid] = new
            else:
                del machines[mid]
            return Delta("machine", old, new)
        case ("peer", name, net, gateway, routed, present):
            key = ("o", name)
            old_peer = peers.get(key)
            new_peer = None
            if present and gateway in hosts:
                route = "2001:db8:1::/56" if name == "vpc" else "2001:db8:2::/56"
                made = vpc_peer(net, hosts[gateway], route, name=name)
                made = dataclasses.replace(
                    made,
                    routes=made.routes if routed else (),
                    # keys no host has (hosts have KEYS[host_id], 1-4): one key, one peer
                    public_key=KEYS[0 if name == "vpc" else 5],
                    slot=1 if name == "vpc" else 2,
                )
                new_peer = old_peer or made
                peers[key] = new_peer
            elif old_peer is not None:
                del peers[key]
            else:
                return None
            return Delta("peer", old_peer, new_peer)
        case ("host", name, what):
            old_host = hosts.get(name)
            if what == "remove":
                if name != "d" or old_host is None:
                    return None  # only the extra host comes and goes
                del hosts[name]
                return Delta("host", old_host, None)
            if old_host is None:
                new_host = host(name, 4) if name == "d" else None
            elif what == "endpoint":
                new_host = dataclasses.replace(old_host, endpoint="192.0.2.99:51821")
            else:
                new_host = dataclasses.replace(old_host, gateway=not old_host.gateway)
            if new_host is None:
                return None
            hosts[name] = new_host
            return Delta("host", old_host, new_host)
    raise AssertionError(step)


@settings(max_examples=200, deadline=None)
@given(changes)
def test_the_state_kept_change_by_change_is_the_one_built_from_scratch(steps: list) -> None:  # type: ignore[type-arg]
    view = View(revision=0, hosts=dict(HOSTS))
    kept = {
        me: IncrementalDesired(me, listen_port=51820, wg="wg0", netns_of=orchestrator_netns)
        for me in HOSTS
    }
    applied = {}  # what each host's kernel holds: the state at its last take
    for me, desired in kept.items():
        applied[me] = desired.load(view)
        assert applied[me] == from_scratch(me, view.hosts, view.machines, view.peers)
        desired.take()  # a load is applied in full (a kernel read), not from its journal
    for i, step in enumerate(steps):
        before = {me: desired.state for me, desired in kept.items()}
        delta = change(view, step)
        if delta is None:
            continue
        for me, desired in kept.items():
            moved = desired.apply([delta])
            want = from_scratch(me, view.hosts, view.machines, view.peers)
            assert desired.state == want, (me, step)
            assert moved == (want != before[me]), (me, step)
            if i % 2 == 0:  # journals over one change, and over two (coalesced)
                moves = desired.take()
                assert moves == Moves.between(applied[me], want), (me, step)
                assert plan_moves(moves) == plan(applied[me], want), (me, step)
                applied[me] = want


def test_a_namespace_made_later_is_taken_at_the_recheck() -> None:
    made: set[str] = set()
    a = HOSTS["a"]
    view = View(revision=1, hosts=dict(HOSTS))
    m = machine(IDS[0], a, 1)
    view.machines[m.id] = m
    desired = IncrementalDesired("a", 51820, "wg0", lambda mid: mid if mid in made else None)
    desired.load(view)
    assert {link.netns for link in desired.state.machines} == {f"sixpn-m-{m.id}"}
    assert desired.recheck_netns() is False
    before = desired.state
    desired.take()
    made.add(m.id)
    assert desired.recheck_netns() is True
    assert {link.netns for link in desired.state.machines} == {m.id}
    # rewired into the orchestrator's namespace: unwired, wired, its route added again
    ops = plan_moves(desired.take())
    assert ops == plan(before, desired.state)
    assert [type(op).__name__ for op in ops] == ["UnwireMachine", "WireMachine", "AddRoute"]
