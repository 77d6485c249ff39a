"""The desired state of one host's data path, as a pure function of the fleet (SPEC 2, 3, 7).

- the mesh: a WireGuard peer for every other host, AllowedIPs = the /80s of the networks that
  have machines (not destroyed) or client peers on that host; so creating a machine where its
  network already has machines changes no peer;
- on a gateway, a WireGuard peer for each client peer it serves, AllowedIPs = its /120 (and its
  routed prefixes);
- ``fdaa::/16`` routed to the WireGuard interface (cryptokey routing picks the host), each local
  machine's /112 to its veth;
- ``fdaa::3`` on lo, and on a gateway ``<net48>::3`` for every network with peers on it;
- the forwarding pairs: the /48 of every network present on this host;
- the sources: each local machine's veth with its /112 (what it may send from);
- routed peering (SPEC 6): for every peer with routes whose network is present on this host,
  each route goes to the WireGuard interface (a kernel route in the table that only packets
  from 6PN look up, ``PEERING_TABLE``), into the AllowedIPs of the
  peer's gateway in the mesh (on the gateway itself it is in the client peer's already), and
  into ``peered`` with the network's /48: that network's machines and peers, and no others,
  exchange packets with it. A host without the network holds none of it;
- every machine on this host wired, started or stopped (a stopped machine keeps its wiring and
  only leaves DNS); destroyed ones unwired.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv6Network

from sixpn.core import addressing
from sixpn.core.hoststate import (
    PEERING_TABLE,
    SIXPN_ROUTE,
    HostState,
    MachineLink,
    Peering,
    Route,
    WgPeer,
    machine_ifname,
    machine_netns,
    source_of,
    wg_ifname,
)
from sixpn.model.entities import Entity, Host, Machine, MachineState, Peer

MESH_KEEPALIVE = 25


def carried(entity: Entity | None) -> tuple[str, int] | None:
    """(host, network) an entity makes a host carry: a live machine, a client peer."""
    if isinstance(entity, Machine) and entity.state != MachineState.DESTROYED:
        return entity.host, entity.net_id
    if isinstance(entity, Peer):
        return entity.gateway, entity.net_id
    return None


def mesh_peer(other: Host, networks: Iterable[int], routed: Iterable[IPv6Network]) -> WgPeer:
    """Another host as a peer of the mesh: the /80s of the networks it carries, and the routes
    of the routed peers it serves (in networks this host carries)."""
    allowed = frozenset({*(addressing.host_prefix(n, other.host_id) for n in networks), *routed})
    return WgPeer(other.public_key, allowed, endpoint=other.endpoint, keepalive=MESH_KEEPALIVE)


def served_peer(peer: Peer) -> WgPeer:
    """A client peer served by this host: its /120 and its routed prefixes."""
    allowed = frozenset(
        {addressing.peer_prefix(peer.net_id, peer.host_id, peer.slot), *peer.routes}
    )
    return WgPeer(peer.public_key, allowed)


def machine_link(machine: Machine, netns: str | None = None) -> MachineLink:
    return MachineLink(
        machine_id=machine.id,
        netns=netns or machine_netns(machine.id),
        host_ifname=machine_ifname(machine.id),
        address=machine.address,
        prefix=addressing.machine_prefix(machine.net_id, machine.host_id, machine.field),
    )


def networks_by_host(machines: Iterable[Machine], peers: Iterable[Peer]) -> dict[str, set[int]]:
    """Host name -> IDs of the networks with a live machine or a client peer there."""
    present: dict[str, set[int]] = {}
    entities: list[Entity] = [*machines, *peers]
    for entity in entities:
        where = carried(entity)
        if where is not None:
            present.setdefault(where[0], set()).add(where[1])
    return present


def desired_state(
    me: Host,
    hosts: Mapping[str, Host],
    machines: Iterable[Machine],
    peers: Iterable[Peer],
    *,
    listen_port: int,
    wg: str | None = None,
    netns_of: Mapping[str, str] | None = None,
) -> HostState:
    """What ``me`` should hold, on interface ``wg`` (default ``sxw<host id>``).

    ``netns_of`` names orchestrator namespaces by machine ID.
    """
    machines = list(machines)
    peers = list(peers)
    present = networks_by_host(machines, peers)
    wg = wg or wg_ifname(me.host_id)
    mine = present.get(me.name, set())
    routed = [p for p in peers if p.routes and p.net_id in mine]
    routed_via: dict[str, set[IPv6Network]] = {}
    for p in routed:
        routed_via.setdefault(p.gateway, set()).update(p.routes)

    wg_peers: set[WgPeer] = set()
    for other in hosts.values():
        if other.name == me.name:
            continue
        wg_peers.add(mesh_peer(other, present.get(other.name, ()), routed_via.get(other.name, ())))
    served = [p for p in peers if p.gateway == me.name]
    wg_peers.update(served_peer(p) for p in served)

    links = {
        machine_link(m, (netns_of or {}).get(m.id))
        for m in machines
        if m.host == me.name and m.state != MachineState.DESTROYED
    }
    routes = {Route(SIXPN_ROUTE, wg)} | {Route(link.prefix, link.host_ifname) for link in links}
    routes |= {Route(r, wg, PEERING_TABLE) for p in routed for r in p.routes}
    service = {addressing.DNS_ADDRESS}
    if me.gateway:
        # one address per network, not per peer: a gateway serves thousands of peers
        service |= {addressing.network_service_address(n) for n in {p.net_id for p in served}}
    pairs: frozenset[IPv6Network] = frozenset(addressing.network_prefix(n) for n in mine)
    return HostState(
        wg_ifname=wg,
        listen_port=listen_port,
        wg_peers=frozenset(wg_peers),
        service_addresses=frozenset(service),
        machines=frozenset(links),
        routes=frozenset(routes),
        pairs=pairs,
        sources=frozenset(source_of(link) for link in links),
        peered=frozenset(
            Peering(addressing.network_prefix(p.net_id), r) for p in routed for r in p.routes
        ),
    )
