"""Faults benchmark (SPEC 10, issue 17): for each fault injected in a 3-host lab, the time until
every check passes again, and the packets lost meanwhile.

Method
------
A lab of 3 hosts (``a`` fra gateway, ``b`` fra, ``c`` ams; agents with ``--resync 2``), one
organization, one app, one machine per host (``a1``, ``b1``, ``c1``). During every fault two
steady pings run from ``a1``, one to ``b1`` and one to ``c1``, 20 a second (``ping -i 0.05``);
the packets lost are what each flow sent and never got back (``ping``'s own summary).
Each fault, ``--rounds`` times (default 3), in this order:

1. **control plane down**: the server SIGKILLed, kept down ``--down`` s (default 10), started
   again. Recovered: a machine created then (on ``c``) answers ``a1``'s ping and is in every
   host's ``web.internal``. Timed from the start of the server.
2. **agent killed mid-batch**: ``b``'s agent SIGKILLed while 6 machines are created on ``b`` (every
   other one destroyed again), started again. Recovered: ``b``'s ``status.json`` lists exactly the
   machines the API has on ``b``, and each answers ``a1``'s ping. Timed from the agent's start.
3. **cable pulled**: ``b``'s underlay cable out for ``--cut`` s (default 30), then back.
   Recovered: ``a1`` -> ``b1`` and ``b1`` -> ``c1`` answer. Timed from the plug-in. The loss on
   ``a1`` -> ``b1`` includes the cut itself.
4. **address moved**: ``b``'s underlay address changed (and back, in the next round).
   Recovered: the host's record and ``a``'s and ``c``'s WireGuard peers carry the new endpoint,
   ``c1`` -> ``b1`` and ``a1`` -> ``b1`` answer. Timed from the move.
5. **host rebooted**: ``c``'s agent SIGKILLed, its WireGuard interface, nftables table and machine
   namespaces deleted, the agent started again on the same data directory. Recovered: ``c1`` is
   wired again, answers ``a1`` and resolves ``web.internal``. Timed from the agent's start. (The
   flow to ``c1`` loses what the "reboot" takes: its namespace is gone until the agent makes it.)
6. **veth deleted by hand**: ``c1``'s host-side veth deleted (``ip link del``). Recovered: ``a1``
   reaches ``c1`` again (the agent's next resync rewires it in the namespace that exists).
   Timed from the deletion.

Checks are polled every 0.1 s (each a real ``ping -c 1``/``dig`` in a machine's namespace, so a
recovery time carries up to ~0.15 s of polling). A Markdown table on stdout and in
``bench/out/faults-<UTC timestamp>.md`` with a JSON twin. Everything made is removed on the way
out (``Lab.down``). Run as root: ``.venv/bin/python bench/faults_bench.py [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import sysinfo  # noqa: E402

from sixpn.core.hoststate import machine_ifname  # noqa: E402
from sixpn.lab import netns  # noqa: E402
from sixpn.lab.fabric import UNDERLAY_NET, WG_PORT, HostSpec, Lab  # noqa: E402

OUT_DIR = HERE / "out"
Machine = dict[str, Any]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=3, help="rounds of every fault (3)")
    p.add_argument("--down", type=float, default=10.0, help="control plane down, s (10)")
    p.add_argument("--cut", type=float, default=30.0, help="cable out, s (30)")
    p.add_argument("--quick", action="store_true", help="1 round, 3 s down, 5 s cut")
    p.add_argument("--out", type=Path, default=OUT_DIR, help="report folder (bench/out)")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.down, args.cut = 1, 3.0, 5.0
    return args


@dataclass
class World:
    lab: Lab
    api: httpx.Client
    m: dict[str, Machine] = field(default_factory=dict)

    def run(self, machine: Machine, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.lab.exec(machine, list(argv), timeout=10)

    def ping(self, src: str, dst: Machine) -> bool:
        argv = ("ping", "-6", "-c", "1", "-W", "1", dst["address"])
        return self.run(self.m[src], *argv).returncode == 0

    def names(self, src: Machine) -> set[str]:
        argv = ("dig", "+short", "+tries=1", "+time=1", "AAAA", "web.internal")
        return set(self.run(src, *argv).stdout.split())

    def create(self, host: str) -> Machine:
        r = self.api.post("/v1/orgs/alpha/machines", json={"app": "web", "host": host})
        r.raise_for_status()
        return dict(r.json())

    def destroy(self, machine: Machine) -> None:
        self.api.delete(f"/v1/orgs/alpha/machines/{machine['id']}")

    def wg_show(self, host: str, what: str) -> str:
        assert self.lab.state is not None
        ifname = self.lab.state.hosts[host]["wg_ifname"]
        return netns.run(self.lab.host_ns(host), ["wg", "show", ifname, what]).stdout


def until(check: Callable[[], bool], timeout: float = 120) -> float:
    """Seconds until ``check`` holds (polled every 0.1 s); an error past ``timeout``."""
    start = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - start
        except (httpx.HTTPError, subprocess.SubprocessError):
            pass
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"not recovered after {timeout} s: {check.__doc__ or check}")
        time.sleep(0.1)


@dataclass
class Flow:
    proc: subprocess.Popen[str]
    sent: int = 0
    received: int = 0


@contextlib.contextmanager
def flows(world: World) -> Iterator[dict[str, Flow]]:
    """Steady pings a1 -> b1 and a1 -> c1 (20/s) for the block; their counts after it."""
    running: dict[str, Flow] = {}
    for dst in ("b1", "c1"):
        argv = ["ping", "-6", "-n", "-i", "0.05", "-W", "2", world.m[dst]["address"]]
        ns = world.lab.machine_ns(world.m["a1"]["id"])
        proc = subprocess.Popen(netns.exec_argv(ns, argv), stdout=subprocess.PIPE, text=True)
        running[f"a1->{dst}"] = Flow(proc)
    try:
        time.sleep(0.5)
        yield running
    finally:
        time.sleep(2.5)  # answers still on their way count (-W 2)
        for flow in running.values():
            flow.proc.send_signal(signal.SIGINT)
            out, _ = flow.proc.communicate(timeout=10)
            counts = re.search(r"(\d+) packets transmitted, (\d+) received", out)
            if counts:
                flow.sent, flow.received = int(counts[1]), int(counts[2])


def in_every_dns(world: World, machine: Machine) -> bool:
    return all(machine["address"] in world.names(world.m[x]) for x in ("a1", "b1", "c1"))


# -- the faults: each returns the recovery time in seconds ----------------------------------------


def control_plane_down(world: World, args: argparse.Namespace) -> float:
    world.lab.stop_replica(0, signal.SIGKILL)
    time.sleep(args.down)
    started = time.monotonic()
    world.lab.start_replica(0)
    new = world.create("c")
    try:
        until(lambda: world.ping("a1", new))
        until(lambda: in_every_dns(world, new))
        return time.monotonic() - started
    finally:
        world.destroy(new)


def agent_killed_mid_batch(world: World, args: argparse.Namespace) -> float:
    lab, made = world.lab, []
    lab.stop_agent("b", signal.SIGKILL)
    for i in range(6):
        made.append(world.create("b"))
        if i % 2:
            world.destroy(made.pop())
    started = time.monotonic()
    lab.start_agent("b", resync=2.0)

    def converged() -> bool:
        listed = world.api.get("/v1/orgs/alpha/machines").json()
        wanted = {x["id"] for x in listed if x["host"] == "b" and x["state"] != "destroyed"}
        return set((lab.status("b") or {}).get("machines", [])) == wanted

    try:
        until(converged)
        for x in made:
            until(lambda x=x: world.ping("a1", x))
        return time.monotonic() - started
    finally:
        for x in made:
            world.destroy(x)


def cable_pulled(world: World, args: argparse.Namespace) -> float:
    world.lab.underlay_cable("b", plugged=False)
    time.sleep(args.cut)
    started = time.monotonic()
    world.lab.underlay_cable("b", plugged=True)
    until(lambda: world.ping("a1", world.m["b1"]))
    until(lambda: world.ping("b1", world.m["c1"]))
    return time.monotonic() - started


def address_moved(world: World, args: argparse.Namespace) -> float:
    assert world.lab.state is not None
    now = world.lab.state.hosts["b"]["address"]
    new = f"{UNDERLAY_NET}.62" if now != f"{UNDERLAY_NET}.62" else f"{UNDERLAY_NET}.12"
    endpoint = f"{new}:{WG_PORT}"
    started = time.monotonic()
    world.lab.move_host("b", new)
    until(lambda: world.api.get("/v1/hosts/b").json()["endpoint"] == endpoint)
    until(lambda: all(endpoint in world.wg_show(h, "endpoints") for h in ("a", "c")))
    until(lambda: world.ping("c1", world.m["b1"]))
    until(lambda: world.ping("a1", world.m["b1"]))
    return time.monotonic() - started


def host_rebooted(world: World, args: argparse.Namespace) -> float:
    lab, c1 = world.lab, world.m["c1"]
    assert lab.state is not None
    lab.crash_host("c")
    started = time.monotonic()
    lab.start_agent("c", resync=2.0)
    until(lambda: netns.exists(lab.machine_ns(c1["id"])))
    until(lambda: world.ping("a1", c1))
    until(lambda: c1["address"] in world.names(c1))
    return time.monotonic() - started


def veth_deleted(world: World, args: argparse.Namespace) -> float:
    """``c1``'s veth deleted by hand on host ``c``: repaired in its namespace at the next
    resync (every 2 s here), ``a1`` reaches it again."""
    c1 = world.m["c1"]
    started = time.monotonic()
    netns.run(world.lab.host_ns("c"), ["ip", "link", "del", machine_ifname(c1["id"])])
    until(lambda: world.ping("a1", c1))
    return time.monotonic() - started


FAULTS: dict[str, Callable[[World, argparse.Namespace], float]] = {
    "control plane down": control_plane_down,
    "agent killed mid-batch": agent_killed_mid_batch,
    "cable pulled": cable_pulled,
    "address moved": address_moved,
    "host rebooted": host_rebooted,
    "veth deleted by hand": veth_deleted,
}


def bring_up(root: Path) -> World:
    lab = Lab(root)
    lab.up(
        [HostSpec("a", "fra", gateway=True), HostSpec("b", "fra"), HostSpec("c", "ams")],
        resync=2.0,
    )
    world = World(lab, lab.api())
    world.api.post("/v1/orgs", json={"name": "alpha"}).raise_for_status()
    world.api.post("/v1/orgs/alpha/apps", json={"name": "web"}).raise_for_status()
    for label in ("a1", "b1", "c1"):
        world.m[label] = world.create(label[0])
    for machine in world.m.values():
        lab.wait_wired(machine, timeout=30)
    lab.wait_settled(timeout=30)
    for src, dst in (("a1", "b1"), ("a1", "c1"), ("b1", "c1")):
        until(lambda s=src, d=dst: world.ping(s, world.m[d]), 30)
    return world


def measure(world: World, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for rnd in range(args.rounds):
        for name, fault in FAULTS.items():
            with flows(world) as running:
                seconds = fault(world, args)
            lost = {k: f.sent - f.received for k, f in running.items()}
            sent = {k: f.sent for k, f in running.items()}
            rows.append({"fault": name, "round": rnd, "recovery_s": seconds, "lost": lost})
            rows[-1]["sent"] = sent
            print(f"{name}, round {rnd + 1}: recovered in {seconds:.2f} s, lost {lost}", flush=True)
    return rows


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "| fault | recovery, median (min-max) | lost a1->b1 | lost a1->c1 | rounds |",
        "|---|---|---|---|---|",
    ]
    for name in FAULTS:
        mine = [r for r in rows if r["fault"] == name]
        times = [r["recovery_s"] for r in mine]
        lost_b = [r["lost"]["a1->b1"] for r in mine]
        lost_c = [r["lost"]["a1->c1"] for r in mine]
        lines.append(
            f"| {name} | {statistics.median(times):.2f} s ({min(times):.2f}-{max(times):.2f}) "
            f"| {', '.join(map(str, lost_b))} | {', '.join(map(str, lost_c))} | {len(mine)} |"
        )
    lines.append("")
    lines.append(
        f"Flows at 20 packets/s; control plane down {args.down:g} s, cable out {args.cut:g} s "
        "(the a1->b1 loss of 'cable pulled' includes the cut itself)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    info = sysinfo.machine()
    with tempfile.TemporaryDirectory(prefix="sixpn-bench-faults-") as tmp:
        world = bring_up(Path(tmp) / "lab")
        try:
            rows = measure(world, args)
        finally:
            world.api.close()
            world.lab.down()
    table = report(rows, args)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"faults-{stamp}"
    header = f"# Faults, {stamp}\n\nMachine: {json.dumps(info)}\n\n"
    out.with_suffix(".md").write_text(header + table + "\n")
    record = {"stamp": stamp, "machine": info, "args": vars(args) | {"out": str(args.out)}}
    out.with_suffix(".json").write_text(json.dumps(record | {"rows": rows}, indent=1) + "\n")
    print(f"report: {out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
