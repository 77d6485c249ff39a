"""`sixpn dns`: run a standalone `.internal` DNS server that follows a control plane."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from sixpn.cli.common import ca_option


@click.command("dns")
@click.option(
    "--control",
    envvar="SIXPN_API",
    required=True,
    help="Control plane URL, or several replicas' URLs separated by commas.",
)
@ca_option
@click.option(
    "--token", envvar="SIXPN_TOKEN", required=True, help="Host credential or admin token."
)
@click.option(
    "--listen",
    multiple=True,
    default=("[fdaa::3]:53",),
    show_default=True,
    help="ADDRESS:PORT to serve UDP and TCP on (repeatable).",
)
@click.option("--region", help="This server's region: the origin of top<N>.nearest.of names.")
@click.option(
    "--upstream",
    "upstreams",
    multiple=True,
    help="Resolver for names outside .internal, ADDRESS[:PORT] (repeatable; "
    "default: the nameservers of /etc/resolv.conf).",
)
@click.option("--metrics", help="ADDRESS:PORT to serve Prometheus metrics on.")
@click.option("--ttl", default=5, show_default=True, help="TTL of answers, seconds.")
@click.option("--api-in-network", is_flag=True, help="Answer _api.internal with <net48>::3.")
def dns(
    control: str,
    ca: Path | None,
    token: str,
    listen: tuple[str, ...],
    region: str | None,
    upstreams: tuple[str, ...],
    metrics: str | None,
    ttl: int,
    api_in_network: bool,
) -> None:
    """Serve .internal names (and forward the rest) from the control plane's state."""
    from sixpn.runtime.dns import DnsSettings, run_dns

    settings = DnsSettings(
        control=control,
        token=token,
        listen=listen,
        region=region,
        upstreams=upstreams,
        metrics=metrics,
        ttl=ttl,
        api_in_network=api_in_network,
        ca=ca,
    )
    asyncio.run(run_dns(settings))
