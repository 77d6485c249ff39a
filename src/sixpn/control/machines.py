"""Use cases for machines: create (on a host or placed in a region), start, stop, destroy.

Rules: a machine's ID field is drawn at random from the machine range of its (network, host)
and reserved by an ``mfield`` key that the commit compares as absent, so two concurrent
creates, even on two replicas over one etcd, never get the same address. Destroying a machine
frees its field; the record stays, in state ``destroyed``, until its app is deleted. Machine IDs
are reserved the same way (``mid`` key) and never reused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping

from sixpn.control import codec, keys
from sixpn.control.context import Context
from sixpn.control.hosts import host_missing
from sixpn.control.orgs import live_org
from sixpn.control.tx import Tx
from sixpn.core import addressing
from sixpn.core.alloc import is_machine_id, new_machine_id, pick_machine_field
from sixpn.core.names import validate_metadata, validate_name
from sixpn.model.entities import App, Host, Machine, MachineState
from sixpn.model.errors import Conflict, InvalidInput, NotFound
from sixpn.store import KV

DEFAULT_PROCESS_GROUP = "app"
# Entity keys of machines kept by ID (a start, stop or destroy names only the ID): ~250 bytes each.
ENTITY_KEYS_KEPT = 16_384


def machine_missing(org: str, machine_id: str) -> str:
    return f"machine '{machine_id}' not found in organization '{org}'"


class Machines:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # ID -> entity key, as the ``mid`` index says. It never changes: an ID is never given
        # out again (its ``mid`` key stays even when the app goes) and a machine never leaves
        # its app, so what was read once is kept, and a start, stop or destroy reads one key
        # fewer (the oldest are forgotten past ENTITY_KEYS_KEPT).
        self._entity_keys: dict[str, str] = {}

    async def create(
        self,
        org: str,
        app: str,
        *,
        host: str | None = None,
        region: str | None = None,
        state: MachineState = MachineState.STARTED,
        process_group: str = DEFAULT_PROCESS_GROUP,
        metadata: Mapping[str, str] | None = None,
    ) -> Machine:
        if state == MachineState.DESTROYED:
            raise InvalidInput("state: a new machine is 'started' or 'stopped'", field="state")
        validate_name(process_group, field="process_group")
        md = validate_metadata(metadata or {})
        if host is None and region is None:
            raise InvalidInput("give the host to run on, or a region to place in", field="host")
        if region is not None:
            self.ctx.regions.get(region)

        async def fn(tx: Tx) -> Machine:
            await live_org(tx, org)
            the_app = await tx.entity(
                App,
                keys.app(org, app),
                f"app '{app}' not found in organization '{org}'",
                field="app",
            )
            await tx.check_guard(keys.app(org, app), f"app '{org}/{app}'")
            the_host = await self._place(tx, host, region)
            await tx.check_guard(keys.host(the_host.name), f"host '{the_host.name}'")

            machine_id = new_machine_id(self.ctx.rand_bytes)
            while not await tx.is_absent(keys.machine_id(machine_id)):
                machine_id = new_machine_id(self.ctx.rand_bytes)
            taken: set[int] = set()
            while True:
                field = pick_machine_field(taken, self.ctx.rand_below)
                mfield = keys.machine_field(the_app.net_id, the_host.host_id, field)
                if await tx.is_absent(mfield):
                    break
                taken.add(field)

            machine = Machine(
                id=machine_id,
                org=org,
                app=app,
                network=the_app.network,
                net_id=the_app.net_id,
                host=the_host.name,
                host_id=the_host.host_id,
                region=the_host.region,
                field=field,
                address=addressing.machine_address(the_app.net_id, the_host.host_id, field),
                state=state,
                process_group=process_group,
                metadata=md,
                created_at=tx.now,
                updated_at=tx.now,
            )
            entity_key = keys.machine(org, app, machine_id)
            tx.put(entity_key, machine)
            tx.put_text(mfield, machine_id)
            tx.put_text(keys.machine_id(machine_id), entity_key)
            return machine

        made = await self.ctx.run(fn, what=f"creating a machine of app '{org}/{app}'")
        self._keep(made.id, keys.machine(org, app, made.id))
        return made

    def _keep(self, machine_id: str, entity_key: str) -> None:
        if len(self._entity_keys) >= ENTITY_KEYS_KEPT:
            del self._entity_keys[next(iter(self._entity_keys))]  # the oldest
        self._entity_keys[machine_id] = entity_key

    async def _place(self, tx: Tx, host: str | None, region: str | None) -> Host:
        """The named host, or a host of the region drawn at random (even spread on average)."""
        if host is not None:
            validate_name(host, field="host")
            found = await tx.entity(Host, keys.host(host), host_missing(host), field="host")
            if region is not None and found.region != region:
                raise InvalidInput(
                    f"host '{host}' is in region '{found.region}', not '{region}'", field="region"
                )
            return found
        kvs, _ = await self.ctx.store.range(keys.HOSTS)
        candidates = [h for h in (codec.decode(Host, kv.value) for kv in kvs) if h.region == region]
        if not candidates:
            raise InvalidInput(f"no host has joined in region '{region}'", field="region")
        chosen = candidates[self.ctx.rand_below(len(candidates))]
        return await tx.entity(Host, keys.host(chosen.name), host_missing(chosen.name))

    async def get(self, org: str, machine_id: str) -> Machine:
        entity_key = await self._entity_key(self.ctx.store.get, org, machine_id)
        found = await self.ctx.store.get(entity_key)
        if found is None:
            raise NotFound(machine_missing(org, machine_id))
        return codec.decode(Machine, found.value)

    async def _entity_key(
        self, read: Callable[[str], Awaitable[KV | None]], org: str, machine_id: str
    ) -> str:
        """The machine's entity key, from its ID (kept, or read with ``read``); NotFound when
        there is no such machine in ``org``."""
        if is_machine_id(machine_id):
            entity_key = self._entity_keys.get(machine_id)
            if entity_key is None:
                kv = await read(keys.machine_id(machine_id))
                if kv is not None:
                    entity_key = kv.value.decode()
                    self._keep(machine_id, entity_key)
            if entity_key is not None and entity_key.startswith(keys.machines_of(org)):
                return entity_key
        raise NotFound(machine_missing(org, machine_id))

    async def list(
        self, org: str, *, app: str | None = None, include_destroyed: bool = False
    ) -> list[Machine]:
        kvs, _ = await self.ctx.store.range(keys.machines_of(org, app))
        if not kvs:
            # Say which of the two does not exist rather than answer an empty list.
            if app is None:
                if await self.ctx.store.get(keys.org(org)) is None:
                    raise NotFound(f"organization '{org}' not found")
            elif await self.ctx.store.get(keys.app(org, app)) is None:
                raise NotFound(f"app '{app}' not found in organization '{org}'")
        machines = [codec.decode(Machine, kv.value) for kv in kvs]
        if not include_destroyed:
            machines = [m for m in machines if m.state != MachineState.DESTROYED]
        return sorted(machines, key=lambda m: (m.app, m.created_at, m.id))

    async def set_state(self, org: str, machine_id: str, state: MachineState) -> Machine:
        """Start, stop or destroy. Asking for the state a machine is already in changes nothing."""

        async def fn(tx: Tx) -> Machine:
            entity_key = await self._entity_key(tx.get, org, machine_id)
            machine = await tx.entity(Machine, entity_key, machine_missing(org, machine_id))
            if machine.state == state:
                return machine
            if machine.state == MachineState.DESTROYED:
                raise Conflict(f"machine '{machine_id}' is destroyed", field="state")
            changed = dataclasses.replace(machine, state=state, updated_at=tx.now)
            tx.put(entity_key, changed)
            if state == MachineState.DESTROYED:
                tx.delete(keys.machine_field(machine.net_id, machine.host_id, machine.field))
            return changed

        return await self.ctx.run(fn, what=f"setting machine '{machine_id}' to {state}")
