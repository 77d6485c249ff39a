"""A multi-host fabric on one machine: an underlay, hosts as namespaces, one agent process each.

Shape: one underlay namespace holding a bridge; each host is a namespace joined to the bridge
by a veth pair (``eth0``, an address in 192.0.2.0/24, the documentation range, so that nothing
outside the lab is ever addressed); the control plane runs on this machine's root namespace on
a Unix socket, which every namespace reaches through the file system; each host's agent runs
inside its namespace (``nsenter --net``, see ``netns.enter_argv``) with its own data directory,
and wires its machines into namespaces of their own.

The control plane's store: SQLite (``server.db``, one ``sixpn server`` on ``api.sock``), or
with ``store="etcd"`` a 3-member etcd cluster (``etcd.py``) under 2 replicas, each on a socket
of its own (``api.sock``, ``api2.sock``); agents and the lab's CLI get both URLs
(``control_url``, "unix:A,unix:B") and fail over between them.

Everything the lab makes is written down in ``<root>/lab.json`` as it is made, so that ``down``
(in this process or another: ``sixpn lab down``) removes exactly that, also after a crash, and
running it twice is fine. Processes are stopped by PID only.

The module's public functions (``ip_in``, ``sysctl_in``, ``run_checked``, ``spawn_logged``,
``pid_runs``, ``stop_pid``, ``kill_namespace_processes``, ...) are the tools the lab's other
parts (``laptop``, ``vpc``, ``postgres``) build with, so that they all act the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sixpn import waiting
from sixpn.client.wire import UNIX_TLS_NAME
from sixpn.control import tlsfiles
from sixpn.core.hoststate import NFT_TABLE
from sixpn.lab import netns
from sixpn.lab.process import alive, kill_namespace_processes, log_tail, pid_runs, stop_pid
from sixpn.model.errors import SixpnError

UNDERLAY_NET = "192.0.2"
WG_PORT = 51820
METRICS_PORT = 9109
BRIDGE_NF = ("iptables", "ip6tables", "arptables")


class LabError(SixpnError):
    """The lab could not do what was asked (a step failed, it is already up, ...)."""


class LabTimeout(LabError, TimeoutError):
    """A wait of the lab's ran out (also a TimeoutError, for callers that wait themselves)."""


@dataclass(frozen=True)
class HostSpec:
    name: str
    region: str
    gateway: bool = False


@dataclass
class LabState:
    lab_id: str
    admin_token: str
    join_token: str
    namespaces: list[str] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)  # role -> PID
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    laptops: dict[str, dict[str, Any]] = field(default_factory=dict)  # peer name -> its laptop
    vpcs: dict[str, dict[str, Any]] = field(default_factory=dict)  # peer name -> its VPC (vpc.py)
    store: str = "sqlite"  # or "etcd"
    etcd: dict[str, Any] = field(default_factory=dict)  # the etcd cluster (etcd.py)
    ephemeral_idle: float | None = None  # the servers' --ephemeral-idle, for restarts
    tls: bool = False  # the API in HTTPS with the lab's own CA (ca.pem; see Lab.up)


class Lab:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_file = root / "lab.json"
        self.state: LabState | None = None
        if self.state_file.exists():
            self.state = LabState(**json.loads(self.state_file.read_text()))

    # -- bookkeeping ----------------------------------------------------------------------------

    def _save(self) -> None:
        assert self.state is not None
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.state), indent=2))
        os.replace(tmp, self.state_file)

    def save(self) -> None:
        """Write lab.json now: for a part of the lab (``vpc``) that records in the state what
        it is about to make, before making it."""
        self._save()

    # -- the control plane: one replica on SQLite, two on etcd --------------------------------

    @property
    def replicas(self) -> int:
        return 2 if self.state is not None and self.state.store == "etcd" else 1

    def replica_socket(self, i: int) -> Path:
        """Replica ``i``'s (from 0) Unix socket: ``api.sock``, ``api2.sock``."""
        return self.root / ("api.sock" if i == 0 else f"api{i + 1}.sock")

    @staticmethod
    def replica_role(i: int) -> str:
        """Replica ``i``'s name in ``pids`` and its log's: ``server``, ``server2``."""
        return "server" if i == 0 else f"server{i + 1}"

    @property
    def socket(self) -> Path:
        return self.replica_socket(0)

    @property
    def control_url(self) -> str:
        """Every replica's URL, comma-separated (``SIXPN_API``, the agents' ``--control``)."""
        scheme = "https+unix" if self.state is not None and self.state.tls else "unix"
        return ",".join(f"{scheme}:{self.replica_socket(i)}" for i in range(self.replicas))

    @property
    def ca_file(self) -> Path:
        """The lab's own CA, which signed its API's certificate (``SIXPN_CA``, ``--ca``)."""
        return self.root / "ca.pem"

    def _make_tls_files(self) -> None:
        """A CA of the lab's own and a certificate from it for the API (the name a client of
        an ``https+unix:`` socket checks: ``sixpn``); the key is written 0600."""
        assert self.state is not None
        ca = tlsfiles.make_ca(f"sixpn lab {self.state.lab_id} CA")  # (a CN holds 64 characters)
        tlsfiles.issue_server_cert(ca, [UNIX_TLS_NAME]).write(
            self.root / "api.pem", self.root / "api.key"
        )
        self.ca_file.write_bytes(ca.cert_pem())

    def api(self, replica: int | None = None) -> httpx.Client:
        """An admin client of replica ``replica``; by default the first whose process runs."""
        assert self.state is not None
        if replica is None:
            running = [i for i in range(self.replicas) if self.replica_alive(i)]
            replica = running[0] if running else 0
        sock = str(self.replica_socket(replica))
        if self.state.tls:
            verify = ssl.create_default_context(cafile=str(self.ca_file))
            transport = httpx.HTTPTransport(uds=sock, verify=verify)
            base_url = f"https://{UNIX_TLS_NAME}"
        else:
            transport, base_url = httpx.HTTPTransport(uds=sock), "http://sixpn"
        return httpx.Client(
            base_url=base_url,
            transport=transport,
            headers={"Authorization": f"Bearer {self.state.admin_token}"},
            timeout=30,
        )

    def replica_alive(self, i: int) -> bool:
        assert self.state is not None
        pid = self.state.pids.get(self.replica_role(i))
        return pid is not None and alive(pid)

    def replica_healthy(self, i: int) -> bool:
        """Replica ``i`` answers ``/healthz`` (which reads the store's revision)."""
        try:
            with self.api(i) as api:
                return api.get("/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start_replica(self, i: int) -> None:
        """Start replica ``i`` (again) over the lab's store; wait until it answers."""
        assert self.state is not None
        role, sock = self.replica_role(i), self.replica_socket(i)
        if self.replica_alive(i):
            raise LabError(f"sixpn server {role} runs already")
        if self.state.store == "etcd":
            from sixpn.lab import etcd

            store = ["--etcd", ",".join(etcd.client_urls(self))]
        else:
            store = ["--db", str(self.root / "server.db")]
        idle = self.state.ephemeral_idle
        argv = [sys.executable, "-m", "sixpn", "server", *store, "--listen", f"unix:{sock}"]
        argv += ["--admin-token", self.state.admin_token, "--join-token", self.state.join_token]
        argv += ["--heartbeat", "2", *([] if idle is None else ["--ephemeral-idle", str(idle)])]
        if self.state.tls:
            argv += [
                "--tls-cert",
                str(self.root / "api.pem"),
                "--tls-key",
                str(self.root / "api.key"),
            ]
        self._spawn(role, argv)

        def healthy() -> bool:
            if not self.replica_alive(i):
                raise LabError(f"sixpn server {role} exited: {log_tail(self.root / f'{role}.log')}")
            return sock.exists() and self.replica_healthy(i)

        wait_until(healthy, 30, f"the control plane ({role} on unix:{sock})")

    def stop_replica(self, i: int, sig: int = signal.SIGTERM) -> None:
        """Send replica ``i`` ``sig`` by PID and wait until it is gone (SIGKILL: a crash)."""
        assert self.state is not None
        pid = self.state.pids.pop(self.replica_role(i), None)
        self._save()
        if pid is not None and pid_runs(pid, f"--listen unix:{self.replica_socket(i)}"):
            stop_pid(pid, sig)

    def start_etcd_member(self, i: int) -> None:
        """Start etcd member ``i`` (from 0) again: same name, ports and data; it rejoins."""
        from sixpn.lab import etcd

        etcd.start_member(self, i)

    def stop_etcd_member(self, i: int, sig: int = signal.SIGTERM) -> None:
        """Send etcd member ``i`` ``sig`` by PID and wait until it is gone."""
        from sixpn.lab import etcd

        etcd.stop_member(self, i, sig)

    def host_ns(self, name: str) -> str:
        assert self.state is not None
        return str(self.state.hosts[name]["ns"])

    # -- up -------------------------------------------------------------------------------------

    def up(
        self,
        hosts: list[HostSpec],
        *,
        resync: float = 5.0,
        progress: Callable[[str], None] | None = None,
        ephemeral_idle: float | None = None,
        store: str = "sqlite",
        tls: bool = True,
    ) -> None:
        """Build the underlay, the hosts, the control plane and one agent per host; on any
        failure or interruption, remove what was made (``down``) and re-raise.
        ``ephemeral_idle``: the server's ``--ephemeral-idle`` (default: the server's).
        ``store``: ``sqlite`` (one server) or ``etcd`` (3 etcd members, 2 server replicas).
        ``tls``: the API in HTTPS on its Unix sockets, with a CA of the lab's own (``ca.pem``)
        that the agents and ``cli_env`` are given; off only for a benchmark that speaks raw
        HTTP to the socket."""
        say = progress or (lambda _: None)
        if store not in ("sqlite", "etcd"):
            raise LabError(f"store {store!r}: the lab runs on 'sqlite' or 'etcd'")
        if store == "etcd":
            from sixpn.lab import etcd

            etcd.binary()  # missing: say so before anything is built
        if self.state is not None:
            raise LabError(f"a lab is already up in {self.root} (sixpn lab down first)")
        if self.root.exists() and any(self.root.iterdir()):
            raise LabError(f"{self.root} is not empty: the lab needs a directory of its own")
        self.root.mkdir(parents=True, exist_ok=True)
        lab_id = secrets.token_hex(2)
        self.state = LabState(
            lab_id,
            "sixpn_lab_" + secrets.token_hex(16),
            "join_" + secrets.token_hex(16),
            store=store,
            ephemeral_idle=ephemeral_idle,
            tls=tls,
        )
        self._save()
        try:
            if tls:
                self._make_tls_files()
            self._underlay(hosts, say)
            self._control_plane(say)
            for i, spec in enumerate(hosts, start=1):
                self._agent(i, spec, resync)
                log = self.root / f"agent-{spec.name}.log"
                say(f"host {spec.name}: agent PID {self.state.pids[f'agent-{spec.name}']}, {log}")
            say(f"waiting for {len(hosts)} agents to join and apply their first state")
            self.wait_hosts_ready()
        except BaseException:
            self.down()
            raise

    def _underlay(self, hosts: list[HostSpec], say: Callable[[str], None]) -> None:
        assert self.state is not None
        under = self.underlay_ns
        self.add_namespace(under)
        # A stand-in for a network: bridged frames skip the host's IP netfilter hooks
        # (br_netfilter is built into some kernels and on in every new namespace).
        sysctl_in(under, *(f"net.bridge.bridge-nf-call-{t}=0" for t in BRIDGE_NF))
        ip_in(under, "link", "add", "br0", "type", "bridge")
        ip_in(under, "link", "set", "br0", "up")
        say(f"underlay: namespace {under}, bridge br0, {UNDERLAY_NET}.0/24")
        for i, spec in enumerate(hosts, start=1):
            ns = f"{netns.PREFIX}h{self.state.lab_id}-{spec.name}"
            self.add_namespace(ns)
            address = f"{UNDERLAY_NET}.{10 + i}"
            self.state.hosts[spec.name] = {
                "ns": ns,
                "address": address,
                "region": spec.region,
                "gateway": spec.gateway,
                "wg_ifname": f"sxw{self.state.lab_id}{i:x}",
                "data_dir": str(self.root / "hosts" / spec.name),
            }
            self._save()
            self.plug_into_underlay(ns, f"u{self.state.lab_id}{i}", address)
            role = f"{spec.region}{', gateway' if spec.gateway else ''}"
            say(f"host {spec.name} ({role}): namespace {ns}, underlay {address}")

    @property
    def underlay_ns(self) -> str:
        assert self.state is not None
        return f"{netns.PREFIX}u{self.state.lab_id}"

    def add_namespace(self, ns: str) -> None:
        """Create a namespace and write it down first, so ``down`` removes it whatever follows."""
        assert self.state is not None
        self.state.namespaces.append(ns)
        self._save()
        netns.create(ns)

    def plug_into_underlay(self, ns: str, outer: str, address: str) -> None:
        """Join ``ns`` to the underlay bridge: ``eth0`` with ``address``/24 inside it."""
        under = self.underlay_ns
        ip_in(under, "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip_in(under, "link", "set", outer, "master", "br0", "up")
        ip_in(ns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip_in(ns, "link", "set", "eth0", "up")

    # -- faults: what an operator's network does to a host -------------------------------------

    def underlay_cable(self, name: str, *, plugged: bool) -> None:
        """Pull host ``name``'s cable out of the underlay, or plug it back in: its veth's far
        end (on the bridge) goes down or up; the host's own ``eth0`` keeps its address."""
        assert self.state is not None
        i = list(self.state.hosts).index(name) + 1
        ip_in(
            self.underlay_ns, "link", "set", f"u{self.state.lab_id}{i}", "up" if plugged else "down"
        )

    def crash_host(self, name: str) -> None:
        """What a reboot of host ``name`` takes: its agent (SIGKILL), its WireGuard interface,
        the agent's nftables table and the namespaces of the machines it had wired; what it
        keeps: the data directory (``start_agent`` then rebuilds from it)."""
        assert self.state is not None
        wired = (self.status(name) or {}).get("machines", [])
        self.stop_agent(name, signal.SIGKILL)
        ns = self.host_ns(name)
        netns.run(ns, ["ip", "link", "del", self.state.hosts[name]["wg_ifname"]])
        netns.run(ns, ["nft", "delete", "table", "inet", NFT_TABLE])
        for machine_id in wired:
            netns.remove(self.machine_ns(machine_id))

    def move_host(self, name: str, address: str) -> None:
        """Give host ``name`` another underlay address (its old one removed), as a new lease
        would; lab.json records it, so that an agent started again is told its new endpoint."""
        assert self.state is not None
        h = self.state.hosts[name]
        # the old one first: a primary address removed takes its subnet's secondaries with it
        ip_in(h["ns"], "addr", "del", f"{h['address']}/24", "dev", "eth0")
        ip_in(h["ns"], "addr", "add", f"{address}/24", "dev", "eth0")
        h["address"] = address
        self._save()

    def cli_env(self) -> dict[str, str]:
        """The environment under which a ``sixpn`` command talks to this lab as its admin."""
        assert self.state is not None
        env = {"SIXPN_API": self.control_url, "SIXPN_TOKEN": self.state.admin_token}
        if self.state.tls:
            env["SIXPN_CA"] = str(self.ca_file)
        return os.environ | env

    def _spawn(self, role: str, argv: list[str]) -> None:
        assert self.state is not None
        log = open(self.root / f"{role}.log", "ab")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.state.pids[role] = proc.pid
        self._save()

    def _control_plane(self, say: Callable[[str], None]) -> None:
        """The store, then each replica once the one before answers (one at a time: the first
        installs the lab's tokens into an empty store)."""
        assert self.state is not None
        if self.state.store == "etcd":
            from sixpn.lab import etcd

            etcd.up(self, say)
            store = "etcd"
        else:
            store = f"{self.root}/server.db"
        for i in range(self.replicas):
            self.start_replica(i)
        servers = "sixpn server" if self.replicas == 1 else f"{self.replicas} sixpn server replicas"
        say(f"control plane: {servers} on {self.control_url}, store {store}")

    def agent_argv(self, name: str, resync: float = 5.0) -> list[str]:
        assert self.state is not None
        h = self.state.hosts[name]
        options = {
            "--control": self.control_url,
            "--join-token": self.state.join_token,
            "--name": name,
            "--region": h["region"],
            "--endpoint": f"{h['address']}:{WG_PORT}",
            "--data-dir": h["data_dir"],
            "--wg-ifname": h["wg_ifname"],
            "--resync": str(resync),
            "--peer-report": "1",  # a gateway's peer counters: `sixpn wireguard status` at once
            "--upstream": "127.0.0.1:9",  # nothing listens: the lab forwards no names out
            "--metrics": f"127.0.0.1:{METRICS_PORT}",  # each host's own loopback
            # an "orchestrator" may have made a machine's namespace: the agent then uses it
            "--netns-name": self.orchestrator_netns("{id}"),
        }
        if self.state.tls:
            options["--ca"] = str(self.ca_file)
        argv = [sys.executable, "-m", "sixpn", "agent"]
        argv += [part for pair in options.items() for part in pair]
        if h["gateway"]:
            argv.append("--gateway")
        return netns.enter_argv(h["ns"], argv)

    def _agent(self, i: int, spec: HostSpec, resync: float) -> None:
        self._spawn(f"agent-{spec.name}", self.agent_argv(spec.name, resync))

    def start_agent(self, name: str, resync: float = 5.0) -> None:
        self._spawn(f"agent-{name}", self.agent_argv(name, resync))

    def stop_agent(self, name: str, sig: int = signal.SIGTERM) -> None:
        assert self.state is not None
        pid = self.state.pids.pop(f"agent-{name}", None)
        self._save()
        if pid is not None:
            stop_pid(pid, sig)

    def status(self, name: str) -> dict[str, Any] | None:
        assert self.state is not None
        f = Path(self.state.hosts[name]["data_dir"]) / "status.json"
        return dict(json.loads(f.read_text())) if f.exists() else None

    def wait_hosts_ready(self, timeout: float = 60) -> None:
        assert self.state is not None
        for name in self.state.hosts:
            wait_until(lambda n=name: self.status(n) is not None, timeout, f"agent of {name}")

    def host_run(
        self, name: str, argv: list[str], timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on a host (its network namespace, like its agent), with the lab's CA
        in ``SIXPN_CA`` (``sixpn doctor`` there reaches the control plane as the agent does)."""
        assert self.state is not None
        env = os.environ | ({"SIXPN_CA": str(self.ca_file)} if self.state.tls else {})
        return subprocess.run(
            netns.enter_argv(self.host_ns(name), argv),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def sixpn_on(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        """`sixpn ARGS` on host ``name``, in its network namespace like its agent."""
        return self.host_run(name, [sys.executable, "-m", "sixpn", *args])

    # -- machines -------------------------------------------------------------------------------

    def machine_ns(self, machine_id: str) -> str:
        """The namespace a machine is wired in: the orchestrator's if it made one."""
        mine = self.orchestrator_netns(machine_id)
        return mine if netns.exists(mine) else f"{netns.PREFIX}m-{machine_id}"

    def orchestrator_netns(self, machine_id: str) -> str:
        """Where an orchestrator of this lab would put a machine (tests make it by hand)."""
        assert self.state is not None
        return f"{netns.PREFIX}o{self.state.lab_id}-{machine_id}"

    def exec(
        self, machine: dict[str, Any], argv: list[str], timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        env = ["env", f"SIXPN_PRIVATE_IP={machine['address']}"]
        return netns.run(self.machine_ns(machine["id"]), [*env, *argv], timeout=timeout)

    def wait_wired(self, machine: dict[str, Any], timeout: float = 10) -> None:
        def wired() -> bool:
            ns = self.machine_ns(machine["id"])
            if not netns.exists(ns):
                return False
            out = netns.run(ns, ["ip", "-6", "addr", "show", "dev", "eth0"]).stdout
            mine = [line for line in out.splitlines() if f"{machine['address']}/" in line]
            return bool(mine) and "tentative" not in mine[0]

        wait_until(wired, timeout, f"machine {machine['id']} wired")

    def wait_settled(self, timeout: float = 30) -> None:
        """Until every agent has applied the store as it is now (its ``status.json`` names that
        revision or a later one): what was created before this call is then wired on its host
        and routed by every other host's mesh. A revision that changed nothing of the data path
        (an agent's status report) is applied at the agent's next resync at the latest."""
        assert self.state is not None
        with self.api() as api:
            revision = int(api.get("/healthz", timeout=10).json()["revision"])

        def applied(name: str) -> bool:
            status = self.status(name) or {}
            return int(status.get("applied_revision", -1)) >= revision

        for name in self.state.hosts:
            wait_until(
                lambda n=name: applied(n), timeout, f"agent of {name} at revision {revision}"
            )

    # -- down -----------------------------------------------------------------------------------

    def down(self) -> None:
        """Remove everything recorded in lab.json; fine to run twice, or after a crash."""
        if self.state is None:
            return
        if self.state.vpcs:  # first: PostgreSQL shuts down cleanly, its data directory goes
            from sixpn.lab import vpc

            vpc.teardown(self)
        for role in [r for r in self.state.pids if r.startswith("agent-")]:
            stop_pid(self.state.pids.pop(role))
        self._save()
        machine_ids: list[str] = []
        if any(self.replica_alive(i) for i in range(self.replicas)):
            # a store without quorum answers 503 with an error object: nothing to list then
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError), self.api() as api:
                for org in api.get("/v1/orgs", timeout=5).raise_for_status().json():
                    ms = api.get(f"/v1/orgs/{org['name']}/machines?all=true", timeout=5)
                    machine_ids += [m["id"] for m in ms.raise_for_status().json()]
        for h in self.state.hosts.values():
            if netns.exists(h["ns"]) and Path(h["data_dir"], "host.json").exists():
                teardown = [sys.executable, "-m", "sixpn", "agent", "--teardown"]
                subprocess.run(
                    netns.enter_argv(h["ns"], [*teardown, "--data-dir", h["data_dir"]]),
                    capture_output=True,
                    timeout=60,
                    check=False,
                )
        for mid in machine_ids:
            ns = self.machine_ns(mid)
            if netns.exists(ns):
                kill_namespace_processes(ns)
                netns.remove(ns)
        for ns in reversed(self.state.namespaces):
            if netns.exists(ns):
                kill_namespace_processes(ns)
                netns.remove(ns)
        self.state.namespaces.clear()
        for i in range(self.replicas):  # the replicas, then the store under them
            self.stop_replica(i)
        if self.state.etcd:
            from sixpn.lab import etcd

            etcd.down(self)
        self._save()
        # Nothing of the lab stays behind: its store, the hosts' keys and credentials, the logs.
        shutil.rmtree(self.root, ignore_errors=True)
        self.state = None


# -- tools for the lab's parts (this module, laptop, vpc, postgres; processes: lab/process.py) --


def ip_in(ns: str, *args: str) -> None:
    """``ip ARGS`` in namespace ``ns``; a LabError naming the command if it fails."""
    result = netns.run(ns, ["ip", *args])
    if result.returncode != 0:
        raise LabError(f"ip {' '.join(args)} in {ns}: {result.stderr.strip()}")


def sysctl_in(ns: str, *settings: str) -> None:
    """Set sysctls in a namespace; the ones this kernel lacks (no br_netfilter) are skipped."""
    for setting in settings:
        key = setting.split("=", 1)[0]
        if Path("/proc/sys", *key.split(".")).exists():
            result = netns.run(ns, ["sysctl", "-q", "-w", setting])
            if result.returncode != 0:
                raise LabError(f"sysctl {setting} in {ns}: {result.stderr.strip()}")


def run_checked(
    argv: list[str],
    what: str,
    *,
    cwd: Path | None = None,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to its end (``input`` on its standard input, else none); a LabError saying
    ``what`` was being done, with the end of its output, if it fails."""
    done = subprocess.run(
        argv,
        cwd=cwd,
        input=input,
        env=env,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise LabError(f"{what}: {(done.stderr or done.stdout).strip()[-800:]}")
    return done


def wait_until(check: Callable[..., object], timeout: float, what: str) -> None:
    """Poll ``check`` until it is true; a LabTimeout naming ``what`` after ``timeout`` s. A
    check that raises (a ``LabError``: the process waited for has exited) ends the wait at once.
    ``check`` is called with no argument; ``...`` lets mypy take lambdas that bind a loop
    variable as a default (``lambda n=name: ...``)."""
    waiting.wait_until(check, timeout, what, error=lambda message: LabTimeout(f"lab: {message}"))
