"""The measurements of ``scale_bench.py``, each run in a fresh process against a `sixpn server`
serving a generated store; prints one JSON object on stdout.

``dns``: what a DNS server does at start (runtime/dns.py, follower.py: ``GET /v1/snapshot``,
``parse_snapshot``, ``View.from_snapshot``, ``Zone.load``), timed phase by phase, with its
resident memory (``VmRSS``) before and after, after ``gc.collect()`` and after what the server
does once a snapshot is loaded (``follower.settle``: gc, ``gc.freeze``, ``malloc_trim(0)``);
the anchor, in the same process: ``json.loads`` of the same bytes (the standard library's
decoder, building plain dicts and no entities). Then every machine's ``<id>.vm.<app>`` name, every
app's name and every network's listings answered once as the UDP path does (``parse_query``,
``Zone.lookup``, ``respond``, kept in a response dict keyed like the server's) and the memory
that adds; then one change at a time as the server streams it (a machine created, stopped,
destroyed; an app added): ``parse_line``, ``View.apply``, ``Zone.apply``, and the first answer
for the app after it.

``agent``: a host's desired state (``core.desired.desired_state``, and as the agent keeps it,
``core.incremental.IncrementalDesired``) and plans (``core.plan.plan``) through the public
functions: the build from scratch, the index built at a snapshot, the first resync from an
empty host, an idle resync, and the cost per change elsewhere in the fleet (and on the host
itself), the agent's way: the change taken into the kept state, planned if it moved; beside it
the way before (the desired state rebuilt from the view, compared with the last one, planned).

``--profile``: cProfile of the same work, top functions by own time. ``--tracemalloc``: where
the DNS state's memory was allocated (by line).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import gc
import io
import json
import os
import pstats
import random
import statistics
import struct
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import httpx

from sixpn.client.feed import parse_line, parse_snapshot
from sixpn.control import codec, feed, keys
from sixpn.core import addressing, dnswire
from sixpn.core.desired import desired_state
from sixpn.core.hoststate import HostState, wg_ifname
from sixpn.core.incremental import IncrementalDesired
from sixpn.core.plan import plan, plan_moves
from sixpn.core.regions import RegionCatalogue
from sixpn.dns.server import DnsServer
from sixpn.dns.zone import Zone
from sixpn.follower import settle
from sixpn.model.entities import App, Machine, MachineState
from sixpn.runtime.dns import zone_settings
from sixpn.store import Event, EventType
from sixpn.view import Delta, View

KINDS = ("machine created", "machine stopped", "machine destroyed", "app added")


def rss() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in bytes."""
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value, _ = line.split()
                found[name[:-1]] = int(value) * 1024
    return found


def cpu_of(pid: int | None) -> float:
    """utime + stime of process ``pid`` in seconds (clock ticks: 10 ms), 0 without one."""
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fetch(url: str, token: str) -> bytes:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
        r = http.get("/v1/snapshot", timeout=120)
        r.raise_for_status()
        return r.content


def profiled(fn: Callable[[], Any], top: int = 14) -> list[dict[str, Any]]:
    """Top functions of ``fn`` by own time (cProfile), with their cumulative time."""
    prof = cProfile.Profile()
    prof.runcall(fn)
    stats = pstats.Stats(prof, stream=io.StringIO())
    total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]  # type: ignore[attr-defined]
    return [
        {
            "function": f"{fn_[0].split('/src/')[-1].split('/lib/')[-1]}:{fn_[1]}({fn_[2]})",
            "calls": row[1],
            "own_ms": round(row[2] * 1e3, 2),
            "own_pct": round(100 * row[2] / total, 1) if total else 0.0,
            "cum_ms": round(row[3] * 1e3, 2),
        }
        for fn_, row in rows
    ]


def query(name: str, qtype: int) -> bytes:
    """A query as a stub resolver sends it (no EDNS)."""
    qname = b"".join(bytes((len(label),)) + label.encode() for label in name.split("."))
    return (
        struct.pack("!6H", 0x5A5A, 0x0100, 1, 0, 0, 0)
        + qname
        + b"\0"
        + struct.pack("!2H", qtype, 1)
    )


def udp(server: DnsServer, net_id: int, data: bytes) -> bytes:
    """One UDP query from ``net_id`` through the server's own path and its kept responses, as
    ``DnsServer._drain`` runs it (and as tests/unit/test_dns_cache.py drives it): first drop what
    changed since the last query, then a kept response, else ``_answer_udp``."""
    if server.zone.version != server._responses_version:
        server._forget_changed()
    hit = server._responses.get((net_id, data[2:]))
    if hit is not None:
        return data[:2] + hit
    out = server._answer_udp(None, data, ("fdaa::2", 0), net_id)  # type: ignore[arg-type]
    assert out is not None
    return out


def dns_server(zone: Zone) -> DnsServer:
    server = DnsServer(zone)
    server.ready = True
    return server


# --- changes, as the server streams them --------------------------------------------------------


class Changes:
    """Makes one change at a time against ``view``, as the control plane would have.

    What it picks from is listed once, up front: building a list or a set of 100k machines
    before each timed change would evict the caches the change then runs in (an artefact that
    grows with the fleet)."""

    def __init__(self, view: View, rnd: random.Random) -> None:
        self.view = view
        self.rnd = rnd
        self.serial = 0
        self.machines = list(view.machines.values())
        self.ids = set(view.machines)
        self.apps = list(view.apps.values())
        self.by_region: dict[str, list[str]] = {}
        for h in view.hosts.values():
            self.by_region.setdefault(h.region, []).append(h.name)

    def line(self, entity: object, key: str) -> bytes:
        rev = self.view.revision + 1
        out = feed.encode_change(rev, [Event(rev, EventType.PUT, key, codec.encode(entity))])
        assert out is not None
        return out

    def live(self, where: Callable[[Machine], bool] = lambda m: True) -> Machine:
        """A started machine (as it is now) for which ``where`` holds."""
        while True:
            m = self.view.machines[self.machines[self.rnd.randrange(len(self.machines))].id]
            if m.state == MachineState.STARTED and where(m):
                return m

    def created(
        self, like: Machine, host: str | None = None, avoid: str | None = None
    ) -> tuple[Machine, bytes]:
        """A new machine of ``like``'s app on ``host``, else on a host of ``like``'s region
        other than ``avoid`` (what placement by region does)."""
        if host is None:
            hosts = [h for h in self.by_region[like.region] if h != avoid] or [like.host]
            host = hosts[self.rnd.randrange(len(hosts))]
        h = self.view.hosts[host]
        machine_id = self.rnd.randbytes(7).hex()
        while machine_id in self.ids:
            machine_id = self.rnd.randbytes(7).hex()
        self.ids.add(machine_id)
        f = self.rnd.randrange(addressing.MACHINE_FIELD_MIN, addressing.MACHINE_FIELD_MAX)
        now = like.created_at + 1
        m = dataclasses.replace(
            like,
            id=machine_id,
            host=h.name,
            host_id=h.host_id,
            region=h.region,
            field=f,
            address=addressing.machine_address(like.net_id, h.host_id, f),
            created_at=now,
            updated_at=now,
        )
        return m, self.line(m, keys.machine(m.org, m.app, m.id))

    def state(self, m: Machine, state: MachineState) -> tuple[Machine, bytes]:
        changed = dataclasses.replace(m, state=state, updated_at=m.updated_at + 1)
        return changed, self.line(changed, keys.machine(m.org, m.app, m.id))

    def app(self) -> tuple[App, bytes]:
        like = self.apps[self.rnd.randrange(len(self.apps))]
        self.serial += 1
        new = dataclasses.replace(like, name=f"added-{self.serial}", created_at=like.created_at + 1)
        return new, self.line(new, keys.app(new.org, new.name))

    def make(self, kind: str, **where: Any) -> tuple[Any, bytes]:
        if kind == "machine created":
            like = self.live(where.get("near", lambda m: True))
            return self.created(like, where.get("host"), where.get("avoid"))
        if kind == "machine stopped":
            return self.state(self.live(where.get("pick", lambda m: True)), MachineState.STOPPED)
        if kind == "machine destroyed":
            m = self.live(where.get("pick", lambda m: True))
            return self.state(m, MachineState.DESTROYED)
        return self.app()


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "max": ordered[-1],
        "n": len(ordered),
    }


# --- DNS ----------------------------------------------------------------------------------------


def dns(args: argparse.Namespace) -> dict[str, Any]:
    regions = list(RegionCatalogue.default())
    settings = zone_settings(regions, "fra", api_in_network=False)
    parse_snapshot(args.url, b'{"revision":0}')  # warm: the decoders are built at import
    if args.tracemalloc:
        tracemalloc.start()
    gc.collect()
    base = rss()
    t0, c0, s0 = time.perf_counter(), time.thread_time(), cpu_of(args.server_pid)
    raw = fetch(args.url, args.token)
    t1, c1, s1 = time.perf_counter(), time.thread_time(), cpu_of(args.server_pid)
    snap = parse_snapshot(args.url, raw)
    t2 = time.perf_counter()
    view = View.from_snapshot(snap)
    t3 = time.perf_counter()
    zone = Zone(settings)
    zone.load(view)
    t4, c4 = time.perf_counter(), time.thread_time()
    loaded = rss()
    out: dict[str, Any] = {
        "machines": len(view.machines),
        "snapshot_bytes": len(raw),
        "seconds": {
            "get": t1 - t0,
            "parse": t2 - t1,
            "view": t3 - t2,
            "zone": t4 - t3,
            "build": t4 - t1,
            "build_cpu": c4 - c1,
            "get_cpu_client": c1 - c0,
            "get_cpu_server": s1 - s0,  # the server's assembly and sending, its whole process
            "end_to_end_cpu": (c4 - c0) + (s1 - s0),
            "end_to_end": t4 - t0,
        },
    }
    del raw, snap
    gc.collect()
    after_gc = rss()
    if args.tracemalloc:
        # what the build allocated and still holds; modules imported meanwhile left out
        held = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, "<frozen importlib._bootstrap*>")]
        )
        out["tracemalloc"] = [
            {
                "where": str(s.traceback[0]).split("/src/")[-1].split("/lib/")[-1],
                "bytes": s.size,
                "count": s.count,
            }
            for s in held.statistics("lineno")[:12]
        ]
        out["tracemalloc_total"] = sum(s.size for s in held.statistics("filename"))
        tracemalloc.stop()
        return out
    t = time.perf_counter()
    trimmed = settle()  # what the DNS server does after a snapshot (follower.py)
    out["seconds"]["malloc_trim"] = time.perf_counter() - t
    gc.unfreeze()
    after_trim = rss()
    out["rss"] = {
        "base": base["VmRSS"],
        "loaded": loaded["VmRSS"],
        "peak": loaded["VmHWM"],
        "after_gc": after_gc["VmRSS"],
        "after_trim": after_trim["VmRSS"] if trimmed else None,
    }
    # a full collection walks every object the state holds; gc.freeze() takes them out of it
    t = time.perf_counter()
    gc.collect()
    out["seconds"]["gc_full"] = time.perf_counter() - t
    gc.freeze()
    t = time.perf_counter()
    gc.collect()
    out["seconds"]["gc_full_frozen"] = time.perf_counter() - t
    gc.unfreeze()
    if args.profile:
        body = fetch(args.url, args.token)

        def build() -> None:
            z = Zone(settings)
            z.load(View.from_snapshot(parse_snapshot(args.url, body)))

        out["profile"] = profiled(build)
    # the anchor: the standard library's JSON decoder on the same bytes
    raw = fetch(args.url, args.token)
    t = time.perf_counter()
    decoded = json.loads(raw)
    out["seconds"]["anchor_json_loads"] = time.perf_counter() - t
    del decoded, raw
    gc.collect()
    server = dns_server(zone)  # never started: its UDP path is driven directly
    if args.answer_all:
        out["answer_all"] = answer_all(server, view)
    if args.changes:
        out["changes"] = dns_changes(server, view, args)
    return out


def answer_all(server: DnsServer, view: View) -> dict[str, Any]:
    """Every vm name, app name and network listing answered once; what it takes, and costs."""
    names: list[tuple[int, bytes]] = []
    for m in view.machines.values():
        names.append((m.net_id, query(f"{m.id}.vm.{m.app}.internal", dnswire.QTYPE_AAAA)))
    for a in view.apps.values():
        names.append((a.net_id, query(f"{a.name}.internal", dnswire.QTYPE_AAAA)))
    for n in view.networks.values():
        for listing in ("_apps", "_instances"):
            names.append((n.net_id, query(f"{listing}.internal", dnswire.QTYPE_TXT)))
    gc.collect()
    before = rss()["VmRSS"]
    t = time.thread_time()
    for net_id, data in names:
        udp(server, net_id, data)
    first = time.thread_time() - t
    t = time.thread_time()
    for net_id, data in names:
        udp(server, net_id, data)
    again = time.thread_time() - t
    gc.collect()
    kept: dict[int, int] = {}
    for net_id, _ in server._responses:
        kept[net_id] = kept.get(net_id, 0) + 1
    return {
        "names": len(names),
        "first_us": 1e6 * first / len(names),
        "cached_us": 1e6 * again / len(names),
        "rss_added": rss()["VmRSS"] - before,
        "kept": len(server._responses),
        "kept_per_network_max": max(kept.values()),
    }


def dns_changes(server: DnsServer, view: View, args: argparse.Namespace) -> dict[str, Any]:
    zone = server.zone
    make = Changes(view, random.Random(args.seed))
    found: dict[str, dict[str, list[float]]] = {}
    for i in range(args.changes * len(KINDS)):
        kind = KINDS[i % len(KINDS)]
        entity, line = make.make(kind)
        name = query(f"{entity.name if isinstance(entity, App) else entity.app}.internal", 28)
        udp(server, entity.net_id, name)  # answered (and kept) before the change
        # CPU time of this thread (other sessions' load on the machine does not count), and the
        # wall time of the whole change beside it
        w0, t0 = time.perf_counter(), time.thread_time()
        batch = parse_line(args.url, line)
        t1 = time.thread_time()
        deltas = view.apply(batch)
        t2 = time.thread_time()
        zone.apply(deltas)
        t3, w3 = time.thread_time(), time.perf_counter()
        kept = len(server._response_keys.get(entity.net_id, ()))
        server._forget_changed()  # what the next query does first: drop that network's kept
        t4 = time.thread_time()
        udp(server, entity.net_id, name)  # the new answer, computed, encoded and kept
        t5 = time.thread_time()
        row = found.setdefault(
            kind, {"decode": [], "view": [], "zone": [], "forget": [], "first_answer": [],
                   "wall": [], "kept": []}
        )  # fmt: skip
        for part, sec in (
            ("decode", t1 - t0),
            ("view", t2 - t1),
            ("zone", t3 - t2),
            ("forget", t4 - t3),
            ("first_answer", t5 - t4),
            ("wall", w3 - w0),
        ):
            row[part].append(1e6 * sec)
        row["kept"].append(float(kept))  # responses of that network dropped (a count)
    return {kind: {part: summary(v) for part, v in parts.items()} for kind, parts in found.items()}


# --- the agent ----------------------------------------------------------------------------------


def agent(args: argparse.Namespace) -> dict[str, Any]:
    raw = fetch(args.url, args.token)
    view = View.from_snapshot(parse_snapshot(args.url, raw))
    me = min(view.hosts.values(), key=lambda h: h.host_id).name  # the generator's dense host
    live_by_host: dict[str, int] = {}
    for m in view.machines.values():
        if m.state != MachineState.DESTROYED:
            live_by_host[m.host] = live_by_host.get(m.host, 0) + 1
    typical = sorted(live_by_host, key=lambda h: (live_by_host[h], h))[len(live_by_host) // 2]

    def build(host: str) -> HostState:
        return build_on(view, host)

    def timed(fn: Callable[[], Any], rounds: int) -> tuple[Any, list[float]]:
        """``fn``'s result and its CPU milliseconds (this thread's), ``rounds`` times."""
        times, result = [], None
        for _ in range(rounds):
            t = time.thread_time()
            result = fn()
            times.append(1e3 * (time.thread_time() - t))
        return result, times

    desired, build_ms = timed(lambda: build(me), args.rounds)
    kept = IncrementalDesired(me, 51820, wg_ifname(view.hosts[me].host_id))
    _, load_ms = timed(lambda: kept.load(view), args.rounds)
    assert kept.state == desired, "the kept desired state differs from the one built"
    _, typical_ms = timed(lambda: build(typical), args.rounds)
    empty = HostState(wg_ifname=None)
    first, first_ms = timed(lambda: plan(empty, desired), args.rounds)
    idle, idle_ms = timed(lambda: plan(desired, build(me)), args.rounds)
    out: dict[str, Any] = {
        "host": me,
        "host_machines": live_by_host.get(me, 0),
        "host_wg_peers": len(desired.wg_peers),
        "host_networks": len(desired.pairs),
        "typical_host_machines": live_by_host[typical],
        "build_ms": summary(build_ms),
        "kept_load_ms": summary(load_ms),
        "typical_build_ms": summary(typical_ms),
        "first_resync_plan_ms": summary(first_ms),
        "first_resync_ops": len(first),
        "idle_resync_ms": summary(idle_ms),  # a rebuild and a plan that must be empty
        "idle_resync_ops": len(idle),
    }
    t = time.perf_counter()
    gc.collect()
    out["gc_full_ms"] = 1e3 * (time.perf_counter() - t)
    if args.profile:
        out["profile"] = profiled(lambda: plan(desired, build(me)))
    # as the agent does once a snapshot is loaded (follower.py): the state leaves the cyclic
    # GC's walks, which would otherwise land in the middle of the changes timed below (a full
    # collection walks every entity: gc_full_ms)
    # the checked pass's copy of the snapshot, made before the freeze: like the view, out of
    # the collections that would otherwise fall in the timed changes
    twin = View.from_snapshot(parse_snapshot(args.url, raw))  # for the checked pass
    twin_kept = IncrementalDesired(me, 51820, wg_ifname(view.hosts[me].host_id))
    twin_kept.load(twin)
    settle()
    t = time.perf_counter()
    gc.collect()
    out["gc_full_frozen_ms"] = 1e3 * (time.perf_counter() - t)
    kept.take()  # the journal of the load (applied in full, by a kernel read)
    out["changes"] = agent_changes(view, kept, desired, args, (twin, twin_kept))
    gc.unfreeze()
    return out


def agent_changes(
    view: View,
    kept: IncrementalDesired,
    desired: HostState,
    args: argparse.Namespace,
    twin: tuple[View, IncrementalDesired],
) -> dict[str, Any]:
    """Each change's cost the agent's way (timed on its own: change after change, as an agent
    takes a stream: the change taken into the kept state, and if it moved, the plan of its
    journal), then the same changes replayed on ``twin`` (the same snapshot, another copy, and a
    second kept state) to check every kept state and plan against a rebuild from scratch, and
    to time that rebuild. Two passes, because a rebuild at 100k machines (~125 ms, tens of
    thousands of objects made and collected) between two timed changes would evict the caches
    the next one runs in: a cost of the benchmark that grows with the fleet, not of the agent.
    (Nor does the timed pass make a whole state: the agent makes one for a status report, at
    most once a second, not per change.)"""
    me = kept.me
    make = Changes(view, random.Random(args.seed))
    # what the changes are picked from (every machine listed) out of the collections, as the
    # agent's own state is (follower.settle): a full collection walking 100k list entries in
    # the middle of a timed change is the benchmark's cost, not the agent's
    gc.collect()
    gc.freeze()
    elsewhere = {"near": lambda m: True, "avoid": me, "pick": lambda m: m.host != me}
    kinds = [(k, elsewhere) for k in KINDS] + [
        ("machine created here", {"near": lambda m: m.host == me, "host": me})
    ]
    found: dict[str, dict[str, list[float]]] = {}
    steps: list[tuple[str, bytes, list[Any], bool]] = []
    for i in range(args.changes * len(kinds)):
        kind, where = kinds[i % len(kinds)]
        _, line = make.make(kind.replace(" here", ""), **where)
        deltas: list[Delta] = view.apply(parse_line(args.url, line))
        row = found.setdefault(kind, {k: [] for k in ("kept_ms", "rebuild_ms", "ops", "moved")})
        t = time.thread_time()  # the change taken in, a plan if it moved
        moved = kept.apply(deltas)
        ops = plan_moves(kept.take()) if moved else []
        row["kept_ms"].append(1e3 * (time.thread_time() - t))
        steps.append((kind, line, ops, moved))
    twin_view, twin_kept = twin
    prev = desired  # the way before: rebuilt from the view, compared, planned
    for kind, line, ops, moved in steps:
        deltas = twin_view.apply(parse_line(args.url, line))
        row = found[kind]
        t = time.thread_time()
        new = build_on(twin_view, me)
        before = [] if new == prev else plan(prev, new)
        row["rebuild_ms"].append(1e3 * (time.thread_time() - t))
        assert twin_kept.apply(deltas) == moved, f"the kept states disagree after {kind}"
        assert twin_kept.state == new, f"kept and rebuilt states differ after {kind}"
        assert before == ops, f"kept and rebuilt plans differ after {kind}"
        row["ops"].append(float(len(ops)))
        row["moved"].append(float(moved))
        prev = new
        gc.collect()  # untimed: the rebuild's garbage, out of the next rebuild's timing

    def split(r: dict[str, list[float]], moved: bool) -> dict[str, float] | None:
        times = [t for t, m in zip(r["kept_ms"], r["moved"], strict=True) if bool(m) == moved]
        return summary(times) if times else None

    return {
        kind: {
            "desired_plan_ms": summary(r["kept_ms"]),
            # the changes that moved the host's state, and the others, apart: the share that
            # moves grows with the fleet (a machine created elsewhere brings a network to a host
            # that had none of it more often among 1,000 hosts than among 10)
            "moved_ms": split(r, True),
            "still_ms": split(r, False),
            "rebuild_ms": summary(r["rebuild_ms"]),
            "ops_max": max(r["ops"]),
            "changed_share": sum(r["moved"]) / len(r["moved"]),
        }
        for kind, r in found.items()
    }


def build_on(view: View, host: str) -> HostState:
    return desired_state(
        view.hosts[host], view.hosts, view.machines.values(), view.peers.values(), listen_port=51820
    )


# --- the server's side: the snapshot's assembly -------------------------------------------------


class _Listed:
    """A store that answers ``ranges`` from lists already read: ``feed.snapshot``'s own work."""

    def __init__(self, groups: list[list[Any]], revision: int) -> None:
        self.groups, self.rev = groups, revision

    async def ranges(self, prefixes: list[str]) -> tuple[list[list[Any]], int]:
        return self.groups, self.rev


def snapshot(args: argparse.Namespace) -> dict[str, Any]:
    """``feed.snapshot`` on the SQLite store, as ``GET /v1/snapshot`` runs it, in parts."""
    from sixpn.store.sqlite import SqliteStore

    async def run() -> dict[str, Any]:
        store = await SqliteStore.open(args.db)
        try:
            # CPU of the whole process (the store reads on a thread of its own), and wall
            whole, cpu = [], []
            for _ in range(args.rounds):
                t, c = time.perf_counter(), time.process_time()
                raw = await feed.snapshot(store)
                whole.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            c = time.process_time()
            groups, revision = await store.ranges([f"{k}/" for k in feed.SNAPSHOT_KINDS])
            ranged = time.process_time() - c
            everything = len((await store.range(""))[0])
        finally:
            await store.close()
        c = time.process_time()
        await feed.snapshot(_Listed(groups, revision))  # type: ignore[arg-type]
        joined = time.process_time() - c
        entities = sum(len(kvs) for kvs in groups)
        return {
            "snapshot_s": summary(whole),
            "snapshot_cpu_s": summary(cpu),
            "range_s": ranged,
            "join_s": joined,
            "keys": everything,
            "entity_keys": entities,
            "bytes": len(raw),
        }

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("what", choices=("dns", "agent", "snapshot"))
    p.add_argument("--url", help="the server (dns, agent)")
    p.add_argument("--token", help="its admin token")
    p.add_argument("--db", help="the SQLite store (snapshot)")
    p.add_argument("--server-pid", type=int, help="the server's PID (its CPU for the GET)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--changes", type=int, default=20, help="changes of each kind")
    p.add_argument("--rounds", type=int, default=5, help="agent: builds and plans timed")
    p.add_argument("--answer-all", action="store_true")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--tracemalloc", action="store_true")
    args = p.parse_args(argv)
    result = {"dns": dns, "agent": agent, "snapshot": snapshot}[args.what](args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
