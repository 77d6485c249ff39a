"""The fabric side: a sixpn lab (``sixpn.lab.fabric.Lab``), its machines, and propagation.

Throughput pair: hosts ``a`` (fra) and ``b`` (ams), org ``bench``, app ``iperf`` on the default
network, one machine per host; iperf3's client runs in a's machine, its server in b's. A packet
crosses: machine veth (MTU 1420) -> host a (forwarding, nftables ``inet sixpn``) -> host a's
wireguard-go -> host a's ``eth0`` -> the underlay's bridge -> host b's ``eth0`` -> host b's
wireguard-go -> host b (forwarding, nftables) -> machine veth. The wireguard-go daemons are the
agents' (found by the tun they hold); the agents keep running and are CPU-accounted too.

Propagation: a lab of N hosts, one probe machine per host; per sample a machine is created (on
the hosts in turn), then stopped, then destroyed. From the POST's return: the first TCP contact
from the probe machine of the next host, and per host the first DNS answer (from that host's
probe machine, to its ``fdaa::3``) that lists the new machine for ``<id>.vm.<app>.internal``;
after the stop POST, per host the first answer of ``<app>.internal`` without it. The probes run
in a helper process (``datapath_probe``); all times are ``time.monotonic()``.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datapath_measure import (
    BenchError,
    Setup,
    prioritize,
    shielded,
    tun_owner,
    wait_for,
)
from datapath_probe import Prober

from sixpn.lab import netns
from sixpn.lab.fabric import HostSpec, Lab

ORG = "bench"
TP_APP = "iperf"
PROP_APP = "prop"
REGIONS = ("fra", "ams", "fra", "ams", "fra", "ams", "fra", "ams", "fra")

Machine = dict[str, Any]


@dataclass
class LabHandle:
    lab: Lab
    api: Any  # httpx.Client
    hosts: list[str]


@contextlib.contextmanager
def lab(root: Path, hosts: int, resync: float) -> Iterator[LabHandle]:
    """A lab of ``hosts`` hosts (a, b, c, ...; fra and ams alternating), org ``bench``;
    ``down()`` on the way out, whatever happens."""
    names = [chr(ord("a") + i) for i in range(hosts)]
    the_lab = Lab(root)
    try:
        the_lab.up([HostSpec(n, REGIONS[i]) for i, n in enumerate(names)], resync=resync)
        api = the_lab.api()
        try:
            _ok(api.post("/v1/orgs", json={"name": ORG}), "creating org")
            yield LabHandle(the_lab, api, names)
        finally:
            api.close()
    finally:
        with shielded():
            the_lab.down()


def _ok(response: Any, what: str) -> Any:
    if response.status_code not in (200, 201):
        raise BenchError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
    return response.json()


def create_app(h: LabHandle, app: str) -> None:
    _ok(h.api.post(f"/v1/orgs/{ORG}/apps", json={"name": app}), f"creating app {app}")


def create_machine(h: LabHandle, app: str, host: str) -> Machine:
    return dict(
        _ok(
            h.api.post(f"/v1/orgs/{ORG}/machines", json={"app": app, "host": host}),
            f"creating a machine on {host}",
        )
    )


def reachable(h: LabHandle, src: Machine, dst: Machine, timeout: float = 15) -> None:
    def ping() -> bool:
        cmd = ["ping", "-6", "-c", "1", "-W", "1", dst["address"]]
        return h.lab.exec(src, cmd).returncode == 0

    wait_for(ping, timeout, f"{src['id']} -> {dst['id']} through the fabric", step=0.1)


@contextlib.contextmanager
def throughput_pair(root: Path, resync: float) -> Iterator[tuple[Setup, Lab]]:
    """The fabric's setup, and its lab (whose underlay the anchor joins)."""
    with lab(root, 2, resync) as h:
        create_app(h, TP_APP)
        client = create_machine(h, TP_APP, "a")
        server = create_machine(h, TP_APP, "b")
        for m in (client, server):
            h.lab.wait_wired(m, timeout=30)
        reachable(h, client, server)
        reachable(h, server, client)
        assert h.lab.state is not None
        hosts = h.lab.state.hosts
        wg = {
            side: tun_owner(hosts[name]["ns"], hosts[name]["wg_ifname"])
            for side, name in (("client", "a"), ("server", "b"))
        }
        agents = [pid for role, pid in h.lab.state.pids.items() if role.startswith("agent-")]
        setup = Setup(
            name="fabric",
            client_ns=h.lab.machine_ns(client["id"]),
            server_ns=h.lab.machine_ns(server["id"]),
            server_addr=server["address"],
            wg_pids=wg,
            other_pids={"agents + control plane": [*agents, h.lab.state.pids["server"]]},
        )
        yield setup, h.lab


@dataclass
class PropSample:
    """One create (then stop, then destroy) of a machine; times in seconds."""

    host: str
    post_s: float  # the create POST's own duration
    data_path_s: float | None  # POST returned -> first connect through (None: timed out)
    dns_s: dict[str, float | None]  # per host: POST returned -> <id>.vm.<app> answers there
    stop_post_s: float
    stop_dns_s: dict[str, float | None]  # stop POST returned -> <app> no longer lists it

    def dns_all(self) -> float | None:
        values = list(self.dns_s.values())
        return None if None in values else max(v for v in values if v is not None)

    def stop_dns_all(self) -> float | None:
        values = list(self.stop_dns_s.values())
        return None if None in values else max(v for v in values if v is not None)


class Propagation:
    """A lab of N hosts with one probe machine per host, and the timed create/stop/destroy.

    The probes run in a helper process (``datapath_probe``) at ``nice - 5``: the observer must
    not queue behind the system it observes."""

    def __init__(self, h: LabHandle, timeout: float, nice: int, log: Path) -> None:
        self.h = h
        self.timeout = timeout
        self.nice = nice
        self.log = log
        self.probes: dict[str, Machine] = {}
        self.ns: dict[str, str] = {}
        self.prober: Prober | None = None

    def __enter__(self) -> Propagation:
        assert self.h.lab.state is not None
        state = self.h.lab.state
        # The system under test at the same priority as the data path in the throughput runs:
        # the control plane, the agents (their nft, wg and ip children inherit it) and the
        # wireguard-go daemons.
        for pid in state.pids.values():
            prioritize(pid, self.nice)
        for spec in state.hosts.values():
            prioritize(tun_owner(spec["ns"], spec["wg_ifname"]), self.nice)
        create_app(self.h, PROP_APP)
        for host in self.h.hosts:
            self.probes[host] = create_machine(self.h, PROP_APP, host)
        for m in self.probes.values():
            self.h.lab.wait_wired(m, timeout=30)
        first = self.probes[self.h.hosts[0]]
        for m in self.probes.values():
            if m is not first:
                reachable(self.h, first, m)
        self.ns = {host: self.h.lab.machine_ns(m["id"]) for host, m in self.probes.items()}
        self.prober = Prober(max(-20, self.nice - 5) if self.nice else 0, self.log)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.prober is not None:
            with shielded():
                self.prober.close()

    def _dns_all(self, name: str, address: str, want: str, deadline: float) -> dict[str, int]:
        assert self.prober is not None
        return {
            host: self.prober.submit(
                probe="dns", ns=ns, name=name, address=address, want=want, deadline=deadline
            )
            for host, ns in self.ns.items()
        }

    def once(self, i: int) -> PropSample:
        assert self.prober is not None
        hosts = self.h.hosts
        target = hosts[i % len(hosts)]
        prober = hosts[(i + 1) % len(hosts)]
        api = self.h.api
        t0 = time.monotonic()
        m = create_machine(self.h, PROP_APP, target)
        t1 = time.monotonic()
        deadline = t1 + self.timeout
        dp = self.prober.submit(
            probe="tcp", ns=self.ns[prober], address=m["address"], deadline=deadline
        )
        vm = f"{m['id']}.vm.{PROP_APP}.internal"
        dns_ids = self._dns_all(vm, m["address"], "has", deadline)
        dp_t = self.prober.result(dp)
        dns_t = {host: self.prober.result(n) for host, n in dns_ids.items()}
        # stop: <app>.internal must stop listing it everywhere
        s0 = time.monotonic()
        _ok(api.post(f"/v1/orgs/{ORG}/machines/{m['id']}/stop"), "stopping a machine")
        s1 = time.monotonic()
        stop_ids = self._dns_all(f"{PROP_APP}.internal", m["address"], "lacks", s1 + self.timeout)
        stop_t = {host: self.prober.result(n) for host, n in stop_ids.items()}
        _ok(api.delete(f"/v1/orgs/{ORG}/machines/{m['id']}"), "destroying a machine")
        ns = self.h.lab.machine_ns(m["id"])
        wait_for(lambda: not netns.exists(ns), 15, f"machine {m['id']} unwired")
        return PropSample(
            host=target,
            post_s=t1 - t0,
            data_path_s=None if dp_t is None else dp_t - t1,
            dns_s={h: None if t is None else t - t1 for h, t in dns_t.items()},
            stop_post_s=s1 - s0,
            stop_dns_s={h: None if t is None else t - s1 for h, t in stop_t.items()},
        )


def unique_root(base: Path, role: str) -> Path:
    return base / f"{role}-{secrets.token_hex(2)}"
