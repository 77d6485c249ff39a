"""The agent process: join, serve DNS, follow the fleet, reconcile, report.

Start-up: the WireGuard key pair is made in the data directory on first start (only the public
key leaves the host); with no stored credential the agent joins with the join token and stores
the credential it gets. Then one follower feeds both the DNS zone and the reconciler from the
same view; a periodic full resync re-reads the kernel so that drift (a deleted route, rule or
element) is repaired even when the fleet does not change. A restart changes nothing in the
kernel unless the desired state changed meanwhile (the plan from the kernel's state is empty),
so established traffic is not interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from sixpn.agent import endpoint
from sixpn.agent.datadir import DataDir
from sixpn.agent.metrics import AgentCollector
from sixpn.agent.ports import HostPort
from sixpn.agent.reconciler import Reconciler
from sixpn.client import Client
from sixpn.control.api.schemas import PeerCounters
from sixpn.core import addressing
from sixpn.core.hoststate import HostState, wg_ifname
from sixpn.core.incremental import IncrementalDesired
from sixpn.core.names import validate_name
from sixpn.core.plan import Moves
from sixpn.core.wireguard import split_endpoint
from sixpn.dns.forward import Forwarder, upstreams_from_resolv_conf
from sixpn.dns.metrics import DnsCollector
from sixpn.dns.server import DnsServer
from sixpn.dns.zone import Zone
from sixpn.follower import Follower
from sixpn.model.errors import InvalidInput, SixpnError
from sixpn.runtime.dns import fetch_regions, parse_upstream, zone_settings
from sixpn.view import Delta, View

log = logging.getLogger("sixpn.agent")

DATA_PATH_KINDS = frozenset({"host", "machine", "peer", "network"})
PEER_REPORT_ALIVE = 60.0  # seconds: an empty peer report at least this often (or 10 periods)
MAX_PEER_BATCH = 1000  # peers per report request (the API's limit)


@dataclass(frozen=True)
class AgentSettings:
    control: str
    name: str
    region: str
    endpoint: str
    data_dir: Path
    join_token: str | None = None
    gateway: bool = False
    resync_seconds: float = 30.0
    peer_report_seconds: float = 10.0  # a gateway reads its peers' counters this often
    dns_listen: tuple[str, int] = (str(addressing.DNS_ADDRESS), 53)
    upstreams: tuple[str, ...] = ()
    wg_ifname: str | None = None  # default sxw<host id>; the lab makes it unique per run
    metrics: str | None = None  # ADDRESS:PORT for Prometheus
    # The orchestrator's namespace of a machine, e.g. "vm-{id}": used when /var/run/netns/<it>
    # exists; otherwise the agent makes sixpn-m-<id> itself (SPEC 7).
    netns_template: str | None = None
    ca: Path | None = None  # the CA of an https control plane; None: the system's trust store

    def check(self) -> None:
        validate_name(self.name, field="name")
        split_endpoint(self.endpoint)


HostFactory = Callable[[str, Path], HostPort]  # (wg ifname, private key file) -> host port


class Agent:
    def __init__(self, settings: AgentSettings, make_host: HostFactory) -> None:
        settings.check()
        self.settings = settings
        self.make_host = make_host
        self.data = DataDir(settings.data_dir)
        self.dns: DnsServer | None = None
        self.reconciler: Reconciler | None = None
        self._status_due = asyncio.Event()
        self._listen_due = asyncio.Event()
        self._peers_changed = asyncio.Event()
        self._last_revision: int | None = None  # the revision last applied
        self._dns_listening: set[str] = set()

    async def join(self) -> tuple[str, dict[str, Any]]:
        """The stored credential and identity, or join now and store them."""
        public_key = self.data.public_key()
        credential, identity = self.data.credential(), self.data.identity()
        if credential and identity:
            if identity.get("name") != self.settings.name:
                raise InvalidInput(
                    f"data directory {self.data.path} belongs to host '{identity.get('name')}', "
                    f"not '{self.settings.name}'",
                    field="name",
                )
            return credential, identity
        if not self.settings.join_token:
            raise InvalidInput(
                "this host has not joined yet: give --join-token", field="join_token"
            )
        s = self.settings
        async with Client(s.control, s.join_token, ca=s.ca) as client:
            joined = await client.join_host(
                s.name, s.region, s.endpoint, public_key, gateway=s.gateway
            )
        host_id = joined.host.host_id
        identity = {
            "name": s.name,
            "host_id": host_id,
            "control": s.control,
            "wg_ifname": s.wg_ifname or wg_ifname(host_id),
        }
        self.data.save_join(joined.credential, identity)
        log.info("joined as host '%s' (host ID %d)", s.name, joined.host.host_id)
        return joined.credential, identity

    async def run(self) -> None:
        credential, identity = await self.join()
        s = self.settings
        ifname = str(identity.get("wg_ifname") or wg_ifname(int(identity["host_id"])))
        host = self.make_host(ifname, self.data.key_file)
        await asyncio.to_thread(host.start)
        port = split_endpoint(s.endpoint)[1]
        orchestrator_netns = self._orchestrator_netns if s.netns_template else None
        fleet = IncrementalDesired(s.name, port, ifname, orchestrator_netns)
        self.reconciler = Reconciler(
            host,
            lambda _view: s.name,
            listen_port=port,
            wg_ifname=ifname,
            orchestrator_netns=orchestrator_netns,
            on_applied=self._applied,
            fleet=fleet,
        )
        async with Client(s.control, credential, ca=s.ca) as client:
            regions = await fetch_regions(client)
            zone = Zone(zone_settings(regions, s.region, api_in_network=False))
            upstreams = [parse_upstream(u) for u in s.upstreams] or upstreams_from_resolv_conf()
            forwarder = Forwarder(upstreams)
            self.dns = DnsServer(zone, forwarder)
            await self.dns.start([s.dns_listen])
            reconciler = self.reconciler
            if s.metrics:
                self._serve_metrics(s.metrics, reconciler)

            def on_load(view: View) -> None:
                zone.load(view)
                fleet.load(view)
                reconciler.request(view, full=True)

            def on_change(view: View, deltas: list[Delta]) -> None:
                zone.apply(deltas)
                moved = fleet.apply(deltas)  # in what the changes touch, whatever the fleet
                if any(d.kind in DATA_PATH_KINDS for d in deltas):
                    reconciler.request(view, relevant=moved)

            follower = Follower(client, on_load=on_load, on_change=on_change)
            tasks = [
                asyncio.create_task(follower.run(), name="follower"),
                asyncio.create_task(reconciler.run(), name="reconciler"),
                asyncio.create_task(self._resync(follower), name="resync"),
                asyncio.create_task(self._report(client, host, follower), name="status"),
                asyncio.create_task(self._serve_service_addresses(), name="dns-addresses"),
                asyncio.create_task(self._follow_endpoint(client, follower), name="endpoint"),
            ]
            if s.gateway:
                reporter = self._report_peers(client, host, follower)
                tasks.append(asyncio.create_task(reporter, name="peer-report"))
            try:
                await follower.loaded.wait()
                self.dns.ready = True
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(BaseException):
                        await task
                await self.dns.close()
                await forwarder.close()

    def _orchestrator_netns(self, machine_id: str) -> str | None:
        assert self.settings.netns_template is not None
        name = self.settings.netns_template.format(id=machine_id)
        return name if (Path("/var/run/netns") / name).exists() else None

    def _serve_metrics(self, listen: str, reconciler: Reconciler) -> None:
        assert self.dns is not None
        host, port = split_endpoint(listen, field="metrics")
        registry = CollectorRegistry()
        registry.register(DnsCollector(self.dns))
        registry.register(AgentCollector(reconciler, reconciler.state))
        start_http_server(port, host, registry=registry)

    async def _resync(self, follower: Follower) -> None:
        assert self.reconciler is not None
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            if follower.loaded.is_set():
                self.reconciler.request(follower.view, full=True)

    async def _follow_endpoint(self, client: Client, follower: Follower) -> None:
        """Keep the host's recorded endpoint what it is now (agent/endpoint.py): at start, and
        every few seconds after, so that a moved address reaches the other hosts."""
        me = self.settings.name
        follow = endpoint.EndpointFollower(self.settings.endpoint)
        if follow.follows:
            log.info("endpoint %s is this host's: followed if it moves", self.settings.endpoint)
        while True:
            await follower.loaded.wait()
            hosts = follower.view.hosts
            recorded = hosts[me].endpoint if me in hosts else None
            others = [h.endpoint for name, h in sorted(hosts.items()) if name != me]
            now = await asyncio.to_thread(follow.current, others)
            if recorded is not None and now != recorded:
                try:
                    await client.set_host_endpoint(me, now)
                    log.info("endpoint moved: %s -> %s (told the control plane)", recorded, now)
                except SixpnError as exc:  # tried again next time
                    log.warning("endpoint %s not recorded: %s", now, exc.message)
            await asyncio.sleep(endpoint.CHECK_SECONDS)

    def _applied(self, revision: int, moves: Moves | None) -> None:
        """After each reconcile: what it moved (None: not known, as after the first run) says
        what to tell at once."""
        if moves is None or any(moves.wg_peers):
            self._peers_changed.set()
        if moves is None or any(moves.service_addresses):
            self._listen_due.set()
        self._last_revision = revision
        self._status_due.set()

    async def _serve_service_addresses(self) -> None:
        """Follow each applied state's service addresses with DNS listeners, at once (a peer's
        first query comes right after its wg-quick up; status reports wait a second)."""
        while True:
            await self._listen_due.wait()
            self._listen_due.clear()
            assert self.reconciler is not None
            desired = self.reconciler.state()
            assert desired is not None
            await self._listen_on_service_addresses(desired)

    async def _listen_on_service_addresses(self, desired: HostState) -> None:
        """DNS on every service address: fdaa::3, and on a gateway ``<net48>::3`` of each network
        with peers there (SPEC 4); the listener of a network that lost its last peer here is
        closed (its address has left lo already), and opened again with the next peer."""
        assert self.dns is not None
        wanted = set(map(str, desired.service_addresses))
        for address in sorted(self._dns_listening - wanted):
            await self.dns.unlisten(address)
            self._dns_listening.discard(address)
            log.info(
                "DNS on [%s]:%d closed: no peer of its network here",
                address,
                self.settings.dns_listen[1],
            )
        for address in sorted(wanted):
            if address in self._dns_listening or address == self.settings.dns_listen[0]:
                continue
            try:
                await self.dns.listen(address, self.settings.dns_listen[1])
            except OSError as exc:
                log.warning("DNS on [%s]:%d: %s", address, self.settings.dns_listen[1], exc)
                continue
            self._dns_listening.add(address)

    async def _report_peers(self, client: Client, host: HostPort, follower: Follower) -> None:
        """A gateway's report of its client peers' counters (``wireguard status``, ephemeral
        expiry): every period, only the peers whose counters changed since the last report
        that went through, in batches; with nothing changed, an empty report every ten
        periods (at most a minute apart) tells the control plane that this gateway is still
        watching (control/peerstatus.py)."""
        me = self.settings.name
        alive = min(PEER_REPORT_ALIVE, 10 * self.settings.peer_report_seconds)
        sent: dict[tuple[str, str], PeerCounters] = {}
        last_sent = 0.0
        while True:
            await asyncio.sleep(self.settings.peer_report_seconds)
            if not follower.loaded.is_set():
                continue
            mine = {p.public_key: p for p in follower.view.peers.values() if p.gateway == me}
            now_seen: dict[tuple[str, str], PeerCounters] = {}
            for row in await asyncio.to_thread(host.peer_stats):
                peer = mine.get(row.public_key)
                if peer is not None:
                    now_seen[(peer.org, peer.name)] = PeerCounters(
                        org=peer.org,
                        name=peer.name,
                        public_key=row.public_key,
                        endpoint=row.endpoint,
                        latest_handshake=row.latest_handshake,
                        rx_bytes=row.rx_bytes,
                        tx_bytes=row.tx_bytes,
                    )
            changed = [c for key, c in now_seen.items() if sent.get(key) != c]
            if not changed and time.monotonic() - last_sent < alive:
                continue
            try:
                for i in range(0, max(len(changed), 1), MAX_PEER_BATCH):
                    await client.report_peers(me, changed[i : i + MAX_PEER_BATCH])
            except SixpnError as exc:  # sent again next time: `sent` is left as it was
                log.warning("peer report failed: %s", exc.message)
                continue
            sent, last_sent = now_seen, time.monotonic()

    async def _report(self, client: Client, host: HostPort, follower: Follower) -> None:
        """Write status.json and tell the control plane, at most once a second unless the
        WireGuard peers changed. ``wired`` says what each wired machine is (org, app, address,
        namespace): what runs on this host stays known with the control plane down (``sixpn
        lab exec``)."""
        while True:
            await self._status_due.wait()
            self._status_due.clear()
            assert self.reconciler is not None
            revision, desired = self._last_revision, self.reconciler.state()
            assert revision is not None
            assert desired is not None
            stats = self.reconciler.stats
            machines = follower.view.machines
            wired = []
            for link in sorted(desired.machines, key=lambda k: k.machine_id):
                m = machines.get(link.machine_id)
                wired.append(
                    {
                        "id": link.machine_id,
                        "org": m.org if m else None,
                        "app": m.app if m else None,
                        "address": str(link.address),
                        "netns": link.netns,
                    }
                )
            self.data.save_status(
                {
                    "host": self.settings.name,
                    "backend": host.backend,
                    "interface": desired.wg_ifname,
                    "applied_revision": revision,
                    "machines": sorted(m.machine_id for m in desired.machines),
                    "wired": wired,
                    "peers": len(desired.wg_peers),
                    "reconciles": stats.runs,
                    "operations": stats.ops_applied,
                    "failures": stats.failures,
                    "last_error": stats.last_error,
                    "updated_at": time.time(),
                }
            )
            try:
                if host.backend in ("kernel", "wireguard-go"):  # not the tests' fake host
                    await client.report_host_status(
                        self.settings.name, backend=host.backend, applied_revision=revision
                    )
            except SixpnError as exc:
                log.warning("status report failed: %s", exc.message)
            # At most once a second, but a change of the WireGuard peers is told at once: on a
            # gateway, whoever created a peer waits for it (`wireguard create --wait`).
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the event's result
            # when a cancel comes with it (gh-86296), and this loop would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._peers_changed.wait()
            self._peers_changed.clear()
