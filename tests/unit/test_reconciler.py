"""The reconciler reads the kernel only for a full request, and never misses drift: a change
reads nothing (one that leaves this host's desired state as applied applies nothing, one that
changes it is planned from the state last applied); a full request (the resync, a reload of
the view) always reads; a failed run makes the next one read."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator

import pytest

from sixpn.agent.ports import FakeHost
from sixpn.agent.reconciler import Reconciler
from sixpn.core import addressing
from sixpn.core.hoststate import HostState
from sixpn.core.incremental import IncrementalDesired
from sixpn.core.plan import Moves, Op, RemovePeers, SetPeers
from sixpn.model.entities import Host, Peer
from sixpn.view import Delta, View
from tests.unit.test_plan import host, machine


class CountingHost(FakeHost):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.fail_next = False

    def read(self) -> HostState:
        self.reads += 1
        return super().read()

    def apply(self, op: Op) -> None:
        if self.fail_next:
            self.fail_next = False
            raise OSError("the kernel said no")
        super().apply(op)


H1, H2 = host("h1", 1), host("h2", 2)
GW = host("gw", 3, gateway=True)


def view(revision: int, *machines_on: tuple[str, Host]) -> View:
    ms = {mid: machine(mid, h, 0x10) for mid, h in machines_on}
    return View(revision=revision, hosts={"h1": H1, "h2": H2}, machines=ms)


def peer(slot: int) -> Peer:
    return Peer(
        org="o",
        name=f"p{slot}",
        network="default",
        net_id=0x10,
        gateway="gw",
        host_id=GW.host_id,
        slot=slot,
        address=addressing.peer_address(0x10, GW.host_id, slot),
        public_key=f"{slot:043d}=",
        ephemeral=False,
        created_at=0.0,
    )


def gateway_view(revision: int, slots: range | list[int]) -> View:
    ps = {("o", f"p{s}"): peer(s) for s in slots}
    return View(revision=revision, hosts={"gw": GW, "h1": H1}, peers=ps)


@contextlib.asynccontextmanager
async def running(r: Reconciler) -> AsyncIterator[None]:
    task = asyncio.create_task(r.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def settle(r: Reconciler, revision: int) -> None:
    async with asyncio.timeout(5):
        while r.stats.applied_revision < revision or r.busy:
            await asyncio.sleep(0.01)


async def test_only_changes_to_this_host_read_the_kernel() -> None:
    h = CountingHost()
    r = Reconciler(h, lambda v: "h1", listen_port=51820)
    async with running(r):
        a, b = ("aaaa0000000001", H1), ("bbbb0000000002", H2)
        r.request(view(1, a, b), full=True)
        await settle(r, 1)
        assert (h.reads, len(h.state.machines)) == (1, 1)

        # another machine on h2, in a network h2 already has: h1 has nothing to do, reads nothing
        r.request(view(2, a, b, ("dddd0000000004", H2)))
        await settle(r, 2)
        assert (h.reads, r.stats.unchanged) == (1, 1)

        # a machine on h1: planned from the state last applied (no read), applied
        h.applied.clear()
        r.request(view(3, a, b, ("cccc0000000003", H1)))
        await settle(r, 3)
        assert (h.reads, len(h.state.machines)) == (1, 2)
        assert [type(op).__name__ for op in h.applied] == ["AddSources", "WireMachine", "AddRoute"]

        # drift (the machines unwired behind the agent's back) is repaired by a full request
        h.state = HostState(wg_ifname=h.state.wg_ifname, pairs=h.state.pairs)
        r.request(view(4, a, b, ("cccc0000000003", H1)), full=True)
        await settle(r, 4)
        assert (h.reads, len(h.state.machines)) == (2, 2)


async def test_a_failed_run_makes_the_next_one_read() -> None:
    h = CountingHost()
    r = Reconciler(h, lambda v: "h1", listen_port=51820)
    async with running(r):
        h.fail_next = True
        r.request(view(1, ("aaaa0000000001", H1)), full=True)
        async with asyncio.timeout(5):
            while r.stats.failures == 0:
                await asyncio.sleep(0.01)
        r.request(view(2, ("aaaa0000000001", H1)))  # same desired state, not full
        await settle(r, 2)
        assert h.reads == 2
        assert len(h.state.machines) == 1


async def test_a_gateway_with_5000_peers_applies_one_peer_per_peer_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Installing 5,000 peers is one batch; one peer added or removed then is an operation on
    that peer alone, and every log line stays short."""
    h = CountingHost()
    r = Reconciler(h, lambda v: "gw", listen_port=51820)
    caplog.set_level(logging.INFO, logger="sixpn.agent.reconcile")
    async with running(r):
        r.request(gateway_view(1, range(5000)), full=True)
        await settle(r, 1)
        batches = [op for op in h.applied if isinstance(op, SetPeers)]
        assert [len(op.peers) for op in batches] == [5001]  # the clients and host h1
        assert len(h.state.wg_peers) == 5001

        h.applied.clear()
        r.request(gateway_view(2, [*range(5000), 5000]))
        await settle(r, 2)
        (op,) = h.applied
        assert isinstance(op, SetPeers)
        assert [p.public_key for p in op.peers] == [peer(5000).public_key]

        h.applied.clear()
        r.request(gateway_view(3, [s for s in range(5001) if s != 17]))
        await settle(r, 3)
        assert h.applied == [RemovePeers(frozenset({peer(17).public_key}))]
        assert len(h.state.wg_peers) == 5001  # 5,000 clients and host h1
    assert max(len(rec.getMessage()) for rec in caplog.records) < 200


class CountingReconciler(Reconciler):
    builds = 0

    def desired(self, view: View) -> HostState:
        self.builds += 1
        return super().desired(view)


async def test_an_irrelevant_change_builds_nothing_and_still_counts_as_applied() -> None:
    """``relevant=False`` (core/incremental.py: the change did not move this host's state): no
    desired state is built, the revision is applied; a relevant one after it is built."""
    h = CountingHost()
    r = CountingReconciler(h, lambda v: "h1", listen_port=51820)
    applied: list[int] = []
    r.on_applied = lambda revision, _state: applied.append(revision)
    async with running(r):
        a, b = ("aaaa0000000001", H1), ("bbbb0000000002", H2)
        r.request(view(1, a, b), full=True)
        await settle(r, 1)
        assert r.builds == 1
        r.request(view(2, a, b, ("dddd0000000004", H2)), relevant=False)
        await settle(r, 2)
        assert (r.builds, h.reads, applied[-1]) == (1, 1, 2)
        r.request(view(3, a, b, ("cccc0000000003", H1)))  # its own machine: built, applied
        await settle(r, 3)
        assert (r.builds, len(h.state.machines)) == (2, 2)


async def test_with_the_kept_state_a_change_is_planned_from_what_it_moved() -> None:
    """The agent's way (``fleet``): changes are taken into the kept state as they come, each
    run plans what moved since the run before (no kernel read, no whole state compared), the
    kernel ends where a rebuild says; ``on_applied`` hears what each run moved (None: the first
    run, or the first after a failed one), and a failed run makes the next one read the kernel
    and plan in full."""
    h = CountingHost()
    fleet = IncrementalDesired("h1", 51820, "wg0")
    heard: list[Moves | None] = []
    r = Reconciler(h, lambda v: "h1", listen_port=51820, wg_ifname="wg0", fleet=fleet)
    r.on_applied = lambda _revision, moves: heard.append(moves)
    a, b = ("aaaa0000000001", H1), ("bbbb0000000002", H2)
    v = view(1, a, b)
    fleet.load(v)
    async with running(r):
        r.request(v, full=True)
        await settle(r, 1)
        assert (h.reads, heard, h.state) == (1, [None], fleet.state)

        # a machine on h1, taken in as the agent does (the view applies it, then the fleet)
        c = machine("cccc0000000003", H1, 0x10)
        v = dataclasses.replace(v, revision=2, machines={**v.machines, c.id: c})
        moved = fleet.apply([Delta("machine", None, c)])
        h.applied.clear()
        r.request(v, relevant=moved)
        await settle(r, 2)
        assert h.reads == 1
        assert [type(op).__name__ for op in h.applied] == ["AddSources", "WireMachine", "AddRoute"]
        assert h.state == fleet.state == r.state()
        last = heard[-1]
        assert last is not None
        assert [len(come) for _, come in (last.machines, last.routes, last.wg_peers)] == [1, 1, 0]

        # it fails half-way: the next run reads the kernel and plans the whole state
        d = machine("dddd0000000004", H1, 0x20)  # a new network on h1 too
        v = dataclasses.replace(v, revision=3, machines={**v.machines, d.id: d})
        h.fail_next = True
        r.request(v, relevant=fleet.apply([Delta("machine", None, d)]))
        async with asyncio.timeout(5):
            while r.stats.failures == 0:
                await asyncio.sleep(0.01)
        assert h.state != fleet.state
        r.request(v, relevant=False)
        await settle(r, 3)
        assert (h.reads, heard[-1], h.state) == (2, None, fleet.state)

        # a resync reads the kernel again, and tells that nothing moved (a status report or a
        # DNS listener is not due for it)
        told = len(heard)
        r.request(v, full=True)
        async with asyncio.timeout(5):
            while len(heard) == told:
                await asyncio.sleep(0.01)
        assert h.reads == 3
        assert heard[-1] == Moves()
        assert not heard[-1]
