"""The planner: from any actual state, its plan applied (to the model) gives the desired state,
and a second plan is empty. Plus the desired-state function on a small fleet."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv6Address, IPv6Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixpn.cli.doctor import describe
from sixpn.core import addressing
from sixpn.core.desired import desired_state
from sixpn.core.hoststate import (
    PEERING_TABLE,
    SIXPN_ROUTE,
    HostState,
    MachineLink,
    Peering,
    Route,
    Source,
    WgPeer,
    machine_ifname,
    machine_netns,
    source_of,
)
from sixpn.core.plan import (
    AddRoute,
    EnsureWg,
    RemovePeers,
    RemoveStrayLink,
    SetPeers,
    UnwireMachine,
    WireMachine,
    apply,
    plan,
)
from sixpn.model.entities import Host, Machine, MachineState, Peer

pytestmark = pytest.mark.unit

KEYS = [f"{i:02d}" + "k" * 41 + "=" for i in range(6)]
IDS = [f"{i:x}" * 14 for i in range(1, 7)]  # distinct 12-character prefixes
IFNAMES = [machine_ifname(i) for i in IDS]
NETS = [addressing.network_prefix(n) for n in (1, 2, 3)]
PEERINGS = [
    Peering(n, IPv6Network(r)) for n in NETS[:2] for r in ("2001:db8:1::/56", "2001:db8:2::7/128")
]

prefixes = st.sampled_from(
    [addressing.host_prefix(n, h) for n in (1, 2, 3) for h in (1, 2)]
    + [addressing.peer_prefix(1, 1, s) for s in range(3)]
)
peers = st.builds(
    WgPeer,
    public_key=st.sampled_from(KEYS),
    allowed_ips=st.frozensets(prefixes, max_size=3),
    endpoint=st.sampled_from([None, "192.0.2.1:51820", "192.0.2.2:51820"]),
    keepalive=st.sampled_from([0, 25]),
)


@st.composite
def links(draw: st.DrawFn) -> MachineLink:
    mid = draw(st.sampled_from(IDS))
    net = draw(st.sampled_from([1, 2]))
    field = 0x10000 + IDS.index(mid) * 7 + draw(st.integers(0, 1))
    return MachineLink(
        machine_id=mid,
        netns=draw(st.sampled_from([machine_netns(mid), f"orch-{mid}"])),
        host_ifname=machine_ifname(mid),
        address=addressing.machine_address(net, 1, field),
        prefix=addressing.machine_prefix(net, 1, field),
    )


def unique_by_id(ls: frozenset[MachineLink]) -> frozenset[MachineLink]:
    seen: dict[str, MachineLink] = {}
    for link in sorted(ls, key=lambda x: (x.machine_id, str(x.address), x.netns)):
        seen.setdefault(link.machine_id, link)
    return frozenset(seen.values())


def unique_by_key(ps: frozenset[WgPeer]) -> frozenset[WgPeer]:
    seen: dict[str, WgPeer] = {}
    for p in sorted(ps, key=lambda x: (x.public_key, repr(x))):
        seen.setdefault(p.public_key, p)
    return frozenset(seen.values())


addresses = st.frozensets(
    st.sampled_from(
        [addressing.DNS_ADDRESS, *(addressing.network_service_address(n) for n in (1, 2))]
    )
)


@st.composite
def desired_states(draw: st.DrawFn) -> HostState:
    wg = draw(st.sampled_from(["sxw1", "sxw2"]))
    machines = unique_by_id(draw(st.frozensets(links(), max_size=4)))
    routes = {Route(SIXPN_ROUTE, wg)} | {Route(m.prefix, m.host_ifname) for m in machines}
    return HostState(
        wg_ifname=wg,
        listen_port=draw(st.sampled_from([51820, 51821])),
        wg_peers=unique_by_key(draw(st.frozensets(peers, max_size=4))),
        service_addresses=draw(addresses),
        machines=machines,
        routes=frozenset(routes),
        pairs=draw(st.frozensets(st.sampled_from(NETS))),
        sources=frozenset(source_of(m) for m in machines),
        peered=draw(st.frozensets(st.sampled_from(PEERINGS))),
    )


@st.composite
def actual_states(draw: st.DrawFn) -> HostState:
    """Anything the kernel might hold: partial, drifted, or from another fleet state."""
    base = draw(desired_states())
    extra_routes = draw(
        st.frozensets(
            st.builds(Route, st.sampled_from([SIXPN_ROUTE, *NETS]), st.sampled_from(["sxw1", "x"]))
        )
    )
    partial = draw(st.frozensets(links(), max_size=3)) - base.machines
    return HostState(
        wg_ifname=draw(st.sampled_from([None, base.wg_ifname])),
        listen_port=base.listen_port,
        wg_peers=base.wg_peers,
        service_addresses=base.service_addresses,
        machines=base.machines,
        routes=draw(st.frozensets(st.sampled_from(sorted(base.routes, key=str)))) | extra_routes,
        pairs=draw(st.frozensets(st.sampled_from(NETS))),
        # some of the machines' elements, and elements of machines no longer there
        sources=frozenset(s for s in base.sources if draw(st.booleans()))
        | draw(st.frozensets(links().map(source_of), max_size=2)),
        peered=draw(st.frozensets(st.sampled_from(PEERINGS))),
        nft_rules_ok=draw(st.booleans()),
        # wired in part: some of the desired machines, and machines no longer wanted
        partial_machines=partial,
        # links that record no machine, of machines desired or not (one link per name)
        stray_links=draw(st.frozensets(st.sampled_from(IFNAMES), max_size=2))
        - {m.host_ifname for m in base.machines | partial},
    )


def forget_learned_endpoints(state: HostState, desired: HostState) -> HostState:
    """A client peer's endpoint is learned by WireGuard, not planned: leave it out."""
    learned = {p.public_key for p in desired.wg_peers if p.endpoint is None}
    peers = frozenset(
        WgPeer(p.public_key, p.allowed_ips, None, p.keepalive) if p.public_key in learned else p
        for p in state.wg_peers
    )
    return dataclasses.replace(state, wg_peers=peers)


@settings(max_examples=400, deadline=None)
@given(actual_states(), desired_states())
def test_the_plan_takes_any_actual_state_to_the_desired_one(
    actual: HostState, desired: HostState
) -> None:
    if actual.wg_ifname is None:
        actual = HostState(
            wg_ifname=None,
            service_addresses=actual.service_addresses,
            machines=actual.machines,
            routes=frozenset(r for r in actual.routes if r.ifname != "sxw1"),
            pairs=actual.pairs,
            sources=actual.sources,
            peered=actual.peered,
            nft_rules_ok=actual.nft_rules_ok,
            partial_machines=actual.partial_machines,
            stray_links=actual.stray_links,
        )
    ops = plan(actual, desired)
    assert forget_learned_endpoints(apply(actual, ops), desired) == desired
    assert plan(desired, desired) == []
    assert plan(apply(actual, ops), desired) == []


def test_a_wiring_cut_short_is_finished_or_removed_at_once_never_left_for_teardown() -> None:
    """Issue 17: what an interrupted wiring leaves (a link recording the machine, or a pair
    whose host side records nothing yet) is removed by the next plan if the machine is no
    longer wanted, and completed (or made afresh) if it is; a machine broken by hand is wired
    again, never unwired first (its namespace, and what runs there, stay)."""
    stays, gone = (
        MachineLink(
            mid,
            machine_netns(mid),
            machine_ifname(mid),
            addressing.machine_address(1, 1, field),
            addressing.machine_prefix(1, 1, field),
        )
        for mid, field in ((IDS[0], 0x10001), (IDS[1], 0x10002))
    )
    routes = frozenset({Route(stays.prefix, stays.host_ifname)})
    want = HostState("sxw1", machines=frozenset({stays}), routes=routes)
    half = dataclasses.replace(want, partial_machines=frozenset({gone}))
    bare = dataclasses.replace(want, stray_links=frozenset({gone.host_ifname}))
    assert plan(half, want) == [UnwireMachine(gone)]
    assert plan(bare, want) == [RemoveStrayLink(gone.host_ifname)]
    both = dataclasses.replace(
        want,
        machines=want.machines | {gone},
        routes=want.routes | {Route(gone.prefix, gone.host_ifname)},
    )
    assert plan(half, both) == [WireMachine(gone), AddRoute(Route(gone.prefix, gone.host_ifname))]
    assert plan(bare, both) == [
        RemoveStrayLink(gone.host_ifname),
        WireMachine(gone),
        AddRoute(Route(gone.prefix, gone.host_ifname)),
    ]
    for actual in (half, bare):
        assert apply(actual, plan(actual, want)) == want
        assert apply(actual, plan(actual, both)) == both
    # in part with its route still there: the pair may be made again, so the route too
    routed = dataclasses.replace(half, routes=both.routes)
    assert plan(routed, both) == [WireMachine(gone), AddRoute(Route(gone.prefix, gone.host_ifname))]
    assert apply(routed, plan(routed, both)) == both
    # its veth deleted by hand: the machine is simply not read, and is wired again
    broken = dataclasses.replace(both, machines=want.machines, routes=want.routes)
    assert plan(broken, both) == [
        WireMachine(gone),
        AddRoute(Route(gone.prefix, gone.host_ifname)),
    ]


def test_a_client_peers_learned_endpoint_is_not_a_difference() -> None:
    want = WgPeer(KEYS[0], frozenset({addressing.peer_prefix(1, 1, 0)}))
    learned = WgPeer(KEYS[0], want.allowed_ips, endpoint="198.51.100.7:40000")
    state = HostState(wg_ifname="sxw1", listen_port=51820, wg_peers=frozenset({want}))
    assert plan(HostState("sxw1", 51820, frozenset({learned})), state) == []
    moved = WgPeer(KEYS[1], want.allowed_ips, endpoint="192.0.2.2:51820")
    roamed = WgPeer(KEYS[1], want.allowed_ips, endpoint="192.0.2.9:51820")
    mesh = HostState("sxw1", 51820, frozenset({moved}))
    assert plan(HostState("sxw1", 51820, frozenset({roamed})), mesh) == [
        SetPeers(frozenset({moved}))
    ]


def gateway_peers(n: int) -> list[WgPeer]:
    """``n`` client peers of network 1 on gateway host 7, as a gateway holds them."""
    return [WgPeer(f"{i:043d}=", frozenset({addressing.peer_prefix(1, 7, i)})) for i in range(n)]


def test_one_peer_added_or_removed_among_5000_is_an_operation_on_that_peer_alone() -> None:
    """SPEC 9: one gateway holds 5,000 peers; adding or removing one touches no other."""
    *held, new = gateway_peers(5001)
    before = HostState("sxw7", 51820, frozenset(held))
    after = dataclasses.replace(before, wg_peers=before.wg_peers | {new})
    assert plan(before, after) == [SetPeers(frozenset({new}))]
    gone = held[1234]
    without = dataclasses.replace(before, wg_peers=before.wg_peers - {gone})
    assert plan(before, without) == [RemovePeers(frozenset({gone.public_key}))]
    # a peer whose routes changed: that peer, with exactly its new allowed IPs
    routed = WgPeer(gone.public_key, gone.allowed_ips | {IPv6Network("2001:db8::/64")})
    rerouted = dataclasses.replace(without, wg_peers=without.wg_peers | {routed})
    assert plan(before, rerouted) == [SetPeers(frozenset({routed}))]
    # a host whose listen port changed keeps its interface, so its peers stay
    moved_port = dataclasses.replace(after, listen_port=51821)
    assert plan(before, moved_port) == [EnsureWg("sxw7", 51821), SetPeers(frozenset({new}))]


def test_a_batch_of_peers_is_one_operation_whose_text_stays_short() -> None:
    peers = gateway_peers(5000)
    (op,) = plan(HostState("sxw7", 51820), HostState("sxw7", 51820, frozenset(peers)))
    assert op == SetPeers(frozenset(peers))
    assert str(op).startswith("SetPeers(5000 peers: 0000")
    assert str(op).endswith(" and 4997 more)")
    assert len(str(op)) < 300
    (gone,) = plan(HostState("sxw7", 51820, frozenset(peers)), HostState("sxw7", 51820))
    assert gone == RemovePeers(frozenset(p.public_key for p in peers))
    assert len(str(gone)) < 200
    # `sixpn doctor isolation` says the same in a line: how many, and the first few
    assert describe(op).startswith("WireGuard peers missing or different (5000): 000000000000...")
    assert describe(gone).endswith(" and 4990 more")
    one = SetPeers(frozenset(peers[:1]))
    assert str(one) == f"SetPeers(1 peer: {peers[0].public_key} (fdaa:0:1:0:7:0:a:0/120))"


def host(name: str, host_id: int, region: str = "fra", *, gateway: bool = False) -> Host:
    return Host(
        name=name,
        host_id=host_id,
        region=region,
        endpoint=f"192.0.2.{host_id}:51820",
        public_key=KEYS[host_id],
        gateway=gateway,
        created_at=0.0,
    )


def machine(mid: str, host_: Host, net: int, state: MachineState = MachineState.STARTED) -> Machine:
    field = 0x10000 + int(mid[:4], 16)
    return Machine(
        id=mid,
        org="o",
        app="web",
        network="default",
        net_id=net,
        host=host_.name,
        host_id=host_.host_id,
        region=host_.region,
        field=field,
        address=addressing.machine_address(net, host_.host_id, field),
        state=state,
        process_group="app",
        metadata={},
        created_at=0.0,
        updated_at=0.0,
    )


def test_desired_state_of_a_small_fleet() -> None:
    a, b, c = host("a", 1, gateway=True), host("b", 2), host("c", 3)
    hosts = {h.name: h for h in (a, b, c)}
    ms = [
        machine("1111aaaa000000", a, 1),
        machine("2222aaaa000000", a, 2, MachineState.STOPPED),
        machine("3333bbbb000000", b, 1),
        machine("4444bbbb000000", b, 1),
        machine("5555cccc000000", c, 2, MachineState.DESTROYED),
    ]
    laptop = Peer(
        org="o",
        name="laptop",
        network="default",
        net_id=3,
        gateway="a",
        host_id=1,
        slot=0,
        address=addressing.peer_address(3, 1, 0),
        public_key=KEYS[5],
        ephemeral=False,
        created_at=0.0,
        routes=(IPv6Network("2001:db8::/64"),),
    )
    state = desired_state(a, hosts, ms, [laptop], listen_port=51820)
    assert state.wg_ifname == "sxw1"
    by_key = {p.public_key: p for p in state.wg_peers}
    assert by_key[b.public_key].allowed_ips == {addressing.host_prefix(1, 2)}
    assert by_key[b.public_key].endpoint == b.endpoint
    assert by_key[c.public_key].allowed_ips == frozenset()  # only a destroyed machine there
    assert by_key[laptop.public_key].allowed_ips == {
        addressing.peer_prefix(3, 1, 0),
        IPv6Network("2001:db8::/64"),
    }
    assert {m.machine_id for m in state.machines} == {"1111aaaa000000", "2222aaaa000000"}
    assert state.pairs == {addressing.network_prefix(n) for n in (1, 2, 3)}
    assert (
        state.sources
        == {  # stopped machines keep their wiring, so their sources too
            Source(machine_ifname(m.id), addressing.machine_prefix(m.net_id, 1, m.field))
            for m in ms[:2]
        }
    )
    assert state.service_addresses == {
        IPv6Address("fdaa::3"),
        addressing.network_service_address(3),
    }
    assert Route(SIXPN_ROUTE, "sxw1") in state.routes
    # a new machine where its network already is changes no mesh peer
    more = [*ms, machine("6666bbbb000000", b, 1)]
    assert desired_state(a, hosts, more, [laptop], listen_port=51820).wg_peers == state.wg_peers


def vpc_peer(net: int, gateway: Host, route: str, name: str = "vpc") -> Peer:
    return Peer(
        org="o",
        name=name,
        network="default",
        net_id=net,
        gateway=gateway.name,
        host_id=gateway.host_id,
        slot=0,
        address=addressing.peer_address(net, gateway.host_id, 0),
        public_key=KEYS[5],
        ephemeral=False,
        created_at=0.0,
        routes=(IPv6Network(route),),
    )


def test_routed_peering_is_wired_on_every_host_of_the_network_and_nowhere_else() -> None:
    """SPEC 6: a peer's route goes to its gateway's mesh peer, to the WireGuard interface and
    into ``peered`` with its network on every host holding that network, and only there."""
    a, b, c = host("a", 1, gateway=True), host("b", 2), host("c", 3)
    hosts = {h.name: h for h in (a, b, c)}
    ms = [machine("1111aaaa000000", b, 1), machine("2222aaaa000000", c, 2)]
    vpc = vpc_peer(1, a, "2001:db8:1::/56")
    route = IPv6Network("2001:db8:1::/56")
    peering = Peering(addressing.network_prefix(1), route)

    on_b = desired_state(b, hosts, ms, [vpc], listen_port=51820)
    mesh = {p.public_key: p.allowed_ips for p in on_b.wg_peers}
    assert mesh[a.public_key] == {addressing.host_prefix(1, 1), route}  # the gateway's
    assert route not in mesh[c.public_key]
    assert Route(route, "sxw2", PEERING_TABLE) in on_b.routes  # looked up only from 6PN
    assert on_b.peered == {peering}

    on_a = desired_state(a, hosts, ms, [vpc], listen_port=51820)
    assert {p.public_key: p.allowed_ips for p in on_a.wg_peers}[vpc.public_key] == {
        addressing.peer_prefix(1, 1, 0),
        route,
    }
    assert Route(route, "sxw1", PEERING_TABLE) in on_a.routes
    assert on_a.peered == {peering}

    # c holds only network 2: nothing of the route
    on_c = desired_state(c, hosts, ms, [vpc], listen_port=51820)
    assert all(route not in p.allowed_ips for p in on_c.wg_peers)
    assert all(r.prefix != route for r in on_c.routes)
    assert on_c.peered == frozenset()

    # the peer removed: the plan takes the route out of b's mesh, routes and nftables
    without = desired_state(b, hosts, ms, [], listen_port=51820)
    ops = plan(on_b, without)
    assert apply(on_b, ops) == without
    assert route not in {r.prefix for r in without.routes}
    assert without.peered == frozenset()
    assert (
        "nftables: routed peering allowed that should not be: fdaa:0:1::/48 . 2001:db8:1::/56"
        in [describe(op) for op in ops]
    )


def test_doctor_says_every_kind_of_operation_in_words() -> None:
    """`sixpn doctor isolation` has a sentence for each operation the plan can make (a new one
    would otherwise print as its repr)."""
    import typing

    from sixpn.core import plan as plan_module

    kinds = typing.get_args(plan_module.Op)
    assert RemoveStrayLink in kinds
    assert len(kinds) >= 18
    for kind in kinds:
        fields = {f.name: f.type for f in dataclasses.fields(kind)}
        sample = {
            name: {"str": "x", "int": 1, "bool": True}.get(str(t), frozenset())
            for name, t in fields.items()
        }
        if "link" in fields:
            sample["link"] = machine_link_sample()
        if "route" in fields:
            sample["route"] = Route(IPv6Network("fdaa::/16"), "sxw7")
        if "address" in fields:
            sample["address"] = IPv6Address("fdaa::3")
        op = kind(**sample)
        assert describe(op) != str(op), kind.__name__


def machine_link_sample() -> MachineLink:
    return MachineLink(
        "m1", "sixpn-m-m1", "sxmm1", IPv6Address("fdaa::2"), IPv6Network("fdaa::/112")
    )
