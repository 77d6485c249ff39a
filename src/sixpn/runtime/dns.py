"""`sixpn dns`: a standalone DNS server following a control plane (the agent embeds the same).

Wiring only: the region catalogue comes from the control plane (retried until it answers), the
zone from its snapshot and change stream, the upstreams from the command line or resolv.conf.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server

from sixpn.client import Client
from sixpn.core.dnszone import ZoneSettings
from sixpn.core.regions import RegionCatalogue, great_circle_km
from sixpn.core.wireguard import split_endpoint
from sixpn.dns.forward import Forwarder, upstreams_from_resolv_conf
from sixpn.dns.metrics import DnsCollector
from sixpn.dns.server import DnsServer
from sixpn.dns.zone import Zone
from sixpn.follower import Follower
from sixpn.model.entities import Region
from sixpn.model.errors import InvalidInput, SixpnError

log = logging.getLogger("sixpn.dns")


@dataclass(frozen=True)
class DnsSettings:
    control: str
    token: str
    listen: tuple[str, ...] = ("[fdaa::3]:53",)
    region: str | None = None
    upstreams: tuple[str, ...] = ()  # ADDRESS[:PORT]; empty: /etc/resolv.conf
    metrics: str | None = None
    ttl: int = 5
    api_in_network: bool = False
    ca: Path | None = None  # the CA of an https control plane; None: the system's trust store


def zone_settings(regions: list[Region], here: str | None, *, api_in_network: bool) -> ZoneSettings:
    catalogue = RegionCatalogue(regions)
    origin = catalogue.get(here) if here else None
    by_code = {r.code: r for r in regions}

    def distance(code: str) -> float:
        other = by_code.get(code)
        if origin is None or other is None:
            return 0.0 if origin is None else float("inf")
        return great_circle_km(origin, other)

    return ZoneSettings(frozenset(by_code), distance, api_in_network=api_in_network)


def parse_upstream(text: str) -> tuple[str, int]:
    if text.count(":") > 1 and not text.startswith("["):
        return text, 53  # a bare IPv6 address
    if ":" in text:
        return split_endpoint(text, field="upstream")
    return text, 53


async def fetch_regions(client: Client) -> list[Region]:
    delay = 0.1
    while True:
        try:
            return await client.list_regions()
        except SixpnError as exc:
            if 400 <= exc.status < 500:
                raise
            log.warning("region catalogue: %s; retrying", exc.message)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def run_dns(settings: DnsSettings) -> None:
    listen = [split_endpoint(a, field="listen") for a in settings.listen]
    if settings.upstreams:
        upstreams = [parse_upstream(u) for u in settings.upstreams]
    else:
        upstreams = upstreams_from_resolv_conf()
    if settings.ttl < 0:
        raise InvalidInput("ttl: must be >= 0", field="ttl")
    async with Client(settings.control, settings.token, ca=settings.ca) as client:
        regions = await fetch_regions(client)
        if settings.region is not None:
            RegionCatalogue(regions).get(settings.region)
        zone = Zone(
            zone_settings(regions, settings.region, api_in_network=settings.api_in_network),
            ttl=settings.ttl,
            neg_ttl=settings.ttl,
        )
        forwarder = Forwarder(upstreams)
        server = DnsServer(zone, forwarder)
        await server.start(listen)
        if settings.metrics:
            host, port = split_endpoint(settings.metrics, field="metrics")
            registry = CollectorRegistry()
            registry.register(DnsCollector(server))
            start_http_server(port, host, registry=registry)
        feed = Follower(
            client, on_load=zone.load, on_change=lambda _view, deltas: zone.apply(deltas)
        )
        task = asyncio.create_task(feed.run())
        loaded = asyncio.create_task(feed.loaded.wait())
        try:
            await asyncio.wait({task, loaded}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()  # the feed failed before its first snapshot: say why
            server.ready = True
            await task
        finally:
            loaded.cancel()
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await server.close()
            await forwarder.close()
