"""What a lab holds right now (``sixpn lab status``) and which machine a name means (``exec``).

The truth about orgs, machines and peers is the control plane's (the API); where things run is
the lab's (``lab.json``: namespaces, PIDs, laptops, VPCs, the store's members and replicas) and
the agents' (``status.json``). The store's parts are asked directly: each replica's
``/healthz``, each etcd member's ``/health``.
Machines are listed org by org in creation order, each org's as the API lists them (creation
order), so "the first machine of an app" is the oldest one still there.

The control plane down (a fault the lab exists to show) must not blind the lab: the data path
and DNS keep working, and so must ``lab exec`` and ``lab status``. Every answer of the API is
kept in ``inventory.json``; when the API does not answer, the machines and peers come from it
("as of" its time), less the machines whose namespace is gone, plus the machines an agent wired
since (its ``status.json`` ``wired``: ID, org, app, address, namespace). The record says which
it was (``control_plane``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import httpx

from sixpn.lab import netns
from sixpn.lab.fabric import Lab, LabError

Record = dict[str, Any]

CACHE = "inventory.json"


def collect(lab: Lab) -> Record:
    """Hosts, machines (not destroyed ones), peers and VPCs, as plain JSON-ready dicts; with the
    control plane down, the machines and peers as last seen (``control_plane.answers`` false)."""
    state = lab.state
    assert state is not None
    hosts = [_host(lab, name, h) for name, h in state.hosts.items()]
    try:
        machines, peers = _from_api(lab)
    except LabError as exc:
        machines, peers, as_of = _last_seen(lab)
        control: Record = {"answers": False, "error": str(exc), "as_of": as_of}
    else:
        _remember(lab, machines, peers)
        control = {"answers": True, "error": None, "as_of": time.time()}
    return {
        "lab": {
            "dir": str(lab.root),
            "id": state.lab_id,
            "api": lab.control_url,
            "logs": str(lab.root),
            "underlay": lab.underlay_ns,
        },
        "control_plane": control,
        "store": store(lab),
        "hosts": hosts,
        "machines": machines,
        "peers": peers,
        "vpcs": [_vpc(name, v) for name, v in state.vpcs.items()],
    }


def _from_api(lab: Lab) -> tuple[list[Record], list[Record]]:
    machines: list[Record] = []
    peers: list[Record] = []
    with lab.api() as api:
        for org in _get(api, "/v1/orgs"):
            name = org["name"]
            listed = _get(api, f"/v1/orgs/{name}/machines")
            for m in sorted(listed, key=lambda m: (m["created_at"], m["id"])):
                machines.append(_machine(lab, m))
            for p in _get(api, f"/v1/orgs/{name}/peers"):
                peers.append(_peer(lab, p))
    return machines, peers


def _remember(lab: Lab, machines: list[Record], peers: list[Record]) -> None:
    """Keep the API's answer for a time it does not answer (written whole, then renamed)."""
    cache = lab.root / CACHE
    tmp = cache.with_name(f".{CACHE}.tmp")
    record = {"as_of": time.time(), "machines": machines, "peers": peers}
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(cache)


def _last_seen(lab: Lab) -> tuple[list[Record], list[Record], float | None]:
    """Machines and peers as the API last gave them, checked against what runs now: a machine
    whose namespace is gone is left out, one an agent wired since is added as the agent knows
    it (``status.json``: ID, org, app, address, namespace)."""
    assert lab.state is not None
    try:
        cached = json.loads((lab.root / CACHE).read_text())
    except (OSError, ValueError):
        cached = {"as_of": None, "machines": [], "peers": []}
    machines = [m for m in cached["machines"] if netns.exists(m["namespace"])]
    known = {m["id"] for m in machines}
    for name in lab.state.hosts:
        for wired in (lab.status(name) or {}).get("wired", []):
            if wired["id"] in known or not netns.exists(wired["netns"]):
                continue
            known.add(wired["id"])
            machines.append(_wired_only(wired, name))
    return machines, list(cached["peers"]), cached["as_of"]


def _wired_only(wired: Record, host: str) -> Record:
    """A machine known only from its host's agent: what the API would add is unknown (None)."""
    unknown = ("network", "region", "process_group", "state")
    return {
        "id": wired["id"],
        "org": wired["org"],
        "app": wired["app"],
        **dict.fromkeys(unknown),
        "host": host,
        "address": wired["address"],
        "namespace": wired["netns"],
        "metadata": {},
    }


def _get(api: httpx.Client, path: str) -> list[Record]:
    try:
        answer = api.get(path, timeout=10)
    except httpx.HTTPError as exc:
        raise LabError(f"the lab's control plane does not answer ({exc}); see server*.log") from exc
    if answer.status_code != 200:
        raise LabError(f"GET {path}: HTTP {answer.status_code}: {answer.text[:300]}")
    found: list[Record] = answer.json()
    return found


def store(lab: Lab) -> Record:
    """The control plane's store (SQLite file or etcd members) and its server replicas."""
    assert lab.state is not None
    replicas = []
    for i in range(lab.replicas):
        running = lab.replica_alive(i)
        replicas.append(
            {
                "name": lab.replica_role(i),
                "url": lab.control_url.split(",")[i],
                "pid": lab.state.pids.get(lab.replica_role(i)),
                "alive": running,
                "healthy": running and lab.replica_healthy(i),
                "log": str(lab.root / f"{lab.replica_role(i)}.log"),
            }
        )
    if lab.state.store == "etcd":
        from sixpn.lab import etcd

        return {
            "kind": "etcd",
            "data_dir": lab.state.etcd.get("dir"),
            "members": etcd.status(lab),
            "replicas": replicas,
        }
    return {
        "kind": "sqlite",
        "db": str(lab.root / "server.db"),
        "members": [],
        "replicas": replicas,
    }


def _host(lab: Lab, name: str, h: Record) -> Record:
    assert lab.state is not None
    status = lab.status(name) or {}
    pid = lab.state.pids.get(f"agent-{name}")
    return {
        "name": name,
        "region": h["region"],
        "gateway": h["gateway"],
        "namespace": h["ns"],
        "underlay": h["address"],
        "wireguard": h["wg_ifname"],
        "agent_pid": pid,
        "agent_running": pid is not None and _alive(pid),
        "backend": status.get("backend"),
        "applied_revision": status.get("applied_revision"),
        "machines_wired": len(status["machines"]) if "machines" in status else None,
    }


def _machine(lab: Lab, m: Record) -> Record:
    keys = ("id", "org", "app", "network", "region", "host", "address", "state")
    out = {k: m[k] for k in keys}
    out["namespace"] = lab.machine_ns(m["id"])
    out["process_group"] = m.get("process_group")
    out["metadata"] = m.get("metadata") or {}
    return out


def _peer(lab: Lab, p: Record) -> Record:
    assert lab.state is not None
    laptop = lab.state.laptops.get(p["name"])
    mine = laptop is not None and laptop["org"] == p["org"]
    return {
        "name": p["name"],
        "org": p["org"],
        "network": p["network"],
        "address": p["address"],
        "gateway": p["gateway"],
        "laptop": laptop["ns"] if mine and laptop else None,
    }


def _vpc(name: str, v: Record) -> Record:
    """Where a VPC's parts run (``lab vpc``; vpc.py), and its database URL."""
    forward, postgres = v.get("forward_pid"), v.get("postgres_pid")
    return {
        "name": name,
        "org": v["org"],
        "network": v["network"],
        "peer_address": v.get("peer_address"),
        "url": v.get("url"),
        "nat": f"{v['nat_ns']} ({v['nat_underlay']})",
        "ec2": f"{v['ec2_ns']} ({v['ec2_address']})",
        "db": f"{v['db_ns']} ({v['db_address']})",
        "forward_pid": forward,
        "forward_running": forward is not None and _alive(forward),
        "postgres_pid": postgres,
        "db_running": postgres is not None and _alive(postgres),
        "data_dir": v["pg_dir"],
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resolve(inventory: Record, ref: str) -> Record:
    """The machine (or laptop peer) ``ref`` names: a machine ID, ``[ORG/]APP`` (its first
    machine), ``[ORG/]APP@HOST`` (its first machine on that host), or a laptop peer's name.
    The answer has ``namespace`` and ``address``; an unknown or ambiguous name is a LabError
    saying what there is."""
    machines: list[Record] = inventory["machines"]
    by_id = [m for m in machines if m["id"] == ref]
    if by_id:
        return by_id[0]
    org, _, rest = ref.rpartition("/")
    app, _, host = rest.partition("@")
    found = [
        m
        for m in machines
        if m["app"] == app and (not org or m["org"] == org) and (not host or m["host"] == host)
    ]
    orgs = sorted({m["org"] for m in found})
    if len(orgs) > 1:
        choices = ", ".join(f"{o}/{rest}" for o in orgs)
        raise LabError(f"{ref!r} is ambiguous: apps of several orgs match ({choices})")
    if found:
        return found[0]
    laptops = [p for p in inventory["peers"] if p["name"] == ref and p["laptop"]]
    if laptops:
        return {**laptops[0], "namespace": laptops[0]["laptop"], "id": ref}
    apps = sorted({f"{m['org']}/{m['app']}" for m in machines})
    where = f" on host {host!r}" if host else ""
    raise LabError(
        f"no machine {ref!r}{where} in the lab (apps: {', '.join(apps) or 'none'}; machine IDs "
        "and hosts: sixpn lab status)"
    )
