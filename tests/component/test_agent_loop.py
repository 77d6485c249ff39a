"""The agent loop against a real control plane, with the verified fake host (no root needed):
it joins once, wires what the fleet says, follows changes, and a restart applies nothing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

from sixpn.agent.agent import Agent, AgentSettings
from sixpn.agent.ports import FakeHost, PeerStats
from sixpn.client import Client
from sixpn.control.api.schemas import PeerCounters
from sixpn.core import addressing
from sixpn.core.hoststate import machine_ifname
from tests.harness import ServerProcess

pytestmark = pytest.mark.component


STOP_S = 10.0  # an agent told to stop (systemd's SIGTERM cancels its run) is gone by then


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[asyncio.Task[None]]:
    """The agent's run for the block; cancelled after it, and it must end: a loop of its that
    lost the cancel (Python 3.11's wait_for can, gh-86296) kept an agent running forever."""
    task = asyncio.create_task(agent.run())
    try:
        yield task
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=STOP_S)
        assert done, f"the agent still runs {STOP_S:g} s after it was cancelled"
        if not task.cancelled() and task.exception() is not None:
            raise AssertionError("the agent failed") from task.exception()


async def until(check: object, what: str, timeout: float = 30.0) -> None:
    assert callable(check)
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


def settings(server: ServerProcess, data_dir: Path) -> AgentSettings:
    return AgentSettings(
        control=server.url,
        name="h1",
        region="fra",
        endpoint="192.0.2.1:51820",
        data_dir=data_dir,
        join_token=server.join_token,
        resync_seconds=0.5,
        dns_listen=("::1", 0),
        upstreams=("127.0.0.1:9",),
    )


async def test_agent_wires_the_fleet_and_a_restart_applies_nothing(
    server: ServerProcess, tmp_path: Path
) -> None:
    api = server.client()
    assert api.post("/v1/orgs", json={"name": "acme"}).status_code == 201
    assert api.post("/v1/orgs/acme/apps", json={"name": "web"}).status_code == 201
    other = {"name": "h2", "region": "ams", "endpoint": "192.0.2.2:51820"}
    other["public_key"] = base64.b64encode(os.urandom(32)).decode()
    assert api.post("/v1/hosts", json=other).status_code == 201

    host = FakeHost()
    agent = Agent(settings(server, tmp_path / "agent"), lambda ifname, key: host)
    async with running(agent):
        await until(lambda: host.state.wg_ifname is not None, "the WireGuard interface")
        me = api.get("/v1/hosts/h1").json()
        assert me["public_key"] == agent.data.public_key()  # only the public key left
        mine = api.post("/v1/orgs/acme/machines", json={"app": "web", "host": "h1"}).json()
        theirs = api.post("/v1/orgs/acme/machines", json={"app": "web", "host": "h2"}).json()
        their_80 = addressing.host_prefix(mine["net_id"], theirs["host_id"])

        def h2_routes_their_80() -> bool:
            h2 = [p for p in host.state.wg_peers if p.public_key == other["public_key"]]
            return bool(h2) and their_80 in h2[0].allowed_ips

        # the two creates may reach the agent in one reconcile or in two: wait for both
        await until(
            lambda: {m.machine_id for m in host.state.machines} == {mine["id"]}, "machine wired"
        )
        await until(h2_routes_their_80, "the mesh peer of h2 carries the network's /80 on h2")
        link = next(iter(host.state.machines))
        assert str(link.address) == mine["address"]
        assert link.host_ifname == machine_ifname(mine["id"])
        assert addressing.network_prefix(mine["net_id"]) in host.state.pairs
        status = api.get("/v1/hosts/h1").json()
        assert status["name"] == "h1"
        api.delete(f"/v1/orgs/acme/machines/{mine['id']}")
        await until(lambda: not host.state.machines, "machine unwired")
        await until(lambda: agent.data.status() is not None, "status.json written")

    # a reconcile the cancelled agent had started finishes in its worker thread: wait for it
    reconciler = agent.reconciler
    assert reconciler is not None
    await until(lambda: not reconciler.busy, "the first agent's last reconcile to finish")
    applied_before = len(host.applied)
    again = Agent(settings(server, tmp_path / "agent"), lambda ifname, key: host)
    async with running(again):
        await until(
            lambda: again.reconciler is not None and again.reconciler.stats.runs >= 2,
            "two reconciles after the restart",
        )
    assert len(host.applied) == applied_before  # same state: nothing applied
    hosts = [h["name"] for h in api.get("/v1/hosts").json()]
    assert hosts.count("h1") == 1  # no second join


async def test_a_gateway_reports_its_peers_counters_only_when_they_change(
    server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = server.client()
    assert api.post("/v1/orgs", json={"name": "acme"}).status_code == 201
    sent: list[int] = []
    original = Client.report_peers

    async def counting(self: Client, host_name: str, peers: Iterable[PeerCounters]) -> int:
        batch = list(peers)
        sent.append(len(batch))
        return await original(self, host_name, batch)

    monkeypatch.setattr(Client, "report_peers", counting)
    host = FakeHost()
    gw = dataclasses.replace(
        settings(server, tmp_path / "gw"), gateway=True, peer_report_seconds=0.1
    )
    agent = Agent(gw, lambda ifname, key: host)
    async with running(agent):
        await until(lambda: host.state.wg_ifname is not None, "the WireGuard interface")
        key = base64.b64encode(os.urandom(32)).decode()
        body = {"name": "laptop", "public_key": key}
        assert api.post("/v1/orgs/acme/peers", json=body).status_code == 201
        await until(lambda: any(p.public_key == key for p in host.state.wg_peers), "peer set")

        def status() -> dict[str, Any]:
            answer: dict[str, Any] = api.get("/v1/orgs/acme/peers/laptop/status").json()
            return answer

        await until(lambda: status()["reported"], "the first report (zeros: never)")
        assert status()["latest_handshake"] is None
        sent.clear()
        await asyncio.sleep(0.6)
        assert sent == []  # nothing changed: nothing sent (a sign of life only once a minute)
        now = int(time.time())
        host.stats[key] = PeerStats(key, "192.0.2.101:40000", now, 4242, 1717)
        await until(lambda: status()["rx_bytes"] == 4242, "the new counters reported")
    got = status()
    assert got["endpoint"] == "192.0.2.101:40000"
    assert got["latest_handshake"] == now
    assert got["tx_bytes"] == 1717
    assert sent == [1]  # one report, of the one peer that changed
