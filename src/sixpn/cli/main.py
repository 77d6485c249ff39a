"""The `sixpn` entry point: the root group, error handling and exit codes.

Exit codes: 0 success, 1 failure (the API refused, the server is unreachable, ...), 2 usage
errors (a missing or malformed argument, found by click or by the API's validation of a field
the user typed).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import click

import sixpn
from sixpn.cli.agent import agent
from sixpn.cli.apps import apps
from sixpn.cli.dns import dns
from sixpn.cli.doctor import doctor
from sixpn.cli.forward import forward
from sixpn.cli.hosts import hosts
from sixpn.cli.lab import lab
from sixpn.cli.machines import machines
from sixpn.cli.networks import networks
from sixpn.cli.orgs import orgs
from sixpn.cli.regions import regions
from sixpn.cli.store import etcd_options, etcd_settings, store
from sixpn.cli.tokens import tokens
from sixpn.cli.wireguard import wireguard
from sixpn.model.errors import InvalidInput, SixpnError
from sixpn.runtime import DEFAULT_MAX_CONNECTIONS


class Group(click.Group):
    """Turns sixpn errors into a one-line message and the right exit code."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except InvalidInput as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(2)
        except SixpnError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(sixpn.__version__, prog_name="sixpn")
@click.option(
    "--ca",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Trust only this CA (PEM) for an https:// control plane; sets $SIXPN_CA for every "
    "command (default: the system's trust store).",
)
def cli(ca: Path | None) -> None:
    """sixpn: private IPv6 networks (6PN) for every organization on a fleet of hosts."""
    logging.basicConfig(
        level=os.environ.get("SIXPN_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if ca is not None:
        # The environment, not a context object: every command builds its client from it
        # (Client.from_env), and `agent`/`dns` read $SIXPN_CA as their own --ca.
        os.environ["SIXPN_CA"] = str(ca)


@cli.command()
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default="/var/lib/sixpn/server.db",
    show_default=True,
    envvar="SIXPN_DB",
    help="SQLite store file (created if missing); not with --etcd.",
)
@click.option(
    "--etcd",
    envvar="SIXPN_ETCD",
    metavar="URL[,URL...]",
    help="Run on this etcd cluster instead of SQLite (several replicas may share it).",
)
@etcd_options
@click.option(
    "--listen",
    default="127.0.0.1:7180",
    show_default=True,
    envvar="SIXPN_LISTEN",
    help="ADDRESS:PORT to serve the API on ([::]:7180 for every address), or unix:/PATH.",
)
@click.option(
    "--admin-token",
    envvar="SIXPN_ADMIN_TOKEN",
    help="Install this admin token (else one is generated on first start and printed once).",
)
@click.option(
    "--join-token",
    "join_tokens",
    multiple=True,
    envvar="SIXPN_JOIN_TOKEN",
    help="Install this join token for hosts (repeatable).",
)
@click.option(
    "--regions",
    "regions_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML file of extra regions: [[region]] code, name, latitude, longitude.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="SIXPN_TLS_CERT",
    help="Serve HTTPS with this PEM certificate (chain); with --tls-key.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="SIXPN_TLS_KEY",
    help="The certificate's PEM private key (unencrypted).",
)
@click.option(
    "--insecure-plain-http",
    is_flag=True,
    envvar="SIXPN_INSECURE_PLAIN_HTTP",
    help="Allow plain HTTP on a non-loopback address (tokens cross the network in clear).",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=16),
    default=DEFAULT_MAX_CONNECTIONS,
    show_default=True,
    envvar="SIXPN_MAX_CONNECTIONS",
    help="Connections and requests at once; past it new requests are answered 503.",
)
@click.option("--heartbeat", default=10.0, show_default=True, help="Change-stream heartbeat, s.")
@click.option(
    "--ephemeral-idle",
    type=click.FloatRange(min=1.0),
    default=600.0,
    show_default=True,
    envvar="SIXPN_EPHEMERAL_IDLE",
    help="Remove an ephemeral peer after this many seconds with no handshake or packet.",
)
@click.pass_context
def server(
    ctx: click.Context,
    db: Path,
    etcd: str | None,
    etcd_prefix: str,
    etcd_cacert: Path | None,
    etcd_cert: Path | None,
    etcd_key: Path | None,
    etcd_user: str | None,
    listen: str,
    admin_token: str | None,
    join_tokens: tuple[str, ...],
    regions_file: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    insecure_plain_http: bool,
    max_connections: int,
    heartbeat: float,
    ephemeral_idle: float,
) -> None:
    """Run the control plane (HTTP API over the store)."""
    from sixpn.runtime.server import ServerSettings, serve
    from sixpn.runtime.stores import StoreSpec, endpoints

    if etcd is None:
        store = StoreSpec(db=db)
    else:
        if ctx.get_parameter_source("db") not in (None, click.core.ParameterSource.DEFAULT):
            raise click.UsageError("--db and --etcd: one store or the other")
        cluster = endpoints(etcd, field="--etcd")
        options = etcd_settings(cluster, etcd_prefix, etcd_cacert, etcd_cert, etcd_key, etcd_user)
        store = StoreSpec(etcd=options)
    settings = ServerSettings(
        store=store,
        listen=listen,
        admin_token=admin_token,
        join_tokens=join_tokens,
        regions_file=regions_file,
        heartbeat_seconds=heartbeat,
        ephemeral_idle=ephemeral_idle,
        tls_cert=tls_cert,
        tls_key=tls_key,
        insecure_plain_http=insecure_plain_http,
        max_connections=max_connections,
    )
    asyncio.run(serve(settings))


for _noun in (
    orgs,
    networks,
    apps,
    machines,
    hosts,
    tokens,
    regions,
    wireguard,
    dns,
    agent,
    doctor,
    lab,
    forward,
    store,
):
    cli.add_command(_noun)


def main() -> None:
    cli(prog_name="sixpn")
