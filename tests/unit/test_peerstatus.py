"""Peer status reports and the expiry of idle ephemeral peers (SPEC 5), over the in-memory store
with a clock the test moves.

What is proven: a gateway's report is stored per peer and only for its own current peers; "idle"
means no new handshake and no byte received; an ephemeral peer is removed after the idle time
(counted from its creation when it never shook hands) only while its gateway keeps reporting;
an active ephemeral peer and every non-ephemeral peer are kept; the removal is an ordinary
deletion (gone from the list, its counters with it).
"""

from __future__ import annotations

import base64
import os

import pytest

from sixpn.control.context import Context
from sixpn.control.peerstatus import Counters
from sixpn.control.service import Service
from sixpn.model.errors import InvalidInput, NotFound
from sixpn.store.memory import MemoryStore

pytestmark = pytest.mark.unit

IDLE = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def wg_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def fleet() -> tuple[Service, Clock]:
    clock = Clock()
    svc = Service(Context(store=MemoryStore(), clock=clock), ephemeral_idle=IDLE)
    await svc.orgs.create("acme")
    await svc.hosts.join("gw", "fra", "192.0.2.1:51820", wg_key(), gateway=True)
    await svc.hosts.join("gw2", "ams", "192.0.2.2:51820", wg_key(), gateway=True)
    return svc, clock


def line(org: str, name: str, key: str, *, hs: float = 0, rx: int = 0, tx: int = 0) -> Counters:
    endpoint = "192.0.2.101:40000" if hs else None
    return Counters(org, name, key, endpoint, hs, rx, tx)


async def names(svc: Service) -> list[str]:
    return sorted(p.name for p in await svc.peers.list("acme"))


async def test_a_report_is_stored_per_peer_and_only_for_the_gateways_own_peers() -> None:
    svc, clock = await fleet()
    key = wg_key()
    await svc.peers.create("acme", "laptop", key, region="fra")
    _peer, status, _ = await svc.peer_status.get("acme", "laptop")
    assert status is None  # never reported: "never" in the CLI
    taken = await svc.peer_status.report(
        "gw",
        [
            line("acme", "laptop", key, hs=clock.now - 3, rx=1200, tx=800),
            line("acme", "ghost", wg_key(), rx=5),  # no such peer (removed meanwhile)
        ],
    )
    assert taken == 1
    _, status, _ = await svc.peer_status.get("acme", "laptop")
    assert status is not None
    assert (status.rx_bytes, status.tx_bytes, status.endpoint) == (1200, 800, "192.0.2.101:40000")
    assert status.latest_handshake == clock.now - 3
    assert status.last_active == clock.now
    # Another gateway cannot report this peer, nor can a report about another key (the peer
    # was removed and created again meanwhile) overwrite it.
    assert await svc.peer_status.report("gw2", [line("acme", "laptop", key, rx=9)]) == 0
    assert await svc.peer_status.report("gw", [line("acme", "laptop", wg_key(), rx=9)]) == 0
    _, status, _ = await svc.peer_status.get("acme", "laptop")
    assert status is not None
    assert status.rx_bytes == 1200
    with pytest.raises(NotFound):
        await svc.peer_status.get("acme", "nobody")
    with pytest.raises(InvalidInput) as bad:
        await svc.peer_status.report("gw", [line("acme", "laptop", key, rx=-1)])
    assert "must be >= 0" in bad.value.message


async def test_removing_a_peer_removes_its_counters() -> None:
    svc, _ = await fleet()
    key = wg_key()
    await svc.peers.create("acme", "laptop", key, region="fra")
    await svc.peer_status.report("gw", [line("acme", "laptop", key, rx=10)])
    await svc.peers.delete("acme", "laptop")
    await svc.peers.create("acme", "laptop", key, region="fra")  # same name and key again
    _, status, _ = await svc.peer_status.get("acme", "laptop")
    assert status is None


async def test_an_idle_ephemeral_peer_is_removed_and_an_active_one_is_kept() -> None:
    svc, clock = await fleet()
    keys = {n: wg_key() for n in ("never", "gone", "active", "kept")}
    for name in ("never", "gone", "active"):
        await svc.peers.create("acme", name, keys[name], region="fra", ephemeral=True)
    await svc.peers.create("acme", "kept", keys["kept"], region="fra")  # not ephemeral
    await svc.peer_status.report(
        "gw",
        [line("acme", n, keys[n], hs=clock.now, rx=100) for n in ("gone", "active", "kept")],
    )
    # The gateway reports every 20 s; "active" keeps receiving (keepalives), "gone" does not.
    rx = 100
    for _ in range(4):
        clock.now += 20
        rx += 32
        await svc.peer_status.report("gw", [line("acme", "active", keys["active"], rx=rx)])
        await svc.peer_status.expire_idle()
    assert await names(svc) == ["active", "kept"]
    _, status, _ = await svc.peer_status.get("acme", "active")
    assert status is not None
    assert status.last_active == clock.now
    # Idle long enough, the last one goes too; a non-ephemeral peer never does.
    clock.now += IDLE + 1
    await svc.peer_status.report("gw", [])
    removed = await svc.peer_status.expire_idle()
    assert [p.name for p in removed] == ["active"]
    assert await names(svc) == ["kept"]


async def test_a_gateway_that_stops_reporting_never_expires_its_peers() -> None:
    svc, clock = await fleet()
    key = wg_key()
    await svc.peers.create("acme", "laptop", key, region="fra", ephemeral=True)
    await svc.peer_status.report("gw", [line("acme", "laptop", key, hs=clock.now, rx=1)])
    clock.now += 10 * IDLE  # the gateway's agent is down: nobody watched the peer
    assert await svc.peer_status.expire_idle() == []
    assert await names(svc) == ["laptop"]
    await svc.peer_status.report("gw", [])  # back, and sees nothing new: it was idle all along
    assert [p.name for p in await svc.peer_status.expire_idle()] == ["laptop"]
    with pytest.raises(NotFound):
        await svc.peer_status.get("acme", "laptop")


async def test_a_counter_reset_is_no_sign_of_life_but_new_bytes_after_it_are() -> None:
    svc, clock = await fleet()
    key = wg_key()
    await svc.peers.create("acme", "laptop", key, region="fra", ephemeral=True)
    await svc.peer_status.report("gw", [line("acme", "laptop", key, hs=clock.now, rx=500)])
    active = clock.now
    clock.now += 30
    await svc.peer_status.report("gw", [line("acme", "laptop", key)])  # set again: zeros
    _, status, _ = await svc.peer_status.get("acme", "laptop")
    assert status is not None
    assert status.last_active == active
    clock.now += 5
    await svc.peer_status.report("gw", [line("acme", "laptop", key, rx=64)])
    _, status, _ = await svc.peer_status.get("acme", "laptop")
    assert status is not None
    assert status.last_active == clock.now


async def test_a_peer_is_installed_once_its_gateway_applied_its_revision() -> None:
    svc, _ = await fleet()
    await svc.peers.create("acme", "laptop", wg_key(), region="fra")
    peer, _, revision = await svc.peer_status.get("acme", "laptop")
    assert not await svc.peer_status.installed(revision, peer.gateway)  # no status yet
    await svc.hosts.report_status("gw", backend="wireguard-go", applied_revision=revision - 1)
    assert not await svc.peer_status.installed(revision, peer.gateway)
    await svc.hosts.report_status("gw", backend="wireguard-go", applied_revision=revision)
    assert await svc.peer_status.installed(revision, peer.gateway)
