"""The agent loop against a real control plane, with the verified fake host (no root needed):
it joins once, wires what the fleet says, follows changes, and a restart applies nothing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sixpn.agent.agent import Agent, AgentSettings
from sixpn.agent.ports import FakeHost
from sixpn.core import addressing
from sixpn.core.hoststate import machine_ifname
from tests.harness import ServerProcess

pytestmark = pytest.mark.component


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(agent.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


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
