"""The load of ``ha_bench.py``: bursts of creates through the HTTP API, a change-stream follower
timed against its writer, and a create stream across a fault. Every time is ``perf_counter`` of
this one process (one clock), every client is ``sixpn.client.Client``.

Latencies are in seconds here; the report turns them into milliseconds.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sixpn.client import Client, generate_keypair

TICK = os.sysconf("SC_CLK_TCK")
ORG, APP, HOSTS = "bench", "web", ("h1", "h2")
LONG = httpx.Timeout(120.0, connect=10.0)  # a snapshot of thousands of machines


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0-100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def cpu_of(pids: Sequence[int]) -> float:
    """utime + stime of these processes (all threads), in seconds; a process gone counts 0."""
    ticks = 0
    for pid in pids:
        try:
            rest = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        ticks += int(rest[11]) + int(rest[12])
    return ticks / TICK


def busy_seconds() -> float:
    """CPU time the whole machine spent busy (every CPU, anyone's work), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / TICK  # minus idle and iowait


def brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:160]}"


@dataclass
class Burst:
    """What one burst of creates measured."""

    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)  # successful creates only
    errors: list[str] = field(default_factory=list)
    client_cpu: float = 0.0  # this process, s
    server_cpu: float = 0.0  # the replicas, s
    etcd_cpu: float = 0.0  # the etcd members, s
    busy: float = 0.0  # the whole machine, s

    def summary(self) -> dict[str, Any]:
        ok = len(self.latencies)
        ours = self.client_cpu + self.server_cpu + self.etcd_cpu
        return {
            "ok": ok,
            "errors": len(self.errors),
            "first_errors": self.errors[:3],
            "wall_s": round(self.wall, 4),
            "per_s": ok / self.wall if self.wall else math.nan,
            "p50_ms": pct(self.latencies, 50) * 1e3,
            "p99_ms": pct(self.latencies, 99) * 1e3,
            "client_cpu_pct": 100 * self.client_cpu / self.wall if self.wall else math.nan,
            "server_cpu_pct": 100 * self.server_cpu / self.wall if self.wall else math.nan,
            "etcd_cpu_pct": 100 * self.etcd_cpu / self.wall if self.wall else math.nan,
            "client_ms_per_op": 1e3 * self.client_cpu / ok if ok else math.nan,
            "server_ms_per_op": 1e3 * self.server_cpu / ok if ok else math.nan,
            "etcd_ms_per_op": 1e3 * self.etcd_cpu / ok if ok else math.nan,
            "other_load_pct": 100 * (self.busy - ours) / self.wall if self.wall else math.nan,
        }


async def prepare(url: str, token: str) -> None:
    """Org ``bench``, app ``web`` and hosts ``h1``, ``h2`` (fra) for machine creates."""
    async with Client(url, token) as c:
        await c.create_org(ORG)
        await c.create_app(ORG, APP)
        for i, name in enumerate(HOSTS):
            key = generate_keypair().public_key
            await c.join_host(name, "fra", f"192.0.2.{i + 1}:51820", key)


async def burst(
    urls: Sequence[str],
    token: str,
    total: int,
    workers: int,
    op: Callable[[Client, int], Awaitable[object]],
    *,
    server_pids: Sequence[int],
    etcd_pids: Sequence[int] = (),
) -> Burst:
    """``total`` calls of ``op(client, n)`` by ``workers`` concurrent clients, each one closed
    loop (the next call when the last has answered). With several replica URLs every worker
    holds a client per replica and alternates between them, starting at a different one, so
    the calls split evenly over the replicas at any concurrency."""
    out = Burst()
    left = iter(range(total))
    clients = [[Client(u, token) for u in urls] for _ in range(workers)]
    try:
        for own in clients:  # connections made before the clock starts
            for c in own:
                await c.health()

        async def worker(k: int) -> None:
            own = clients[k]
            turn = k
            for n in left:
                c = own[turn % len(own)]
                turn += 1
                started = time.perf_counter()
                try:
                    await op(c, n)
                except Exception as exc:
                    out.errors.append(brief(exc))
                    continue
                out.latencies.append(time.perf_counter() - started)

        cpu0 = (time.process_time(), cpu_of(server_pids), cpu_of(etcd_pids), busy_seconds())
        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(workers)))
        out.wall = time.perf_counter() - started
        out.client_cpu = time.process_time() - cpu0[0]
        out.server_cpu = cpu_of(server_pids) - cpu0[1]
        out.etcd_cpu = cpu_of(etcd_pids) - cpu0[2]
        out.busy = busy_seconds() - cpu0[3]
    finally:
        for own in clients:
            for c in own:
                await c.aclose()
    return out


async def create_machine(c: Client, n: int) -> object:
    """A machine of ``bench/web`` on h1 or h2 (the API picks its ID and address)."""
    return await c.create_machine(ORG, APP, host=HOSTS[n % len(HOSTS)])


def org_op(prefix: str) -> Callable[[Client, int], Awaitable[object]]:
    async def op(c: Client, n: int) -> object:
        return await c.create_org(f"{prefix}-{n}")

    return op


async def distinct_ids(url: str, token: str) -> dict[str, int]:
    """Network and machine-address counts in the store against their distinct values."""
    async with Client(url, token, timeout=LONG) as c:
        snap = await c.snapshot()
    nets = [n.net_id for n in snap.networks]
    addrs = [m.address for m in snap.machines]
    return {
        "networks": len(nets),
        "distinct_net_ids": len(set(nets)),
        "machines": len(addrs),
        "distinct_addresses": len(set(addrs)),
    }


# -- write to follower ---------------------------------------------------------------------------


async def follow_delay(
    writer_url: str, follower_url: str, token: str, samples: int, prefix: str, gap: float
) -> dict[str, Any]:
    """One writer creates organizations one at a time on ``writer_url``; a follower
    (``Client.follow`` from a fresh snapshot) on ``follower_url`` stamps each org's put event as
    it arrives. delay = follower's stamp - the writer's stamp when the create was acknowledged
    (its answer parsed). The next create waits for the event (at most 5 s) and ``gap`` s."""
    seen: dict[str, float] = {}
    arrived: dict[str, asyncio.Event] = {}
    delays: list[float] = []
    from_send: list[float] = []
    acks: list[float] = []
    missed: list[str] = []
    async with Client(writer_url, token) as writer, Client(follower_url, token) as follower:
        await writer.health()
        since = (await follower.snapshot()).revision

        async def follow() -> None:
            async for batch in follower.follow(since, min_backoff=0.05, max_backoff=0.5):
                now = time.perf_counter()
                for event in batch.events:
                    name = getattr(event.entity, "name", "")
                    if event.kind == "org" and event.type == "put" and name not in seen:
                        seen[name] = now
                        if name in arrived:
                            arrived[name].set()

        task = asyncio.create_task(follow())
        try:
            for n in range(-3, samples):  # 3 unmeasured: the stream is open and warm
                name = f"{prefix}-{n + 3}"
                arrived[name] = asyncio.Event()
                started = time.perf_counter()
                await writer.create_org(name)
                acked = time.perf_counter()
                try:
                    await asyncio.wait_for(arrived[name].wait(), 5.0)
                except TimeoutError:
                    missed.append(name)
                    continue
                if n >= 0:
                    delays.append(seen[name] - acked)
                    from_send.append(seen[name] - started)
                    acks.append(acked - started)
                await asyncio.sleep(gap)
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # the follower failed: reported as missed events
                missed.append(brief(exc))
    return {
        "samples": len(delays),
        "missed": missed,
        "delay_ms": [round(d * 1e3, 3) for d in delays],
        "p50_ms": pct(delays, 50) * 1e3,
        "p99_ms": pct(delays, 99) * 1e3,
        "min_ms": min(delays) * 1e3 if delays else math.nan,
        "max_ms": max(delays) * 1e3 if delays else math.nan,
        "negative": sum(d < 0 for d in delays),
        "create_p50_ms": pct(acks, 50) * 1e3,
        "from_send_p50_ms": pct(from_send, 50) * 1e3,
        "from_send_p99_ms": pct(from_send, 99) * 1e3,
    }


# -- a create stream across a fault ---------------------------------------------------------------


async def stream_across(
    url: str,
    token: str,
    app: str,
    workers: int,
    fault: Callable[[], Awaitable[str]],
    *,
    warm: float,
    after: float,
    steady: float,
    cap: float,
) -> dict[str, Any]:
    """``workers`` clients (``url`` may list replicas) create machines of ``app`` in a closed
    loop; after ``warm`` s ``fault()`` runs (it kills something and says what). The stream goes
    on for at least ``after`` s past the fault and until creates have succeeded again for
    ``steady`` s (at most ``cap`` s past the fault). Every acknowledged machine is kept to be
    checked against the store later."""
    oks: list[tuple[float, str]] = []  # (acknowledged at, machine ID)
    errors: list[tuple[float, str]] = []
    stop = asyncio.Event()
    clients = [Client(url, token) for _ in range(workers)]

    slowest: list[tuple[float, float, str]] = [(0.0, 0.0, "")]  # (took, sent at, outcome)

    async def worker(c: Client, k: int) -> None:
        n = k
        while not stop.is_set():
            n += workers
            sent = time.perf_counter()
            try:
                m = await c.create_machine(ORG, app, host=HOSTS[n % len(HOSTS)])
            except Exception as exc:
                now = time.perf_counter()
                errors.append((now, brief(exc)))
                slowest[0] = max(slowest[0], (now - sent, sent, "failed"))
                await asyncio.sleep(0.01)  # a refused connection fails at once: no hot loop
                continue
            now = time.perf_counter()
            oks.append((now, m.id))
            slowest[0] = max(slowest[0], (now - sent, sent, "acknowledged"))

    try:
        for c in clients:
            await c.health()
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(worker(c, k)) for k, c in enumerate(clients)]
        await asyncio.sleep(warm)
        t_fault = time.perf_counter()
        what = await fault()
        while True:
            await asyncio.sleep(0.05)
            now = time.perf_counter()
            back = [t for t, _ in oks if t > t_fault]
            if now - t_fault >= cap:
                break
            if now - t_fault >= after and back and now - back[0] >= steady:
                break
        stop.set()
        t_end = time.perf_counter()  # gaps end here: what comes later is the drain
        _, pending = await asyncio.wait(tasks, timeout=35)
        for t in pending:
            t.cancel()
    finally:
        for c in clients:
            await c.aclose()
    stamps = sorted(t for t, _ in oks if t <= t_end)
    # (length, start) of every interval without an acknowledged create, from the stream's start
    # to its end. "Before": the longest that ends before the kill (the machine's noise floor).
    # "After": the longest that ends after the kill and begins before 1 s past it (the one the
    # kill caused; later ones are noise again, and a replica kill may cause none longer).
    gaps = [(b - a, a) for a, b in zip([t0, *stamps], [*stamps, t_end], strict=True)]
    longest, _ = max(gaps)
    pre = max((g for g, a in gaps if a + g <= t_fault), default=math.nan)
    post, post_from = max((g, a) for g, a in gaps if a + g > t_fault and a < t_fault + 1.0)
    later = [t for t in stamps if t > t_fault]
    return {
        "fault": what,
        "acked": len(stamps),  # within the measured stream (the drain's answers: in "ids")
        "acked_before_fault": len(stamps) - len(later),
        "acked_after_fault": len(later),
        "errors": len(errors),
        "first_errors": [e for _, e in errors[:3]],
        "longest_gap_ms": longest * 1e3,
        "longest_gap_before_fault_ms": pre * 1e3,
        "longest_gap_after_fault_ms": post * 1e3,
        "after_gap_starts_ms": (post_from - t_fault) * 1e3,
        "fault_to_flowing_ms": (post_from + post - t_fault) * 1e3,
        "fault_to_next_create_ms": (later[0] - t_fault) * 1e3 if later else math.nan,
        "seconds": t_end - t0,
        "slowest_create_ms": slowest[0][0] * 1e3,
        "slowest_create_sent_ms": (slowest[0][1] - t_fault) * 1e3,
        "slowest_create_outcome": slowest[0][2],
        "acked_ms_from_fault": [round((t - t_fault) * 1e3, 2) for t in stamps],
        "errors_ms_from_fault": [[round((t - t_fault) * 1e3, 2), e] for t, e in errors],
        "ids": [mid for _, mid in oks],
    }


async def check_store(url: str, token: str, app: str, ids: Sequence[str]) -> tuple[list[str], int]:
    """The acknowledged machine IDs the store does not hold (SPEC 10: none), and how many
    machines of ``app`` it holds that were not acknowledged (creates that failed with "may or
    may not have been applied" and were)."""
    async with Client(url, token, timeout=LONG) as c:
        held = {m.id for m in await c.list_machines(ORG, app=app)}
    return [i for i in ids if i not in held], len(held - set(ids))
