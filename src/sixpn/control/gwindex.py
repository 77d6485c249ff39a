"""What a gateway's peers hold, as keys: one public key is one peer, routes never overlap.

A peer create used to check both rules by reading every peer of the fleet (a range, which a
commit cannot compare, so every peer change on a gateway also rewrote one key of its own to
serialize them): 57 ms per create on a gateway holding 5,000 peers, and growing with the fleet
(docs/benchmarks.md). Here each rule is a key the commit compares:

- ``gwkey/<gateway>/<sha256 of the public key>`` = ``<org>/<peer>``: created absent-compared, so
  two creates of one key on one gateway cannot both commit; removed with the peer;
- ``gwroutes/<gateway>`` = JSON ``[[prefix, "<org>/<peer>"], ...]``: the routed prefixes behind
  the gateway's peers, read (compared) and rewritten only by creates and removals of peers that
  carry routes.

Creates of peers without routes on one gateway thus touch no shared key but their network's
slot counter. A store written before these keys existed is indexed once at server start
(:func:`build`), marked by ``gwindex``.
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


async def _routes(tx: Tx, gateway: str) -> Routes:
    kv = await tx.get(keys.gateway_routes(gateway))
    return [(IPv6Network(p), who) for p, who in json.loads(kv.value)] if kv else []


def _put_routes(tx: Tx, gateway: str, routes: Routes) -> None:
    if routes:
        tx.put_text(keys.gateway_routes(gateway), json.dumps([[str(p), w] for p, w in routes]))
    else:
        tx.delete(keys.gateway_routes(gateway))


async def claim(tx: Tx, gateway: Host, peer: Peer) -> None:
    """Reserve ``peer``'s key and routes on ``gateway``, or refuse naming the peer holding them."""
    if peer.public_key == gateway.public_key:
        raise AlreadyExists("public_key: that is the gateway's own key", field="public_key")
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
    held = await _routes(tx, gateway.name)
    for mine in peer.routes:
        for theirs, who in held:
            if mine.overlaps(theirs):
                raise Conflict(
                    f"route {mine}: overlaps {theirs} of peer '{who}' on gateway '{gateway.name}'",
                    field="routes",
                )
    _put_routes(tx, gateway.name, held + [(r, _owner(peer)) for r in peer.routes])


async def release(tx: Tx, peer: Peer) -> None:
    """Free what ``peer`` held on its gateway (it is being removed in the same commit)."""
    key = keys.gateway_key(peer.gateway, peer.public_key)
    holder = await tx.get(key)
    if holder is not None and holder.value.decode() == _owner(peer):
        tx.delete(key)
    if peer.routes:
        held = await _routes(tx, peer.gateway)
        _put_routes(tx, peer.gateway, [(p, w) for p, w in held if w != _owner(peer)])


async def build(store: Store, now: float) -> int:
    """Index every peer of a store written before the index existed; returns how many (0 when
    the index is there already). One commit, compared on what it read."""

    async def fn(tx: Tx) -> int:
        if await tx.get(keys.GATEWAY_INDEX) is not None:
            return 0
        kvs, _ = await store.range(keys.PEERS)
        peers = [codec.decode(Peer, kv.value) for kv in kvs]
        routes: dict[str, Routes] = {}
        for peer in peers:
            await tx.get(keys.peer(peer.org, peer.name))  # compared: no change slips past
            tx.put_text(keys.gateway_key(peer.gateway, peer.public_key), _owner(peer))
            routes.setdefault(peer.gateway, []).extend((r, _owner(peer)) for r in peer.routes)
        for gateway, held in routes.items():
            if held:
                _put_routes(tx, gateway, held)
        tx.put_text(keys.GATEWAY_INDEX, "1")
        return len(peers)

    return await run(store, lambda: now, fn, what="indexing the gateways' peers")
