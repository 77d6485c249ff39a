"""Use cases for WireGuard peers: laptops, CI runners, gateways of external networks.

Rules: the private key never reaches the server (only a public key is accepted); a peer gets a
/120 in its gateway host's /80 of its network (``core.addressing``), handed out in increasing
order per (network, gateway) and never reused; the gateway is a gateway host of the requested
region, or of the nearest region that has one; peer names are unique in their organization
(stricter than "unique in the network": a name then identifies a peer across the org's API);
one public key is one peer on a gateway (WireGuard identifies peers by key).

Extra routes (routed peering, SPEC 6) are unicast prefixes of an external network. Every host
holding the peer's network routes them into the mesh, in a table only packets from 6PN look up
(``core.hoststate.PEERING_TABLE``), so no route takes a host's own traffic; still, what is not
an external network's prefix is refused (``::/0`` and anything shorter than /16, link-local,
multicast, loopback and the IPv4-mapped range), as is a prefix overlapping 6PN or another
peer's route anywhere in the fleet (``control.gwindex``).
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv6Network

from sixpn.control import codec, gwindex, keys
from sixpn.control.context import Context
from sixpn.control.hosts import host_missing
from sixpn.control.orgs import DEFAULT_NETWORK, live_network
from sixpn.control.tx import Tx
from sixpn.core import addressing
from sixpn.core.alloc import next_peer_slot
from sixpn.core.names import validate_name
from sixpn.core.regions import nearest_order
from sixpn.core.wireguard import validate_key
from sixpn.model.entities import Host, Peer
from sixpn.model.errors import AlreadyExists, Conflict, InvalidInput, NotFound

MAX_ROUTES = 16
MIN_ROUTE_PREFIXLEN = 16  # shorter is no one network's, but a good part of the internet
NOT_ROUTABLE = {
    IPv6Network("::/8"): "the loopback, unspecified and IPv4-mapped range",
    IPv6Network("fe80::/10"): "link-local",
    IPv6Network("ff00::/8"): "multicast",
}


def peer_missing(org: str, name: str) -> str:
    return f"peer '{name}' not found in organization '{org}'"


def parse_routes(routes: Iterable[str]) -> tuple[IPv6Network, ...]:
    parsed: list[IPv6Network] = []
    for text in routes:
        try:
            net = IPv6Network(text, strict=True)
        except ValueError as exc:
            raise InvalidInput(
                f"route {text!r}: not an IPv6 prefix ({exc})", field="routes"
            ) from exc
        if net.prefixlen < MIN_ROUTE_PREFIXLEN:
            raise InvalidInput(
                f"route {text}: shorter than /{MIN_ROUTE_PREFIXLEN} (a routed prefix is one "
                "external network's, not a good part of the internet)",
                field="routes",
            )
        if net.overlaps(addressing.SIXPN_PREFIX):
            raise Conflict(
                f"route {text}: overlaps 6PN ({addressing.SIXPN_PREFIX})", field="routes"
            )
        for special, what in NOT_ROUTABLE.items():
            if net.overlaps(special):
                raise InvalidInput(f"route {text}: {what} ({special})", field="routes")
        for other in parsed:
            if net.overlaps(other):
                raise InvalidInput(f"route {text}: overlaps route {other}", field="routes")
        parsed.append(net)
    if len(parsed) > MAX_ROUTES:
        raise InvalidInput(f"routes: at most {MAX_ROUTES}", field="routes")
    return tuple(parsed)


class Peers:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def create(
        self,
        org: str,
        name: str,
        public_key: str,
        *,
        network: str = DEFAULT_NETWORK,
        region: str | None = None,
        ephemeral: bool = False,
        routes: Iterable[str] = (),
    ) -> tuple[Peer, Host]:
        """Create a peer; return it and its gateway host (whose endpoint and key the peer needs)."""
        validate_name(name, field="name")
        validate_name(network, field="network")
        validate_key(public_key)
        if region is not None:
            self.ctx.regions.get(region)
        wanted_routes = parse_routes(routes)

        async def fn(tx: Tx) -> tuple[Peer, Host]:
            net = await live_network(tx, org, network)
            if await tx.get(keys.peer(org, name)) is not None:
                raise AlreadyExists(
                    f"peer '{name}' already exists in organization '{org}'", field="name"
                )
            gateway = await self._gateway(tx, region)
            await tx.check_guard(keys.host(gateway.name), f"host '{gateway.name}'")
            slot_key = keys.peer_slot(net.net_id, gateway.host_id)
            kv = await tx.get(slot_key)
            slot = next_peer_slot(int(kv.value) if kv else None)
            tx.put_text(slot_key, str(slot))
            peer = Peer(
                org=org,
                name=name,
                network=network,
                net_id=net.net_id,
                gateway=gateway.name,
                host_id=gateway.host_id,
                slot=slot,
                address=addressing.peer_address(net.net_id, gateway.host_id, slot),
                public_key=public_key,
                ephemeral=ephemeral,
                created_at=tx.now,
                routes=wanted_routes,
            )
            await gwindex.claim(tx, gateway, peer)
            tx.put(keys.peer(org, name), peer)
            return peer, gateway

        return await self.ctx.run(fn, what=f"creating peer '{org}/{name}'")

    async def _gateway(self, tx: Tx, region: str | None) -> Host:
        kvs, _ = await self.ctx.store.range(keys.HOSTS)
        gateways = [h for h in (codec.decode(Host, kv.value) for kv in kvs) if h.gateway]
        if not gateways:
            raise Conflict("no gateway host has joined (start an agent with --gateway)")
        if region is None:
            chosen = min(gateways, key=lambda h: h.host_id)
        else:
            by_region: dict[str, list[Host]] = {}
            for h in gateways:
                by_region.setdefault(h.region, []).append(h)
            origin = self.ctx.regions.get(region)
            ordered = nearest_order(origin, [self.ctx.regions.get(r) for r in by_region])
            chosen = min(by_region[ordered[0].code], key=lambda h: h.host_id)
        return await tx.entity(Host, keys.host(chosen.name), host_missing(chosen.name))

    async def get(self, org: str, name: str) -> Peer:
        kv = await self.ctx.store.get(keys.peer(org, name))
        if kv is None:
            raise NotFound(peer_missing(org, name))
        return codec.decode(Peer, kv.value)

    async def list(self, org: str) -> list[Peer]:
        kvs, _ = await self.ctx.store.range(keys.peers_of(org))
        if not kvs and await self.ctx.store.get(keys.org(org)) is None:
            raise NotFound(f"organization '{org}' not found")
        return [codec.decode(Peer, kv.value) for kv in kvs]

    async def delete(self, org: str, name: str) -> None:
        async def fn(tx: Tx) -> None:
            peer = await tx.entity(Peer, keys.peer(org, name), peer_missing(org, name))
            await gwindex.release(tx, peer)
            tx.delete(keys.peer(org, name))
            tx.delete(keys.peer_status(org, name))

        await self.ctx.run(fn, what=f"deleting peer '{org}/{name}'")
