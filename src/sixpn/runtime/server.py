"""`sixpn server`: open the store, install the operator's tokens, serve the API with uvicorn.

Store: SQLite (``--db``, the default) or an etcd cluster (``--etcd``): any number of replicas
may serve one etcd store; they share nothing else (``runtime/stores.py``).

Admin token: given by the operator (``--admin-token``/``SIXPN_ADMIN_TOKEN``, installed hashed,
idempotently), or else generated on the first start of an empty store and printed once to
standard error. Join tokens may be given the same way (``--join-token``/``SIXPN_JOIN_TOKEN``).

Transport (issue 17): with ``--tls-cert``/``--tls-key`` the API is HTTPS; the files are checked
before the store is opened or anything listens (``control/tlsfiles.py``). Plain HTTP is served
only where nobody else can read it: a loopback address (127.0.0.0/8, ::1, ``localhost``) or a
Unix socket. Anywhere else the server refuses to start, unless the operator says
``--insecure-plain-http`` (a TLS-terminating proxy on another machine, a trusted private link):
then it starts with a loud warning, since every request carries a bearer token.

Bounds (SPEC 10): bodies over 1 MiB are answered 413 (``control/api/limits.py``); at most
``max_connections`` connections and requests at once, past which new requests are answered 503
at once instead of queueing without bound; the soft limit on open files is raised to the hard
one so that many connections end in that 503, not in ``accept()`` failing with EMFILE. The
access log is off: no request line (with its query string) or header is ever logged, so no
token reaches the log by that way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import resource
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from sixpn.control import gwindex
from sixpn.control.api.app import create_app
from sixpn.control.api.auth import MAX_SECRET
from sixpn.control.api.limits import MAX_BODY_BYTES
from sixpn.control.context import Context
from sixpn.control.peerstatus import DEFAULT_EPHEMERAL_IDLE
from sixpn.control.service import Service
from sixpn.control.tlsfiles import check_server_files
from sixpn.core.regions import RegionCatalogue
from sixpn.core.wireguard import split_endpoint
from sixpn.model.entities import Region, TokenKind
from sixpn.model.errors import InvalidInput, SixpnError
from sixpn.runtime import DEFAULT_MAX_CONNECTIONS
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
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure_plain_http: bool = False  # the operator's explicit opt-out of the rule above
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_body_bytes: int = MAX_BODY_BYTES

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def is_local(listen: str) -> bool:
    """Whether ``listen`` (``unix:/PATH`` or ``ADDRESS:PORT``) is reachable only from this
    machine: a Unix socket or a loopback address."""
    if listen.startswith("unix:"):
        return True
    host, _ = split_endpoint(listen, field="listen")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_transport(settings: ServerSettings) -> None:
    """The TLS files are usable, and plain HTTP is only served locally (or explicitly allowed);
    ``InvalidInput`` naming the flag otherwise. Runs before anything is opened or listens."""
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise InvalidInput("--tls-cert and --tls-key go together", field="--tls-cert")
    if settings.tls_cert is not None and settings.tls_key is not None:
        # (on a Unix socket too: clients then say https+unix:/PATH, and check the certificate
        # against the name "sixpn"; the lab serves its API so, with its own CA)
        check_server_files(settings.tls_cert, settings.tls_key)
        return
    if is_local(settings.listen):
        return
    if not settings.insecure_plain_http:
        raise InvalidInput(
            f"--listen {settings.listen}: refusing plain HTTP on an address other hosts can "
            "reach: every request carries a token. Give --tls-cert and --tls-key, listen on "
            "127.0.0.1 behind a TLS proxy, or pass --insecure-plain-http if the network is "
            "trusted",
            field="--listen",
        )
    log.warning(
        "INSECURE: serving plain HTTP on %s (--insecure-plain-http): tokens cross the network "
        "readable by anyone on the path; use --tls-cert/--tls-key or a TLS proxy",
        settings.listen,
    )


def raise_open_files_limit() -> None:
    """The soft limit on open files up to the hard one: each connection is a file, and the
    common soft default (1024) would make ``accept()`` fail long before ``max_connections``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


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
    for option, secret in [("--admin-token", settings.admin_token or "")] + [
        ("--join-token", t) for t in settings.join_tokens
    ]:
        if len(secret) > MAX_SECRET:  # the API would refuse it unread (control/api/auth.py)
            raise InvalidInput(f"{option}: at most {MAX_SECRET} characters", field="token")
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
    check_transport(settings)
    uds = settings.listen[5:] if settings.listen.startswith("unix:") else None
    host, port = ("127.0.0.1", 0) if uds else split_endpoint(settings.listen, field="listen")
    raise_open_files_limit()
    service, store = await prepare(settings)
    app = create_app(
        service,
        heartbeat_seconds=settings.heartbeat_seconds,
        max_body_bytes=settings.max_body_bytes,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        uds=uds,
        log_level="warning",
        lifespan="off",
        access_log=False,  # request lines carry query strings: nothing of a request is logged
        # Longer than any client's idle pool timeout: a client must never send on a connection
        # the server is closing at that moment ("server disconnected without a response").
        timeout_keep_alive=75,
        limit_concurrency=settings.max_connections,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )
    server = uvicorn.Server(config)
    # uvicorn waits for open responses on shutdown; change streams never end by themselves.
    config.timeout_graceful_shutdown = 1
    scheme = "https" if settings.tls else "http"
    log.info("serving %s on %s (store %s)", scheme, settings.listen, settings.store.describe())
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
