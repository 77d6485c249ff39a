"""Use cases for organizations, their networks and their apps.

Rules: an organization always has a network named ``default`` (created with it, deleted with
it); network IDs come from a counter that never goes back, so a deleted network's ID is never
reused; an app belongs to one network of its organization, chosen at creation, never moved; app
names are unique in their organization (different organizations may use the same app names).
"""

from __future__ import annotations

import builtins

from sixpn.control import codec, keys
from sixpn.control.context import Context
from sixpn.control.tx import Tx, delete_guarded
from sixpn.core.names import validate_name
from sixpn.model.entities import App, Machine, MachineState, Network, Org, Peer, Token
from sixpn.model.errors import AlreadyExists, Conflict, NotFound

DEFAULT_NETWORK = "default"


def org_missing(org: str) -> str:
    return f"organization '{org}' not found"


async def live_org(tx: Tx, org: str) -> Org:
    """The organization, checked to exist and not to be in the middle of its deletion."""
    found = await tx.entity(Org, keys.org(org), org_missing(org))
    await tx.check_guard(keys.org(org), f"organization '{org}'")
    return found


async def live_network(tx: Tx, org: str, network: str) -> Network:
    """The organization's network, both checked to exist and not to be in their deletion."""
    await live_org(tx, org)
    net = await tx.entity(
        Network,
        keys.network(org, network),
        f"network '{network}' not found in organization '{org}'",
        field="network",
    )
    await tx.check_guard(keys.network(org, network), f"network '{org}/{network}'")
    return net


class Orgs:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    # -- organizations -------------------------------------------------------------------------

    async def create(self, name: str) -> Org:
        validate_name(name, field="name")

        async def fn(tx: Tx) -> Org:
            if await tx.get(keys.org(name)) is not None:
                raise AlreadyExists(f"organization '{name}' already exists", field="name")
            net_id = await self._net_id(tx)
            org = Org(name=name, created_at=tx.now)
            net = Network(org=name, name=DEFAULT_NETWORK, net_id=net_id, created_at=tx.now)
            tx.put(keys.org(name), org)
            tx.put(keys.network(name, DEFAULT_NETWORK), net)
            tx.put_text(keys.netid(net_id), f"{name}/{DEFAULT_NETWORK}")
            return org

        return await self.ctx.run(fn, what=f"creating organization '{name}'")

    async def get(self, name: str) -> Org:
        kv = await self.ctx.store.get(keys.org(name))
        if kv is None:
            raise NotFound(org_missing(name))
        return codec.decode(Org, kv.value)

    async def list(self) -> list[Org]:
        kvs, _ = await self.ctx.store.range("org/")
        return [codec.decode(Org, kv.value) for kv in kvs]

    async def delete(self, name: str) -> None:
        store = self.ctx.store

        async def children() -> builtins.list[str]:
            found = [f"app '{a.name}'" for a in await self.list_apps(name)]
            found += [
                f"network '{n.name}'" for n in await self.list_networks(name) if n.name != "default"
            ]
            peers, _ = await store.range(keys.peers_of(name))
            found += [f"peer '{codec.decode(Peer, kv.value).name}'" for kv in peers]
            return found

        async def finish(tx: Tx) -> None:
            net = await tx.entity(Network, keys.network(name, DEFAULT_NETWORK), org_missing(name))
            tx.delete(keys.org(name))
            tx.delete(keys.network(name, DEFAULT_NETWORK))
            tx.delete(keys.netid(net.net_id))
            for kv in (await store.range(keys.TOKENS))[0]:
                token = codec.decode(Token, kv.value)
                if token.org == name:
                    tx.delete(kv.key)
                    tx.delete(keys.token_id(token.id))

        await delete_guarded(
            store,
            self.ctx.clock,
            keys.org(name),
            what=f"organization '{name}'",
            children=children,
            finish=finish,
        )

    # -- networks ------------------------------------------------------------------------------

    async def create_network(self, org: str, name: str) -> Network:
        validate_name(name, field="name")

        async def fn(tx: Tx) -> Network:
            await live_org(tx, org)
            if await tx.get(keys.network(org, name)) is not None:
                raise AlreadyExists(
                    f"network '{name}' already exists in organization '{org}'", field="name"
                )
            net_id = await self._net_id(tx)
            net = Network(org=org, name=name, net_id=net_id, created_at=tx.now)
            tx.put(keys.network(org, name), net)
            tx.put_text(keys.netid(net_id), f"{org}/{name}")
            return net

        return await self.ctx.run(fn, what=f"creating network '{org}/{name}'")

    async def _net_id(self, tx: Tx) -> int:
        """A network ID from this replica's block, checked free in the create's own commit."""
        net_id = await self.ctx.take_id(keys.COUNTER_NETWORK, what="allocating network ID")
        holder = await tx.get(keys.netid(net_id))
        if holder is not None:  # only a store written by hand, or a bug, gets here
            raise Conflict(f"network ID {net_id} is taken by '{holder.value.decode()}'")
        return net_id

    async def get_network(self, org: str, name: str) -> Network:
        kv = await self.ctx.store.get(keys.network(org, name))
        if kv is None:
            await self.get(org)
            raise NotFound(f"network '{name}' not found in organization '{org}'")
        return codec.decode(Network, kv.value)

    async def list_networks(self, org: str) -> builtins.list[Network]:
        await self.get(org)
        kvs, _ = await self.ctx.store.range(keys.networks_of(org))
        return [codec.decode(Network, kv.value) for kv in kvs]

    async def delete_network(self, org: str, name: str) -> None:
        if name == DEFAULT_NETWORK:
            raise Conflict(
                "the default network cannot be deleted; it goes with its organization",
                field="name",
            )
        net = await self.get_network(org, name)
        store = self.ctx.store

        async def children() -> builtins.list[str]:
            found = [f"app '{a.name}'" for a in await self.list_apps(org) if a.network == name]
            peers, _ = await store.range(keys.peers_of(org))
            for kv in peers:
                peer = codec.decode(Peer, kv.value)
                if peer.network == name:
                    found.append(f"peer '{peer.name}'")
            return found

        async def finish(tx: Tx) -> None:
            tx.delete(keys.network(org, name))
            tx.delete(keys.netid(net.net_id))

        await delete_guarded(
            store,
            self.ctx.clock,
            keys.network(org, name),
            what=f"network '{org}/{name}'",
            children=children,
            finish=finish,
        )

    # -- apps ----------------------------------------------------------------------------------

    async def create_app(self, org: str, name: str, network: str = DEFAULT_NETWORK) -> App:
        validate_name(name, field="name")
        validate_name(network, field="network")

        async def fn(tx: Tx) -> App:
            net = await live_network(tx, org, network)
            if await tx.get(keys.app(org, name)) is not None:
                raise AlreadyExists(
                    f"app '{name}' already exists in organization '{org}'", field="name"
                )
            app = App(org=org, name=name, network=network, net_id=net.net_id, created_at=tx.now)
            tx.put(keys.app(org, name), app)
            return app

        return await self.ctx.run(fn, what=f"creating app '{org}/{name}'")

    async def get_app(self, org: str, name: str) -> App:
        kv = await self.ctx.store.get(keys.app(org, name))
        if kv is None:
            await self.get(org)
            raise NotFound(f"app '{name}' not found in organization '{org}'")
        return codec.decode(App, kv.value)

    async def list_apps(self, org: str) -> builtins.list[App]:
        await self.get(org)
        kvs, _ = await self.ctx.store.range(keys.apps_of(org))
        return [codec.decode(App, kv.value) for kv in kvs]

    async def delete_app(self, org: str, name: str) -> None:
        """Delete an app that has no machine left but destroyed ones (which go with it)."""
        await self.get_app(org, name)
        store = self.ctx.store
        prefix = keys.machines_of(org, name)

        async def children() -> builtins.list[str]:
            kvs, _ = await store.range(prefix)
            machines = (codec.decode(Machine, kv.value) for kv in kvs)
            return [f"machine {m.id}" for m in machines if m.state != MachineState.DESTROYED]

        async def finish(tx: Tx) -> None:
            tx.delete(keys.app(org, name))
            # The machines' mid/ reservations stay: a machine ID is never given out again.
            for kv in (await store.range(prefix))[0]:
                tx.delete(kv.key)

        await delete_guarded(
            store,
            self.ctx.clock,
            keys.app(org, name),
            what=f"app '{org}/{name}'",
            children=children,
            finish=finish,
        )
