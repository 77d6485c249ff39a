"""What peers hold, as keys: one public key is one peer on a gateway, routes never overlap.

A peer create used to check both rules by reading every peer of the fleet (a range, which a
commit cannot compare, so every peer change on a gateway also rewrote one key of its own to
serialize them): 57 ms per create on a gateway holding 5,000 peers, and growing with the fleet
(docs/benchmarks.md). Here each rule is a key the commit compares:

- ``gwkey/<gateway>/<sha256 of the public key>`` = ``<org>/<peer>``: created absent-compared, so
  two creates of one key on one gateway cannot both commit; removed with the peer;
- ``peerroutes`` = JSON ``[[prefix, "<org>/<peer>"], ...]``: the routed prefixes behind every
  peer of the fleet, read (compared) and rewritten only by creates and removals of peers that
  carry routes (few: external networks, not laptops).

Routes are unique across the fleet, not only on one gateway: every host's mesh interface
carries the routed prefixes of the networks it holds, each to the gateway of its peer, and
WireGuard routes a prefix to one peer only; two organizations' overlapping routes on two
gateways would meet on any host that has machines of both. A conflict inside the organization
names the peer holding the route; one with another organization's route says only that (the
other organization's peers are not this caller's to know).

Creates of peers without routes on one gateway thus touch no shared key but their network's
slot counter. A store written before these keys existed, or with routes indexed per gateway
(``gwroutes/<gateway>``, index version 1), is indexed once at server start (:func:`build`),
marked by ``gwindex``.
"""

from __future__ import annotations

import json
from ipaddress import IPv6Network

from sixpn.control import codec, keys
from sixpn.control.tx import Tx, run
from sixpn.model.entities import Host, Peer
from sixpn.model.errors import AlreadyExists, Conflict
from sixpn.store import Store

Routes = list[tuple[IPv6Network, str]]


def _owner(peer: Peer) -> str:
    return f"{peer.org}/{peer.name}"


async def _routes(tx: Tx) -> Routes:
    kv = await tx.get(keys.PEER_ROUTES)
    return [(IPv6Network(p), who) for p, who in json.loads(kv.value)] if kv else []


def _put_routes(tx: Tx, routes: Routes) -> None:
    if routes:
        tx.put_text(keys.PEER_ROUTES, json.dumps([[str(p), w] for p, w in routes]))
    else:
        tx.delete(keys.PEER_ROUTES)


def _overlap(mine: IPv6Network, theirs: IPv6Network, who: str, peer: Peer) -> Conflict:
    if who.split("/", 1)[0] == peer.org:
        return Conflict(f"route {mine}: overlaps {theirs} of peer '{who}'", field="routes")
    return Conflict(
        f"route {mine}: overlaps a route of another organization's peer "
        "(routed prefixes are unique across the fleet)",
        field="routes",
    )


async def claim(tx: Tx, gateway: Host, peer: Peer) -> None:
    """Reserve ``peer``'s key on ``gateway`` and its routes, or refuse naming what holds them."""
    if peer.public_key == gateway.public_key:
        raise AlreadyExists("public_key: that is the gateway's own key", field="public_key")
    # another host's key: that host is a peer of the gateway's interface too (the mesh), and
    # WireGuard holds one peer per key
    host = await tx.get(keys.host_key(peer.public_key))
    if host is not None:
        raise AlreadyExists(
            f"public_key: already used by host '{host.value.decode()}'", field="public_key"
        )
    key = keys.gateway_key(gateway.name, peer.public_key)
    holder = await tx.get(key)
    if holder is not None:
        raise AlreadyExists(
            f"public_key: already used by peer '{holder.value.decode()}' on gateway "
            f"'{gateway.name}'",
            field="public_key",
        )
    tx.put_text(key, _owner(peer))
    if not peer.routes:
        return
    held = await _routes(tx)
    for mine in peer.routes:
        for theirs, who in held:
            if mine.overlaps(theirs):
                raise _overlap(mine, theirs, who, peer)
    _put_routes(tx, held + [(r, _owner(peer)) for r in peer.routes])


async def release(tx: Tx, peer: Peer) -> None:
    """Free what ``peer`` held (it is being removed in the same commit)."""
    key = keys.gateway_key(peer.gateway, peer.public_key)
    holder = await tx.get(key)
    if holder is not None and holder.value.decode() == _owner(peer):
        tx.delete(key)
    if peer.routes:
        held = await _routes(tx)
        _put_routes(tx, [(p, w) for p, w in held if w != _owner(peer)])


async def build(store: Store, now: float) -> int:
    """Index every peer of a store written before this index existed; returns how many (0 when
    the index is there already). One commit, compared on what it read.

    Routes an older server let overlap on two gateways stay as they are (both peers exist);
    new routes are refused against all of them."""

    async def fn(tx: Tx) -> int:
        marker = await tx.get(keys.GATEWAY_INDEX)
        if marker is not None and marker.value.decode() == keys.GATEWAY_INDEX_VERSION:
            return 0
        kvs, _ = await store.range(keys.PEERS)
        peers = [codec.decode(Peer, kv.value) for kv in kvs]
        routes: Routes = []
        for peer in peers:
            await tx.get(keys.peer(peer.org, peer.name))  # compared: no change slips past
            tx.put_text(keys.gateway_key(peer.gateway, peer.public_key), _owner(peer))
            routes.extend((r, _owner(peer)) for r in peer.routes)
        _put_routes(tx, routes)
        old, _ = await store.range(keys.OLD_GATEWAY_ROUTES)
        for kv in old:
            tx.delete(kv.key)
        tx.put_text(keys.GATEWAY_INDEX, keys.GATEWAY_INDEX_VERSION)
        return len(peers)

    return await run(store, lambda: now, fn, what="indexing the gateways' peers")
