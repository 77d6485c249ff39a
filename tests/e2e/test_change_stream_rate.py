"""The change stream at rate (issue 16, SPEC 9): a 5-host lab follows a sustained stream of
machine changes (~200 a second) and loses none, applies none out of order.

Hosts a, b (fra), c, d (ams), e (iad) run their own agents; 20 more hosts are joined through the
API with no agent behind them (the rest of a fleet: most of the stream's machines live there, so
that the lab's two cores go to following the stream rather than to wiring namespaces; a few
land on the lab's hosts and are wired for real). Eight clients change machines for a few
seconds, open loop at ``RATE`` per second: each machine goes through create, stop, then either
destroy or start and destroy, one request after the other (so each machine's own changes have a
defined order). Then one more machine is created and awaited in every host's DNS: the stream is
applied in order, so once it shows, everything before it has been applied too. Every host's DNS
must then agree with the store for every app (``<app>.internal AAAA``, ``vms`` and ``all.vms``
TXT) and answer NXDOMAIN for every destroyed machine's ``<id>.vm.<app>.internal``; a change lost
or applied out of order on any host leaves a wrong set there.

Not a timing test: the rate is what the clients ask for, the assertions are about what the DNS
ends up answering (timings are ``make bench-propagation``'s, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.rcode
import httpx
import pytest

from sixpn.client import generate_keypair
from sixpn.lab.fabric import HostSpec, Lab
from tests.netns.dnsutil import query

pytestmark = pytest.mark.e2e

ORG = "rate"
HOSTS = [("a", "fra"), ("b", "fra"), ("c", "ams"), ("d", "ams"), ("e", "iad")]
FAR = 20
APPS = [f"app-{i}" for i in range(6)]
RATE = 200.0  # changes per second asked of the control plane
SECONDS = 5.0
CLIENTS = 8
LAB_SHARE = 0.03  # of the creates: wired for real on a lab host


@dataclass
class RateLab:
    lab: Lab
    api: httpx.Client
    far: list[str]
    probes: dict[str, dict[str, Any]]  # lab host -> the machine its DNS is asked from


@pytest.fixture(scope="module")
def rate_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RateLab]:
    lab = Lab(tmp_path_factory.mktemp("rate") / "lab")
    try:
        lab.up([HostSpec(n, r) for n, r in HOSTS], resync=30.0)
        api = lab.api()
        assert api.post("/v1/orgs", json={"name": ORG}).status_code == 201
        for app in [*APPS, "probe"]:
            assert api.post(f"/v1/orgs/{ORG}/apps", json={"name": app}).status_code == 201
        far = []
        for i in range(FAR):
            body = {
                "name": f"far-{i}",
                "region": ("fra", "ams", "iad", "ord", "sin")[i % 5],
                "endpoint": f"198.51.100.{i + 1}:51820",
                "public_key": generate_keypair().public_key,
            }
            assert api.post("/v1/hosts", json=body).status_code == 201, body
            far.append(body["name"])
        probes = {}
        for name, _ in HOSTS:
            r = api.post(f"/v1/orgs/{ORG}/machines", json={"app": "probe", "host": name})
            assert r.status_code == 201, r.text
            probes[name] = r.json()
        for m in probes.values():
            lab.wait_wired(m, timeout=60)
        try:
            yield RateLab(lab, api, far, probes)
        finally:
            api.close()
    finally:
        lab.down()


async def _stream(socket: Path, ca: Path, token: str, far: list[str], seed: int) -> dict[str, int]:
    """Open loop: change k is due at t0 + k / RATE; each machine's changes in order."""
    rng = random.Random(seed)
    counts = {"create": 0, "stop": 0, "start": 0, "destroy": 0}
    total = int(RATE * SECONDS)
    t0 = time.monotonic()
    issued = 0
    base = f"/v1/orgs/{ORG}/machines"
    lab_hosts = [n for n, _ in HOSTS]

    async def slot() -> bool:
        nonlocal issued
        if issued >= total:
            return False
        due = t0 + issued / RATE
        issued += 1
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        return True

    async def client(c: httpx.AsyncClient) -> None:
        while await slot():
            host = rng.choice(lab_hosts) if rng.random() < LAB_SHARE else rng.choice(far)
            r = await c.post(base, json={"app": rng.choice(APPS), "host": host})
            assert r.status_code == 201, r.text
            counts["create"] += 1
            mid = r.json()["id"]
            steps = ["stop", "destroy"] if rng.random() < 0.5 else ["stop", "start", "destroy"]
            for step in steps:
                if not await slot():
                    return  # the machine stays as it is: the store says so, DNS must too
                if step == "destroy":
                    r = await c.delete(f"{base}/{mid}")
                else:
                    r = await c.post(f"{base}/{mid}/{step}")
                assert r.status_code == 200, r.text
                counts[step] += 1

    # the lab's API is HTTPS on its socket, with the lab's own CA
    verify = ssl.create_default_context(cafile=str(ca))
    transport = httpx.AsyncHTTPTransport(uds=str(socket), verify=verify)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="https://sixpn", headers=headers, timeout=30
    ) as c:
        await asyncio.gather(*(client(c) for _ in range(CLIENTS)))
    counts["seconds_x1000"] = int((time.monotonic() - t0) * 1000)
    return counts


def _ask(r: RateLab, host: str, name: str, qtype: str) -> tuple[str, set[str]]:
    m = r.probes[host]
    reply = query(r.lab.machine_ns(m["id"]), m["address"], name, qtype)
    items: set[str] = set()
    for rrset in reply.answer:
        for rd in rrset:
            if qtype == "TXT":
                items |= {x for x in b"".join(rd.strings).decode().split(",") if x}
            else:
                items.add(rd.to_text())
    return dns.rcode.to_text(reply.rcode()), items


def _barrier(r: RateLab) -> None:
    """One more machine, awaited in every host's DNS: the stream is applied in order."""
    resp = r.api.post(f"/v1/orgs/{ORG}/machines", json={"app": APPS[0], "host": r.far[0]})
    assert resp.status_code == 201, resp.text
    m = resp.json()
    name = f"{m['id']}.vm.{APPS[0]}.internal"
    for host, _ in HOSTS:
        deadline = time.monotonic() + 60
        while _ask(r, host, name, "AAAA") != ("NOERROR", {m["address"]}):
            assert time.monotonic() < deadline, f"host {host}'s DNS never showed {name}"
            time.sleep(0.05)


def test_every_host_follows_a_sustained_stream_and_agrees_with_the_store(
    rate_lab: RateLab,
) -> None:
    r = rate_lab
    assert r.lab.state is not None
    counts = asyncio.run(
        _stream(r.lab.socket, r.lab.ca_file, r.lab.state.admin_token, r.far, seed=16)
    )
    assert sum(v for k, v in counts.items() if k != "seconds_x1000") == int(RATE * SECONDS)
    _barrier(r)
    machines = r.api.get(f"/v1/orgs/{ORG}/machines?all=true").raise_for_status().json()
    expected: dict[tuple[str, str], tuple[str, set[str]]] = {}
    for app in APPS:
        mine = [m for m in machines if m["app"] == app]
        started = [m for m in mine if m["state"] == "started"]
        alive = [m for m in mine if m["state"] != "destroyed"]
        expected[(f"{app}.internal", "AAAA")] = (
            "NOERROR",
            {str(ipaddress.IPv6Address(m["address"])) for m in started},
        )
        expected[(f"vms.{app}.internal", "TXT")] = (
            "NOERROR",
            {f"{m['id']} {m['region']}" for m in started},
        )
        expected[(f"all.vms.{app}.internal", "TXT")] = (
            "NOERROR",
            {f"{m['id']} {m['region']}" for m in alive},
        )
    destroyed = [m for m in machines if m["state"] == "destroyed"]
    assert len(destroyed) > 100  # the stream did destroy machines
    for m in random.Random(1).sample(destroyed, 40):
        expected[(f"{m['id']}.vm.{m['app']}.internal", "AAAA")] = ("NXDOMAIN", set())
    wrong = []
    for host, _ in HOSTS:
        for (name, qtype), want in expected.items():
            got = _ask(r, host, name, qtype)
            if got != want:
                extra, missing = sorted(got[1] - want[1])[:3], sorted(want[1] - got[1])[:3]
                wrong.append(f"{host}: {name} {qtype}: {got[0]}, extra {extra}, missing {missing}")
    assert not wrong, "\n".join(wrong[:20])
