"""`sixpn server`: open the store, install the operator's tokens, serve the API with uvicorn.

Store: SQLite (``--db``, the default) or an etcd cluster (``--etcd``): any number of replicas
may serve one etcd store; they share nothing else (``runtime/stores.py``).

Admin token: given by the operator (``--admin-token``/``SIXPN_ADMIN_TOKEN``, installed hashed,
idempotently), or else generated on the first start of an empty store and printed once to
standard error. Join tokens may be given the same way (``--join-token``/``SIXPN_JOIN_TOKEN``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from sixpn.control import gwindex
from sixpn.control.api.app import create_app
from sixpn.control.context import Context
from sixpn.control.peerstatus import DEFAULT_EPHEMERAL_IDLE
from sixpn.control.service import Service
from sixpn.core.regions import RegionCatalogue
from sixpn.core.wireguard import split_endpoint
from sixpn.model.entities import Region, TokenKind
from sixpn.model.errors import InvalidInput, SixpnError
from sixpn.runtime.stores import StoreSpec, open_store
from sixpn.store import Store

log = logging.getLogger("sixpn.server")


@dataclass(frozen=True)
class ServerSettings:
    store: StoreSpec
    listen: str = "127.0.0.1:7180"
    admin_token: str | None = None
    join_tokens: tuple[str, ...] = ()
    regions_file: Path | None = None
    heartbeat_seconds: float = 10.0
    ephemeral_idle: float = DEFAULT_EPHEMERAL_IDLE


def load_regions(path: Path | None) -> RegionCatalogue:
    """The built-in catalogue, plus ``[[region]]`` tables (code, name, latitude, longitude)."""
    catalogue = RegionCatalogue.default()
    if path is None:
        return catalogue
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInput(f"regions file {path}: {exc}", field="regions") from exc
    extra = []
    for i, entry in enumerate(data.get("region", [])):
        try:
            extra.append(
                Region(
                    code=str(entry["code"]),
                    name=str(entry.get("name", entry["code"])),
                    latitude=float(entry["latitude"]),
                    longitude=float(entry["longitude"]),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(
                f"regions file {path}: region #{i + 1}: needs code, latitude and longitude ({exc})",
                field="regions",
            ) from exc
    return catalogue.with_extra(extra)


async def prepare(settings: ServerSettings) -> tuple[Service, Store]:
    regions = load_regions(settings.regions_file)
    store = await open_store(settings.store)
    service = Service(Context(store=store, regions=regions), ephemeral_idle=settings.ephemeral_idle)
    if settings.admin_token:
        await service.tokens.ensure(TokenKind.ADMIN, settings.admin_token, "operator's admin token")
    elif not await service.tokens.list(kind=TokenKind.ADMIN):
        _, secret = await service.tokens.create(TokenKind.ADMIN, description="first start")
        print(
            f"sixpn server: admin token (shown once, keep it safe): {secret}",
            file=sys.stderr,
            flush=True,
        )
    for secret in settings.join_tokens:
        await service.tokens.ensure(TokenKind.JOIN, secret, "operator's join token")
    indexed = await gwindex.build(store, service.ctx.clock())
    if indexed:
        log.info("indexed the keys and routes of %d peers on their gateways", indexed)
    return service, store


async def serve(settings: ServerSettings) -> None:
    uds = settings.listen[5:] if settings.listen.startswith("unix:") else None
    host, port = ("127.0.0.1", 0) if uds else split_endpoint(settings.listen, field="listen")
    service, store = await prepare(settings)
    app = create_app(service, heartbeat_seconds=settings.heartbeat_seconds)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        uds=uds,
        log_level="warning",
        lifespan="off",
        access_log=False,
        # Longer than any client's idle pool timeout: a client must never send on a connection
        # the server is closing at that moment ("server disconnected without a response").
        timeout_keep_alive=75,
    )
    server = uvicorn.Server(config)
    # uvicorn waits for open responses on shutdown; change streams never end by themselves.
    config.timeout_graceful_shutdown = 1
    log.info("serving on %s (store %s)", settings.listen, settings.store.describe())
    sweeper = asyncio.create_task(expire_ephemeral(service), name="ephemeral-expiry")
    try:
        await server.serve()
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await app.state.fanout.close()
        await store.close()


async def expire_ephemeral(service: Service) -> None:
    """Remove idle ephemeral peers (SPEC 5), checking a few times per idle time (at most every
    30 s). Every replica may run this: a removal is a compare-and-swap, done once."""
    every = min(30.0, max(1.0, service.peer_status.ephemeral_idle / 4))
    while True:
        await asyncio.sleep(every)
        try:
            await service.peer_status.expire_idle()
        except SixpnError as exc:  # the store is busy or away: try again next time
            log.warning("expiring ephemeral peers: %s", exc.message)
