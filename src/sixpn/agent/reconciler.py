"""Reconciliation: desired state from the view, actual state from the host, apply the plan.

One reconcile at a time; requests that arrive while one runs are coalesced into one more run.
Kernel work runs in a worker thread so that the DNS server on the same event loop never waits
for it. Every operation is logged as it is applied; a run whose plan is empty applies nothing.

A change reads nothing from the kernel: one that leaves this host's desired state as it was
last applied (a machine created on another host, in a network this host already carries)
applies nothing, and one that changes it is planned against the state last applied in full,
which is what the kernel holds unless something else changed it. Most changes of a fleet
concern few hosts, and reading a host's state costs CPU (namespaces, nft, wg) that the DNS
server on the same machine needs, and time the change waits for (44 ms on a gateway holding
5,000 peers, docs/benchmarks.md). Drift is still repaired: the periodic resync and every
(re)load of the view ask for a full reconcile, and a failed run forgets what was applied, so
the next request reads the kernel whatever the desired state.

The agent keeps the desired state change by change (``fleet``, ``core.incremental``): built
from scratch it reads the whole fleet (125 ms at 100k machines), kept it costs what the change
touches, and a run between full reads plans from the kept state's journal of what moved since
the run before (``plan_moves``): no whole state is made, copied or compared, so a change of one
peer or one machine of a host holding thousands costs that peer or machine. A change that did
not move it (``relevant=False``) only counts its revision as applied, so the host's status keeps
up with the store. Without ``fleet`` (tests), every run builds it from the view.

``on_applied(revision, moves)`` follows every run: ``moves`` is what moved in the desired state
since the run before (with ``fleet``, a full run's too: the kept state's journal), or None
when that is not known (the first run, the first after a failed one, a full run without
``fleet``); :meth:`Reconciler.state` is the desired state applied, made when asked (status
reports, DNS listeners).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sixpn.agent.ports import HostPort
from sixpn.core.desired import desired_state
from sixpn.core.hoststate import HostState
from sixpn.core.incremental import IncrementalDesired
from sixpn.core.plan import Moves, Op, plan, plan_moves
from sixpn.view import View

log = logging.getLogger("sixpn.agent.reconcile")


@dataclass
class ReconcileStats:
    runs: int = 0
    ops_applied: int = 0
    failures: int = 0
    last_duration: float = 0.0
    applied_revision: int = 0
    last_error: str = ""
    unchanged: int = 0  # requests whose desired state was already applied: no kernel read


class Reconciler:
    def __init__(
        self,
        host: HostPort,
        me: Callable[[View], str],
        *,
        listen_port: int,
        wg_ifname: str | None = None,
        orchestrator_netns: Callable[[str], str | None] | None = None,
        on_applied: Callable[[int, Moves | None], None] | None = None,
        fleet: IncrementalDesired | None = None,
    ) -> None:
        self.host = host
        self.me = me
        self.listen_port = listen_port
        self.wg_ifname = wg_ifname
        self.orchestrator_netns = orchestrator_netns
        self.on_applied = on_applied
        self.fleet = fleet  # the desired state kept by the agent, change by change
        self.stats = ReconcileStats()
        self._wanted = asyncio.Event()
        self.busy = False  # a reconcile is running (set by the worker thread itself)
        self._view: View | None = None
        self._full = True  # the next run reads the kernel whatever the desired state
        self._dirty = True  # a request since the last run may change the desired state
        self._synced = False  # the kernel holds the desired state last applied
        self._applied: HostState | None = None  # that state (without ``fleet``)

    def desired(self, view: View) -> HostState:
        """The desired state built from the whole view (without ``fleet``)."""
        name = self.me(view)
        netns_of: dict[str, str] = {}
        if self.orchestrator_netns is not None:
            for m in view.machines.values():
                found = self.orchestrator_netns(m.id) if m.host == name else None
                if found:
                    netns_of[m.id] = found
        return desired_state(
            view.hosts[name],
            view.hosts,
            view.machines.values(),
            view.peers.values(),
            listen_port=self.listen_port,
            wg=self.wg_ifname,
            netns_of=netns_of,
        )

    def state(self) -> HostState | None:
        """The desired state last applied (with ``fleet``: the kept one, which may be ahead of
        the kernel by the changes of a run not finished yet); None before the first run."""
        if not self._synced and self._applied is None:
            return None
        return self.fleet.state if self.fleet is not None else self._applied

    def request(self, view: View, *, full: bool = False, relevant: bool = True) -> None:
        """Ask for a reconcile against ``view`` (coalesced with any pending request). ``full``:
        read the kernel and repair drift even if the desired state is the one last applied;
        ``relevant=False``: the changes since the last request cannot change this host's
        desired state (only the revision moves)."""
        self._view = view
        self._full = self._full or full
        self._dirty = self._dirty or relevant or full
        self._wanted.set()

    async def run(self) -> None:
        """Serve requests forever (cancel to stop)."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            view = self._view
            assert view is not None
            revision = view.revision
            if not self._dirty and not self._full and self._synced:
                self.stats.unchanged += 1
                self.stats.applied_revision = revision
                if self.on_applied is not None:
                    self.on_applied(revision, Moves())
                continue
            self._dirty = False
            full, synced = self._full, self._synced
            self._full = False
            try:
                moves = await self._run_once(view, full)
            except Exception as exc:  # logged, counted, retried at the next request/resync
                self._synced = False
                self._full = True  # the kernel may hold part of it: read it next time
                self.stats.failures += 1
                self.stats.last_error = str(exc)
                log.error("reconcile at revision %d failed: %s", revision, exc)
                continue
            self._synced = True
            self.stats.applied_revision = revision
            if self.on_applied is not None:  # after a failed run, what moved since is not known
                self.on_applied(revision, moves if synced else None)

    async def _run_once(self, view: View, full: bool) -> Moves | None:
        """One run: a full one reads the kernel and plans against the whole desired state;
        else the plan is of what moved since the run before (the kernel holds its state).
        What moved in the desired state since the run before (None: not known)."""
        if self.fleet is not None:
            if full:  # (a failed run asks for one: the kernel may hold part of it)
                self.fleet.recheck_netns()  # an orchestrator's namespace may have appeared
                moves = self.fleet.take()  # told, not planned: the plan is from the kernel
                await asyncio.to_thread(self.reconcile_once, self.fleet.state)
                return moves
            moves = self.fleet.take()
            if not moves:
                self.stats.unchanged += 1
            else:
                await asyncio.to_thread(self._apply_ops, lambda: plan_moves(moves))
            return moves
        desired = self.desired(view)
        if not full and desired == self._applied:
            self.stats.unchanged += 1
            return Moves()
        # Between full reads the kernel holds what was last applied: plan from that.
        since = None if full else self._applied
        self._applied = None
        await asyncio.to_thread(self.reconcile_once, desired, since)
        self._applied = desired
        return None if since is None else Moves.between(since, desired)

    def reconcile_once(self, desired: HostState, actual: HostState | None = None) -> list[Op]:
        """Read (unless ``actual``, the state last applied in full, is given), plan, apply, op
        by op (in the calling thread). Returns what was applied."""
        return self._apply_ops(
            lambda: plan(self.host.read() if actual is None else actual, desired)
        )

    def _apply_ops(self, make_plan: Callable[[], list[Op]]) -> list[Op]:
        started = time.monotonic()
        self.busy = True
        try:
            ops = make_plan()
            for op in ops:
                log.info("apply %s", op)
                self.host.apply(op)
        finally:
            self.busy = False
        elapsed = time.monotonic() - started
        self.stats.runs += 1
        self.stats.ops_applied += len(ops)
        self.stats.last_duration = elapsed
        if ops:
            log.info("reconciled: %d operations in %.3f s", len(ops), elapsed)
        return ops
