"""Use cases for hosts: joining with a join token, status reports, removal.

Host IDs come from a counter that starts at 1 and never goes back: 0 is kept for service
addresses and a departed host's ID is never given to another. A host's WireGuard private key
never leaves it; the server only ever sees the public key.
"""

from __future__ import annotations

import dataclasses

from sixpn.control import codec, keys
from sixpn.control.context import Context
from sixpn.control.tokens import Tokens
from sixpn.control.tx import Tx, delete_guarded
from sixpn.core.names import validate_name
from sixpn.core.wireguard import validate_endpoint, validate_key
from sixpn.model.entities import Host, HostStatus, Machine, MachineState, Peer, TokenKind
from sixpn.model.errors import AlreadyExists, InvalidInput, NotFound


def host_missing(name: str) -> str:
    return f"host '{name}' not found"


class Hosts:
    def __init__(self, ctx: Context, tokens: Tokens) -> None:
        self.ctx = ctx
        self.tokens = tokens

    async def join(
        self, name: str, region: str, endpoint: str, public_key: str, *, gateway: bool = False
    ) -> tuple[Host, str]:
        """Register a host; return it and its credential (shown once)."""
        validate_name(name, field="name")
        self.ctx.regions.get(region)
        validate_endpoint(endpoint)
        validate_key(public_key)

        async def fn(tx: Tx) -> tuple[Host, str]:
            if await tx.get(keys.host(name)) is not None:
                raise AlreadyExists(f"host '{name}' already exists", field="name")
            owner = await tx.get(keys.host_key(public_key))
            if owner is not None:
                raise AlreadyExists(
                    f"public_key: already used by host '{owner.value.decode()}'",
                    field="public_key",
                )
            await self._refuse_a_peers_key(tx, public_key)
            tx.put_text(keys.host_key(public_key), name)
            host_id = await self.ctx.take_id(keys.COUNTER_HOST, what="allocating host ID")
            host = Host(
                name=name,
                host_id=host_id,
                region=region,
                endpoint=endpoint,
                public_key=public_key,
                gateway=gateway,
                created_at=tx.now,
            )
            tx.put(keys.host(name), host)
            _, secret = self.tokens.issue(
                tx, TokenKind.HOST, host=name, description="host credential"
            )
            return host, secret

        return await self.ctx.run(fn, what=f"joining host '{name}'")

    async def _refuse_a_peers_key(self, tx: Tx, public_key: str) -> None:
        """A key some gateway holds for a peer is refused: the new host is every gateway's mesh
        peer, and WireGuard holds one peer per key (:func:`gwindex.claim`, the other way). The
        gateways are few; each one's key for it is compared at the commit."""
        for host in await self.list():
            if host.gateway and await tx.get(keys.gateway_key(host.name, public_key)):
                raise AlreadyExists(
                    f"public_key: already used by a WireGuard peer on gateway '{host.name}'",
                    field="public_key",
                )

    async def get(self, name: str) -> Host:
        kv = await self.ctx.store.get(keys.host(name))
        if kv is None:
            raise NotFound(host_missing(name))
        return codec.decode(Host, kv.value)

    async def list(self) -> list[Host]:
        kvs, _ = await self.ctx.store.range(keys.HOSTS)
        return [codec.decode(Host, kv.value) for kv in kvs]

    async def set_endpoint(self, name: str, endpoint: str) -> Host:
        """A host's new underlay endpoint (its address changed): every other host's mesh peer
        for it follows through the change stream. The same endpoint again writes nothing."""
        validate_endpoint(endpoint)

        async def fn(tx: Tx) -> Host:
            host = await tx.entity(Host, keys.host(name), host_missing(name))
            if host.endpoint == endpoint:
                return host
            moved = dataclasses.replace(host, endpoint=endpoint)
            tx.put(keys.host(name), moved)
            return moved

        return await self.ctx.run(fn, what=f"moving host '{name}' to endpoint {endpoint}")

    async def report_status(
        self, name: str, *, backend: str, applied_revision: int, message: str = ""
    ) -> HostStatus:
        if backend not in ("kernel", "wireguard-go"):
            raise InvalidInput(
                f"backend {backend!r}: expected 'kernel' or 'wireguard-go'", field="backend"
            )
        if applied_revision < 0:
            raise InvalidInput("applied_revision: must be >= 0", field="applied_revision")

        async def fn(tx: Tx) -> HostStatus:
            await tx.entity(Host, keys.host(name), host_missing(name))
            status = HostStatus(
                host=name,
                backend=backend,
                applied_revision=applied_revision,
                reported_at=tx.now,
                message=message[:500],
            )
            tx.put(keys.host_status(name), status)
            return status

        return await self.ctx.run(fn, what=f"reporting status of host '{name}'")

    async def status(self, name: str) -> HostStatus | None:
        await self.get(name)
        kv = await self.ctx.store.get(keys.host_status(name))
        return codec.decode(HostStatus, kv.value) if kv else None

    async def delete(self, name: str) -> None:
        """Remove a host that runs no machine (but destroyed ones) and is no peer's gateway."""
        store = self.ctx.store

        async def children() -> list[str]:
            machines, _ = await store.range(keys.MACHINES)
            found = [
                f"machine {m.id}"
                for m in (codec.decode(Machine, kv.value) for kv in machines)
                if m.host == name and m.state != MachineState.DESTROYED
            ]
            peers, _ = await store.range(keys.PEERS)
            found += [
                f"peer '{p.org}/{p.name}'"
                for p in (codec.decode(Peer, kv.value) for kv in peers)
                if p.gateway == name
            ]
            return found

        async def finish(tx: Tx) -> None:
            host = await tx.entity(Host, keys.host(name), host_missing(name))
            tx.delete(keys.host(name))
            tx.delete(keys.host_key(host.public_key))
            tx.delete(keys.gateway_report(name))
            tx.delete(keys.host_status(name))
            for token in await self.tokens.list(kind=TokenKind.HOST):
                if token.host == name:
                    kv = await tx.get(keys.token_id(token.id))
                    if kv is not None:
                        tx.delete(keys.token(kv.value.decode()))
                        tx.delete(keys.token_id(token.id))

        await delete_guarded(
            store,
            self.ctx.clock,
            keys.host(name),
            what=f"host '{name}'",
            children=children,
            finish=finish,
        )
