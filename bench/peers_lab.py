"""Parts B and C of the peers benchmark: a real lab (control plane, one gateway host, its agent
and wireguard-go), peers created through the HTTP API, and one "laptop" namespace on the
underlay that brings each new peer up with stock ``wg-quick`` and pings the gateway.

Measured: the agent's and wireguard-go's memory with 0 and N peers; per sample, from the API
call that creates a peer to the gateway having it installed (the agent's own log: the
``reconciled`` line that follows ``apply SetPeers(1 peer: <key> ...)``, written when ``wg set``
has returned) and to the laptop's first answered ping of ``<net48>::3``; samples are taken on
the empty gateway and again once it holds N peers, so the two can be compared.

Rule: everything made is the lab's (``Lab.up`` writes it down in lab.json as it goes) and the
caller's ``finally`` runs ``lab.down()``: namespaces, agent, server, wireguard-go daemons
(stopped by PID: ``ip netns pids`` of the lab's own namespaces), files.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from sixpn.client import generate_keypair
from sixpn.core.wgquick import render_wg_quick
from sixpn.lab import netns
from sixpn.lab.fabric import UNDERLAY_NET, HostSpec, Lab

ORG = "bench"
LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"  # logging's asctime: local time, milliseconds


def vm_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise SystemExit(f"peers bench: no {field} for PID {pid}")


class PeerLab:
    """One gateway host, its agent, and a laptop namespace to bring peers up in."""

    def __init__(self, lab: Lab, say: Any) -> None:
        self.lab = lab
        self.say = say
        self.api = lab.api()
        assert lab.state is not None
        self.ifname = str(lab.state.hosts["gw"]["wg_ifname"])
        self.agent_pid = lab.state.pids["agent-gw"]
        self.log = lab.root / "agent-gw.log"
        self.created = 0
        self.removed = 0  # sample peers removed again (their removal is measured too)
        lab_id = lab.state.lab_id
        # "z" is no hex digit: no clash with laptop.py's sxl<lab id><n> or l<lab id><n>
        self.laptop = f"{netns.PREFIX}l{lab_id}-bench"
        self.laptop_if = f"sxl{lab_id}z"
        self.conf = lab.root / f"{self.laptop_if}.conf"

    @classmethod
    def up(cls, root: Path, say: Any) -> PeerLab:
        lab = Lab(root)
        # the production resync (30 s): a resync at N peers reads them all, a cost of its own
        lab.up([HostSpec("gw", "fra", gateway=True)], resync=30.0, progress=say)
        return cls(lab, say)

    def start(self) -> dict[str, Any]:
        """The org, the laptop namespace; which PIDs are measured."""
        r = self.api.post("/v1/orgs", json={"name": ORG})
        if r.status_code != 201:
            raise SystemExit(f"peers bench: creating org {ORG}: {r.status_code} {r.text}")
        self.lab.add_namespace(self.laptop)
        assert self.lab.state is not None
        outer = f"l{self.lab.state.lab_id}z"
        self.lab.plug_into_underlay(self.laptop, outer, f"{UNDERLAY_NET}.250")
        # nsenter execs the agent: the PID the lab recorded is the Python process itself
        exe = os.readlink(f"/proc/{self.agent_pid}/exe")
        if "python" not in Path(exe).name:
            raise SystemExit(f"peers bench: agent PID {self.agent_pid} runs {exe}, not Python")
        return {"agent_pid": self.agent_pid, "agent_exe": exe, "daemon_pid": self.daemon_pid()}

    def daemon_pid(self) -> int:
        code = f"from sixpn.agent.linux.wg import daemon_pid; print(daemon_pid({self.ifname!r}))"
        out = self.lab.host_run("gw", [sys.executable, "-c", code]).stdout.strip()
        if not out.isdigit():
            raise SystemExit(f"peers bench: no wireguard-go daemon for {self.ifname}: {out!r}")
        return int(out)

    def memory(self) -> dict[str, int]:
        daemon = self.daemon_pid()
        return {
            "agent_rss_kib": vm_kib(self.agent_pid),
            "agent_hwm_kib": vm_kib(self.agent_pid, "VmHWM"),
            "daemon_rss_kib": vm_kib(daemon),
            "daemon_hwm_kib": vm_kib(daemon, "VmHWM"),
        }

    def installed(self) -> int:
        out = self.lab.host_run("gw", ["wg", "show", self.ifname, "peers"])
        return len(out.stdout.split())

    # -- creating peers ------------------------------------------------------------------------

    def create(self, name: str, public_key: str) -> dict[str, Any]:
        r = self.api.post(f"/v1/orgs/{ORG}/peers", json={"name": name, "public_key": public_key})
        if r.status_code != 201:
            raise SystemExit(f"peers bench: creating peer {name}: {r.status_code} {r.text}")
        self.created += 1
        return dict(r.json())

    def fill(self, total: int) -> dict[str, Any]:
        """Create peers one by one until ``total`` exist; then wait until the gateway holds
        them all. Returns how long the creates took (by thousands) and the wait."""
        started = time.perf_counter()
        marks: list[tuple[int, float]] = []
        while self.created - self.removed < total:
            self.create(f"p{self.created}", generate_keypair().public_key)
            if self.created % 500 == 0 or self.created - self.removed == total:
                marks.append((self.created, time.perf_counter() - started))
                self.say(f"  {self.created} peers created, {marks[-1][1]:.0f} s")
        created_s = time.perf_counter() - started
        deadline = time.monotonic() + 600
        while (have := self.installed()) < self.created - self.removed:
            if time.monotonic() > deadline:
                raise SystemExit(f"peers bench: gateway holds {have} of {total} peers after 10 min")
            time.sleep(0.5)
        return {
            "created_s": created_s,
            "marks": marks,
            "installed_after_s": time.perf_counter() - started - created_s,
        }

    # -- one sample: API call -> installed on the gateway -> the laptop's first ping ----------

    def sample(self, i: int) -> dict[str, Any]:
        keys = generate_keypair()
        offset = self.log.stat().st_size
        wall0, t0 = time.time(), time.perf_counter()
        body = self.create(f"s{i}", keys.public_key)
        api_s = time.perf_counter() - t0
        # As `sixpn wireguard create` does: the file is handed out once the gateway has the
        # peer (the API's `installed`), so wg-quick's first handshake is not dropped.
        handed_out_s = self.wait_installed(f"s{i}") - t0
        peer, gw = body["peer"], body["gateway"]
        text = render_wg_quick(
            keys.private_key,
            peer["address"],
            body["dns"],
            gw["public_key"],
            body["allowed_ips"],
            gw["endpoint"],
        )
        # DNS= needs resolvconf, which this benchmark does not measure: the line is left out
        text = "".join(line for line in text.splitlines(True) if not line.startswith("DNS ="))
        self.conf.write_text(text)
        self.conf.chmod(0o600)
        t_up = time.perf_counter()  # wg-quick's keepalive starts the handshake at once
        up = self.wg_quick("up")
        if up.returncode != 0:
            raise SystemExit(f"peers bench: wg-quick up: {up.stderr.strip()[-500:]}")
        up_s = time.perf_counter() - t_up
        ping_s = self.first_ping(body["dns"], t0)
        down = self.wg_quick("down")
        if down.returncode != 0:
            raise SystemExit(f"peers bench: wg-quick down: {down.stderr.strip()[-500:]}")
        installed_s = self.installed_at(keys.public_key, offset) - wall0
        return {
            "api_s": api_s,
            "installed_s": installed_s,
            "handed_out_s": handed_out_s,
            "wg_quick_up_s": up_s,
            "up_started_s": t_up - t0,
            "first_ping_s": ping_s,
            "removed_s": self.remove(f"s{i}", keys.public_key),
        }

    def wait_installed(self, name: str, timeout: float = 10) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.api.get(f"/v1/orgs/{ORG}/peers/{name}/status").json()["installed"]:
                return time.perf_counter()
            time.sleep(0.02)
        raise SystemExit(f"peers bench: peer {name} not installed after {timeout} s")

    def remove(self, name: str, public_key: str, timeout: float = 10) -> float:
        """Seconds from the API call that removes the peer to the gateway not holding it."""
        t0 = time.perf_counter()
        r = self.api.delete(f"/v1/orgs/{ORG}/peers/{name}")
        if r.status_code != 204:
            raise SystemExit(f"peers bench: removing peer {name}: {r.status_code} {r.text}")
        self.removed += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.lab.host_run("gw", ["wg", "show", self.ifname, "peers"]).stdout
            if public_key not in out.split():
                return time.perf_counter() - t0
        raise SystemExit(f"peers bench: the gateway still holds {name} after {timeout} s")

    def wg_quick(self, action: str) -> subprocess.CompletedProcess[str]:
        env = os.environ | {"WG_QUICK_USERSPACE_IMPLEMENTATION": "wireguard-go"}
        return subprocess.run(
            netns.exec_argv(self.laptop, ["wg-quick", action, str(self.conf)]),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def first_ping(self, address: str, t0: float) -> float:
        """Seconds from ``t0`` to the first answered ping (one echo, 1 s wait, again until
        10 s have passed)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            argv = ["ping", "-6", "-n", "-c", "1", "-W", "1", address]
            done = subprocess.run(netns.exec_argv(self.laptop, argv), capture_output=True)
            if done.returncode == 0:
                return time.perf_counter() - t0
        raise SystemExit(f"peers bench: {address} never answered the laptop in 10 s")

    def installed_at(self, public_key: str, offset: int, timeout: float = 10) -> float:
        """When the agent logged the end of the reconcile that set ``public_key`` (Unix time)."""
        deadline = time.monotonic() + timeout
        needle = f"apply SetPeers(1 peer: {public_key} "
        while time.monotonic() < deadline:
            with self.log.open() as f:
                f.seek(offset)
                lines = f.read().splitlines()
            seen = False
            for line in lines:
                seen = seen or needle in line
                if seen and " reconciled: " in line:
                    stamp = datetime.strptime(" ".join(line.split()[:2]), LOG_TIME)
                    return stamp.timestamp()
            time.sleep(0.05)
        raise SystemExit(f"peers bench: the agent never logged peer {public_key} as applied")

    def close(self) -> None:
        self.api.close()
