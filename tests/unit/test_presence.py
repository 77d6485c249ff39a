"""The agent's per-change filter (agent/presence.py): a change it calls irrelevant to a host
leaves that host's desired state exactly as it was, on random fleets and changes."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixpn.agent.presence import Presence
from sixpn.core.desired import desired_state
from sixpn.model.entities import Host, Machine, MachineState, Peer
from sixpn.view import Delta, View
from tests.unit.test_plan import KEYS, host, machine, vpc_peer

pytestmark = pytest.mark.unit

HOSTS = {h.name: h for h in (host("a", 1, gateway=True), host("b", 2), host("c", 3))}
IDS = [f"{i:04x}aaaa000000" for i in range(1, 9)]
STATES = [MachineState.STARTED, MachineState.STOPPED, MachineState.DESTROYED]

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
            st.booleans(),  # with a route
            st.booleans(),  # present (else deleted)
        ),
        st.tuples(st.just("host"), st.sampled_from(sorted(HOSTS)), st.integers(1, 2)),
    ),
    min_size=1,
    max_size=25,
)


def state_of(me: str, hosts: dict[str, Host], machines: dict[str, Machine], peers: dict[str, Peer]):  # type: ignore[no-untyped-def]
    return desired_state(hosts[me], hosts, machines.values(), peers.values(), listen_port=51820)


@settings(max_examples=150, deadline=None)
@given(changes)
def test_a_change_called_irrelevant_leaves_the_desired_state_as_it_was(steps: list) -> None:  # type: ignore[type-arg]
    hosts = dict(HOSTS)
    machines: dict[str, Machine] = {}
    peers: dict[str, Peer] = {}
    presence = {me: Presence(me) for me in hosts}
    for p in presence.values():
        p.load(View(revision=0))
    for step in steps:
        before = {me: state_of(me, hosts, machines, peers) for me in hosts}
        match step:
            case ("machine", mid, on, net, state):
                old = machines.get(mid)
                new = None
                if state is not None:
                    new = dataclasses.replace(machine(mid, hosts[on], net), state=state)
                    if old is not None:  # a machine keeps its host and network
                        new = dataclasses.replace(old, state=state)
                    machines[mid] = new
                else:
                    machines.pop(mid, None)
                delta = Delta("machine", old, new)
            case ("peer", name, net, routed, present):
                old_peer = peers.get(name)
                new_peer = None
                if present:
                    route = "2001:db8:1::/56" if name == "vpc" else "2001:db8:2::/56"
                    made = vpc_peer(net, hosts["a"], route, name=name)
                    if not routed:
                        made = dataclasses.replace(made, routes=())
                    made = dataclasses.replace(made, public_key=KEYS[4 if name == "vpc" else 5])
                    new_peer = old_peer or made
                    peers[name] = new_peer
                else:
                    peers.pop(name, None)
                delta = Delta("peer", old_peer, new_peer)
            case ("host", name, port):
                old_host = hosts[name]
                hosts[name] = dataclasses.replace(old_host, endpoint=f"192.0.2.9:5182{port}")
                delta = Delta("host", old_host, hosts[name])
        for me in hosts:
            if delta.old is None and delta.new is None:
                continue
            if not presence[me].apply([delta]):
                assert state_of(me, hosts, machines, peers) == before[me], (me, step)
