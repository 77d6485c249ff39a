"""What gateways see of their client peers, and the expiry of idle ephemeral peers (SPEC 5).

A gateway's agent reads its WireGuard interface (``wg show``) and sends, in batches, only the
peers whose counters changed since its last report, plus an empty report now and then as a sign
of life (``report``). Each peer's last report is kept under an internal key (never streamed: the
counters are not part of the data path, and streaming them would wake every agent and DNS
server for nothing).

Expiry, decisions where the spec is silent:

- *idle* means neither a new handshake nor a byte received from the peer. WireGuard renews a
  session's handshake only every two minutes, while a connected wg-quick peer sends a keepalive
  every 15 s: counting received bytes lets an idle time shorter than two minutes tell a laptop
  that went away from one that is merely quiet. A peer that never shook hands is idle from its
  creation.
- a peer expires only when its gateway has kept reporting for the whole idle time: a gateway
  whose agent is down (the data path may well still be carrying the peer's traffic) never
  causes its peers to be removed; they expire once it reports again and is still seeing nothing.
- the removal is an ordinary peer deletion (the gateway drops it, ``list`` and DNS forget it),
  committed only if neither the peer nor its counters changed since they were judged idle, and
  logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sixpn.control import codec, gwindex, keys
from sixpn.control.context import Context
from sixpn.control.hosts import host_missing
from sixpn.control.peers import peer_missing
from sixpn.control.tx import Tx
from sixpn.core.wireguard import validate_key
from sixpn.model.entities import Host, HostStatus, Peer, PeerStatus
from sixpn.model.errors import InvalidInput, NotFound
from sixpn.store import KV

log = logging.getLogger("sixpn.control.peers")

MAX_BATCH = 1000  # peers in one report: one transaction, bounded
DEFAULT_EPHEMERAL_IDLE = 600.0  # seconds; `sixpn server --ephemeral-idle`


@dataclass(frozen=True, slots=True)
class Counters:
    """One peer's line of a gateway's report."""

    org: str
    name: str
    public_key: str
    endpoint: str | None
    latest_handshake: float
    rx_bytes: int
    tx_bytes: int

    def check(self) -> None:
        validate_key(self.public_key)
        if self.latest_handshake < 0 or self.rx_bytes < 0 or self.tx_bytes < 0:
            raise InvalidInput(
                f"peer '{self.org}/{self.name}': counters and handshake time must be >= 0",
                field="peers",
            )


def _active(old: PeerStatus | None, new: Counters) -> bool:
    """Did the peer show a sign of life since ``old``? A counter that went down was reset (the
    peer was set again on the gateway): only a non-zero value is then a sign."""
    if old is None:
        return new.latest_handshake > 0 or new.rx_bytes > 0
    handshake = new.latest_handshake != old.latest_handshake and new.latest_handshake > 0
    received = new.rx_bytes != old.rx_bytes and new.rx_bytes > 0
    return handshake or received


def _status_of(peer: Peer, found: KV | None) -> PeerStatus | None:
    """The stored report of ``peer``, unless it is about an earlier peer of that name."""
    status = codec.decode(PeerStatus, found.value) if found else None
    return status if status is not None and status.public_key == peer.public_key else None


def idle_since(peer: Peer, status: PeerStatus | None) -> float:
    """Since when ``peer`` has shown no sign of life (its creation if it never did)."""
    return max(peer.created_at, status.last_active if status else 0.0)


class PeerStatuses:
    def __init__(self, ctx: Context, ephemeral_idle: float = DEFAULT_EPHEMERAL_IDLE) -> None:
        self.ctx = ctx
        self.ephemeral_idle = ephemeral_idle

    async def report(self, gateway: str, entries: Iterable[Counters]) -> int:
        """Store a gateway's report; returns how many lines were about its current peers.

        A line about a peer that is gone, belongs to another gateway or now has another key (it
        was removed and created again meanwhile) is skipped: the report describes the past.
        """
        batch = list(entries)
        if len(batch) > MAX_BATCH:
            raise InvalidInput(f"peers: at most {MAX_BATCH} in one report", field="peers")
        for entry in batch:
            entry.check()

        async def fn(tx: Tx) -> int:
            await tx.entity(Host, keys.host(gateway), host_missing(gateway))
            taken = 0
            for entry in batch:
                kv = await tx.get(keys.peer(entry.org, entry.name))
                if kv is None:
                    continue
                peer = codec.decode(Peer, kv.value)
                if peer.gateway != gateway or peer.public_key != entry.public_key:
                    continue
                old_kv = await tx.get(keys.peer_status(entry.org, entry.name))
                old = codec.decode(PeerStatus, old_kv.value) if old_kv else None
                last_active = tx.now if _active(old, entry) else (old.last_active if old else 0.0)
                status = PeerStatus(
                    org=entry.org,
                    name=entry.name,
                    gateway=gateway,
                    public_key=entry.public_key,
                    endpoint=entry.endpoint,
                    latest_handshake=entry.latest_handshake,
                    rx_bytes=entry.rx_bytes,
                    tx_bytes=entry.tx_bytes,
                    last_active=last_active,
                    reported_at=tx.now,
                )
                tx.put(keys.peer_status(entry.org, entry.name), status)
                taken += 1
            tx.put_text(keys.gateway_report(gateway), repr(tx.now))
            return taken

        return await self.ctx.run(fn, what=f"storing the peer report of gateway '{gateway}'")

    async def get(self, org: str, name: str) -> tuple[Peer, PeerStatus | None, int]:
        """The peer, its gateway's last report of it (None: not reported yet), and the store
        revision that wrote the peer."""
        kv = await self.ctx.store.get(keys.peer(org, name))
        if kv is None:
            raise NotFound(peer_missing(org, name))
        peer = codec.decode(Peer, kv.value)
        found = await self.ctx.store.get(keys.peer_status(org, name))
        return peer, _status_of(peer, found), kv.mod_revision

    async def installed(self, peer_revision: int, gateway: str) -> bool:
        """Has ``gateway`` applied the store at ``peer_revision`` (the peer's own write)? Its
        host status says which revision its agent applied last."""
        kv = await self.ctx.store.get(keys.host_status(gateway))
        return kv is not None and codec.decode(HostStatus, kv.value).applied_revision >= (
            peer_revision
        )

    async def expire_idle(self) -> list[Peer]:
        """Remove every ephemeral peer idle for the idle time while its gateway watched."""
        idle_seconds = self.ephemeral_idle
        now = self.ctx.clock()
        kvs, _ = await self.ctx.store.range(keys.PEERS)
        removed = []
        for peer in (codec.decode(Peer, kv.value) for kv in kvs):
            if not peer.ephemeral or now - peer.created_at < idle_seconds:
                continue
            if await self._expire(peer, idle_seconds):
                removed.append(peer)
        return removed

    async def _expire(self, peer: Peer, idle_seconds: float) -> bool:
        what = f"removing idle ephemeral peer '{peer.org}/{peer.name}'"

        async def fn(tx: Tx) -> float | None:
            kv = await tx.get(keys.peer(peer.org, peer.name))
            if kv is None or codec.decode(Peer, kv.value) != peer:
                return None  # removed or replaced meanwhile
            found = await tx.get(keys.peer_status(peer.org, peer.name))
            since = idle_since(peer, _status_of(peer, found))
            watched = await tx.get(keys.gateway_report(peer.gateway))
            watched_until = float(watched.value) if watched else 0.0
            if tx.now - since < idle_seconds or watched_until - since < idle_seconds:
                return None
            await gwindex.release(tx, peer)
            tx.delete(keys.peer(peer.org, peer.name))
            tx.delete(keys.peer_status(peer.org, peer.name))
            return since

        since = await self.ctx.run(fn, what=what)
        if since is None:
            return False
        log.info(
            "removed ephemeral peer '%s/%s' (gateway %s): no handshake or packet for %.0f s",
            peer.org,
            peer.name,
            peer.gateway,
            self.ctx.clock() - since,
        )
        return True
