"""A machine's wiring cut short, or broken by hand, against a real kernel (issue 17).

- A wiring or an unwiring killed (SIGKILL, no cleanup) just after any one of its changes to
  the kernel or to ``/etc/netns``: the next reconcile removes what it left at once if the
  machine is no longer wanted (no link, no namespace, no files), and completes it otherwise.
- A machine whose veth, address or route was deleted by hand is repaired inside the namespace
  it has: same namespace (inode), the process running there keeps running and answers at the
  machine's address again. A namespace the orchestrator made is never deleted.

The kill points are found by counting, in the process that wires, the calls that change
something (netlink requests that add, set, delete or replace; the naming and the removal of a
namespace; file and directory writes under ``/etc/netns``); the process kills itself after
the chosen one returns, so each case is the exact state an agent killed at that point leaves
behind. (Naming and removing a namespace are counted as one change each: between their two
system calls an empty mount point can be left, as with ``ip netns add``; links.py says so.)
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import os
import pickle
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from sixpn.agent.linux import _sys, links
from sixpn.agent.linux.host import LinuxHost
from sixpn.core import addressing
from sixpn.core.hoststate import HostState, MachineLink, wg_ifname
from sixpn.lab import netns
from tests.netns.test_linux_adapters import (
    NET_A,
    ROOT,
    Lab,
    call,
    converge,
    desired_for,
    enter,
    inside,
    links_in,
    ping,
    sh,
)
from tests.netns.test_linux_adapters import lab as lab  # the fixture

pytestmark = pytest.mark.netns

CHANGES = frozenset({"add", "set", "del", "replace"})
PORT = 7001


# -- killing a wiring at a chosen change (runs in the driver, inside the host namespace) -------


def cut_short(step: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Run ``fn(*args, **kwargs)`` in this process, killed with SIGKILL just after its
    ``step``-th change (0: never); return how many changes it made."""
    made = 0

    def counted(original: Callable[..., Any], changes: Callable[[tuple[Any, ...]], bool]) -> Any:
        def wrapper(*a: Any, **kw: Any) -> Any:
            nonlocal made
            result = original(*a, **kw)
            if changes(a):
                made += 1
                if made == step:
                    os.kill(os.getpid(), signal.SIGKILL)
            return result

        return wrapper

    for name in ("link", "addr", "route", "neigh"):  # ipr.<name>(command, ...)
        # pyroute2 serves these through IPRoute.__getattr__; a class attribute comes first
        request = functools.partial(_request, name)
        setattr(IPRoute, name, counted(request, lambda a: len(a) > 1 and a[1] in CHANGES))
    for module, name in ((_sys, "name_netns"), (pr_netns, "create"), (pr_netns, "remove")):
        if hasattr(module, name):  # (pr_netns.create: how namespaces were made before)
            setattr(module, name, counted(getattr(module, name), lambda a: True))
    for name in ("mkdir", "replace", "unlink", "rmdir"):
        setattr(Path, name, counted(getattr(Path, name), lambda a: True))
    fn(*args, **kwargs)
    return made


def _request(name: str, ipr: IPRoute, *args: Any, **kwargs: Any) -> Any:
    return IPRoute.__getattr__(ipr, name)(*args, **kwargs)


def run_cut_short(ns: str, step: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """:func:`cut_short` in a process inside host namespace ``ns``: the number of changes if
    it finished, -1 if it was killed."""
    calls = [(cut_short, (step, fn, *args), kwargs)]
    done = subprocess.run(
        [*enter(ns), sys.executable, "-m", "tests.netns.test_linux_adapters"],
        input=base64.b64encode(pickle.dumps(calls)),
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    if done.returncode == -signal.SIGKILL:
        return -1
    assert done.returncode == 0, done.stderr.decode()
    ((status, value),) = pickle.loads(base64.b64decode(done.stdout))
    assert status == "ok", value
    return int(value)


def killed(outcome: int, step: int) -> bool:
    """Whether a run was killed at ``step``, or made fewer changes than that: a namespace
    removed takes its veth with it, asynchronously, so the link may already be gone when the
    unwiring comes to delete it."""
    return outcome == -1 or 0 <= outcome < step


# -- what an operator would look at ------------------------------------------------------------


def leftovers(h: str, m: MachineLink) -> list[str]:
    """What is left of ``m`` on host namespace ``h``: links, its namespace, its files."""
    suffix = m.host_ifname[len("sxm") :]
    found = [name for name in links_in(h) if name.endswith(suffix)]
    if netns.exists(m.netns):
        found.append(f"namespace {m.netns}")
    if Path(f"/etc/netns/{m.netns}").exists():
        found.append(f"/etc/netns/{m.netns}")
    return found


def host_with_one_machine(lab: Lab) -> tuple[str, LinuxHost, int, MachineLink]:
    h = lab.host_ns()
    host_id = 0x100 + secrets.randbits(20)
    host = lab.hosts[h] = LinuxHost(wg_ifname(host_id), lab.tmp / "unused.key", "wireguard-go")
    return h, host, host_id, lab.machine(NET_A, host_id, 0x10001)


NETS = {addressing.network_prefix(NET_A)}


def converged(h: str, host: LinuxHost, desired: HostState) -> list[Any]:
    ((ops, after, again),) = inside(h, call(converge, host, desired))
    assert after == desired
    assert again == []
    return list(ops)


# -- a wiring cut short ------------------------------------------------------------------------


def test_a_wiring_cut_short_anywhere_is_removed_at_once_or_completed(lab: Lab) -> None:
    h, host, host_id, stays = host_with_one_machine(lab)
    base = desired_for(None, [stays], NETS)
    converged(h, host, base)
    probe = lab.machine(NET_A, host_id, 0x10002)
    total = run_cut_short(h, 0, links.wire_machine, probe, create_netns=True)
    assert total >= 10  # the pair, its record, the name, the links up, addresses, files...
    converged(h, host, base)  # (the probe, complete, is unwired as any machine no longer wanted)
    assert leftovers(h, probe) == []

    # Killed after each change in turn, then no longer wanted: nothing of it is left.
    cut = [lab.machine(NET_A, host_id, 0x10010 + step) for step in range(1, total + 1)]
    for step, m in enumerate(cut, start=1):
        assert killed(run_cut_short(h, step, links.wire_machine, m, create_netns=True), step)
    assert [m for m in cut if leftovers(h, m)]  # (so the check below is not an empty one)
    converged(h, host, base)
    assert {m.machine_id: leftovers(h, m) for m in cut} == {m.machine_id: [] for m in cut}

    # Killed after each change in turn, still wanted: completed, and it answers.
    again = [lab.machine(NET_A, host_id, 0x10040 + step) for step in range(1, total + 1)]
    for step, m in enumerate(again, start=1):
        assert killed(run_cut_short(h, step, links.wire_machine, m, create_netns=True), step)
    converged(h, host, desired_for(None, [stays, *again], NETS))
    assert [m.machine_id for m in again if not ping(lab, stays.netns, m.address)] == []
    converged(h, host, base)
    assert {m.machine_id: leftovers(h, m) for m in again} == {m.machine_id: [] for m in again}


def test_a_wiring_into_an_orchestrators_namespace_cut_short_leaves_it_as_it_was(
    lab: Lab,
) -> None:
    """Cut short right after the pair is made, before its record: a stray link, removed; the
    namespace, not the agent's, is never removed."""
    h, host, host_id, stays = host_with_one_machine(lab)
    base = desired_for(None, [stays], NETS)
    converged(h, host, base)

    def orchestrated(field: int) -> MachineLink:
        name = netns.unique_name("orch")
        netns.create(name)
        lab.machine_ns.append(name)
        return dataclasses.replace(lab.machine(NET_A, host_id, field), netns=name)

    probe = orchestrated(0x10002)
    total = run_cut_short(h, 0, links.wire_machine, probe, create_netns=True)
    cut = [orchestrated(0x10010 + step) for step in range(1, total + 1)]
    for step, m in enumerate(cut, start=1):
        assert killed(run_cut_short(h, step, links.wire_machine, m, create_netns=True), step)
    converged(h, host, base)
    for m in [probe, *cut]:
        assert leftovers(h, m) == [f"namespace {m.netns}"], m
        assert links_in(m.netns) == ["lo"], m


def test_an_unwiring_cut_short_anywhere_is_finished_by_the_next_reconcile(lab: Lab) -> None:
    h, host, host_id, stays = host_with_one_machine(lab)
    base = desired_for(None, [stays], NETS)
    probe = lab.machine(NET_A, host_id, 0x10002)
    converged(h, host, desired_for(None, [stays, probe], NETS))
    total = run_cut_short(h, 0, links.unwire_machine, probe, delete_netns=True)
    assert total >= 4  # two files, the directory, the namespace, the link
    assert leftovers(h, probe) == []

    cut = [lab.machine(NET_A, host_id, 0x10010 + step) for step in range(1, total + 1)]
    converged(h, host, desired_for(None, [stays, *cut], NETS))
    for step, m in enumerate(cut, start=1):
        assert killed(run_cut_short(h, step, links.unwire_machine, m, delete_netns=True), step)
    converged(h, host, base)
    assert {m.machine_id: leftovers(h, m) for m in cut} == {m.machine_id: [] for m in cut}


# -- a machine broken by hand ------------------------------------------------------------------

SERVER = """
import os, socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", {port}))
s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(str(os.getpid()).encode())
    c.close()
"""


@dataclasses.dataclass
class Server:
    """A process of the machine's own: started in its namespace, answers with its PID."""

    proc: subprocess.Popen[str]
    netns: str

    @classmethod
    def start(cls, ns: str) -> Server:
        proc = subprocess.Popen(
            [*netns.enter_argv(ns, [sys.executable, "-c", SERVER.format(port=PORT)])],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        server = cls(proc, ns)
        if proc.stdout is None or proc.stdout.readline() != "ready\n":
            server.stop()
            raise AssertionError(f"the server in {ns} did not start")
        return server

    def netns_inode(self) -> int:
        return os.stat(f"/proc/{self.proc.pid}/ns/net").st_ino

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)  # by the PID this test started
        self.proc.wait(timeout=10)


def answer(lab: Lab, src_ns: str, dst: MachineLink, timeout: float = 3.0) -> str:
    """What the process listening at ``dst``'s address says, asked from ``src_ns``."""
    s = lab.sock(src_ns, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((str(dst.address), PORT))
        return s.recv(64).decode()
    except OSError as exc:
        return f"no answer: {exc}"


def inode(ns: str) -> int:
    return os.stat(f"/var/run/netns/{ns}").st_ino


# What an operator might delete or change by hand: (host namespace, machine) -> ``ip`` argv.
BREAKAGES: dict[str, Callable[[str, MachineLink], list[str]]] = {
    "the veth deleted": lambda h, m: ["ip", "-n", h, "link", "del", m.host_ifname],
    "the machine's address deleted": lambda h, m: [
        *("ip", "-n", m.netns, "-6", "addr", "del", f"{m.address}/112", "dev", "eth0")
    ],
    "the default route deleted": lambda h, m: ["ip", "-n", m.netns, "-6", "route", "del", "::/0"],
    "the machine side down": lambda h, m: ["ip", "-n", m.netns, "link", "set", "eth0", "down"],
}


def test_a_machine_broken_by_hand_is_repaired_in_its_namespace_and_its_process_lives_on(
    lab: Lab,
) -> None:
    h, host, host_id, own = host_with_one_machine(lab)  # in sixpn-m-<id>, made by the agent
    client = lab.machine(NET_A, host_id, 0x10002)
    orchestrator_ns = netns.unique_name("orch")  # made by someone else, before the agent
    netns.create(orchestrator_ns)
    lab.machine_ns.append(orchestrator_ns)
    theirs = dataclasses.replace(lab.machine(NET_A, host_id, 0x10003), netns=orchestrator_ns)
    desired = desired_for(None, [own, client, theirs], NETS)
    converged(h, host, desired)

    servers: list[Server] = []
    try:
        servers += [Server.start(m.netns) for m in (own, theirs)]
        before = {m.netns: inode(m.netns) for m in (own, theirs)}
        for s in servers:
            assert s.netns_inode() == before[s.netns]
        pids = [str(s.proc.pid) for s in servers]
        assert [answer(lab, client.netns, m) for m in (own, theirs)] == pids

        for what, breaks in BREAKAGES.items():
            for m in (own, theirs):
                sh(*breaks(h, m))
            assert answer(lab, client.netns, own, 0.5).startswith("no answer"), what
            converged(h, host, desired)
            assert {m.netns: inode(m.netns) for m in (own, theirs)} == before, what
            assert [s.proc.poll() for s in servers] == [None, None], what
            assert [s.netns_inode() for s in servers] == [before[own.netns], before[theirs.netns]]
            assert [answer(lab, client.netns, m) for m in (own, theirs)] == pids, what
            assert ping(lab, client.netns, own.address), what

        # No longer wanted: the agent's namespace goes, the orchestrator's stays (its process
        # too), and nothing of the wiring is left in it.
        converged(h, host, desired_for(None, [client], NETS))
        assert not netns.exists(own.netns)
        assert inode(orchestrator_ns) == before[orchestrator_ns]
        assert servers[1].proc.poll() is None
        assert links_in(orchestrator_ns) == ["lo"]
        assert not Path(f"/etc/netns/{orchestrator_ns}").exists()
        assert leftovers(h, own) == []
        assert [n for n in links_in(h) if n.endswith(theirs.host_ifname[3:])] == []
    finally:
        for s in servers:
            s.stop()


def test_a_machine_whose_namespace_was_deleted_by_hand_is_wired_again_in_one_reconcile(
    lab: Lab,
) -> None:
    """``ip netns del`` while a process still holds the namespace: the veth lives on in it,
    recording the machine; the agent makes a new namespace (the name is all it can find) and
    one reconcile reaches the desired state, routes included."""
    h, host, host_id, own = host_with_one_machine(lab)
    client = lab.machine(NET_A, host_id, 0x10002)
    desired = desired_for(None, [own, client], NETS)
    converged(h, host, desired)
    server = Server.start(own.netns)
    try:
        before = inode(own.netns)
        sh("ip", "netns", "del", own.netns)
        assert own.host_ifname in links_in(h)  # held by the process, with the veth's far end
        converged(h, host, desired)
        assert inode(own.netns) != before
        assert ping(lab, client.netns, own.address)
    finally:
        server.stop()


def test_an_empty_mount_point_left_by_a_naming_cut_short_is_named_on(lab: Lab) -> None:
    """What a naming killed between its two system calls leaves (as ``ip netns add`` can):
    the machine is wired on it, and the namespace answers to its name."""
    h, host, _, own = host_with_one_machine(lab)
    Path(f"/var/run/netns/{own.netns}").touch()
    converged(h, host, desired_for(None, [own], NETS))
    assert f"{own.address}/112" in sh("ip", "-n", own.netns, "-6", "addr", "show", "dev", "eth0")
    converged(h, host, desired_for(None, [], NETS))
    assert leftovers(h, own) == []
