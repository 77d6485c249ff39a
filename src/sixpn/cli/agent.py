"""`sixpn agent`: run the host agent, tear down what it made, or show its status."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from sixpn.cli.common import ca_option

DEFAULT_DATA_DIR = Path("/var/lib/sixpn/agent")


@click.group("agent", invoke_without_command=True)
@click.option(
    "--control",
    envvar="SIXPN_API",
    help="Control plane URL, or several replicas' URLs separated by commas.",
)
@ca_option
@click.option("--join-token", envvar="SIXPN_JOIN_TOKEN", help="Join token (first start only).")
@click.option("--name", help="This host's name (a DNS label).")
@click.option("--region", help="This host's region code.")
@click.option("--endpoint", help="ADDRESS:PORT where other hosts and peers reach WireGuard.")
@click.option("--gateway", is_flag=True, help="Serve WireGuard peers (laptops, VPCs).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
)
@click.option("--resync", default=30.0, show_default=True, help="Full resync period, seconds.")
@click.option(
    "--peer-report",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="A gateway's period for reporting its peers' counters, seconds.",
)
@click.option("--dns-port", default=53, show_default=True, hidden=True)
@click.option("--upstream", "upstreams", multiple=True, help="DNS upstream ADDRESS[:PORT].")
@click.option("--metrics", help="ADDRESS:PORT to serve Prometheus metrics on.")
@click.option(
    "--netns-name",
    "netns_template",
    help="The orchestrator's namespace of a machine, e.g. 'vm-{id}': used when it exists "
    "in /var/run/netns, else the agent makes sixpn-m-<id>.",
)
@click.option("--wg-ifname", hidden=True, help="WireGuard interface name (the lab's).")
@click.option("--teardown", is_flag=True, help="Remove everything the agent made, and exit.")
@click.pass_context
def agent(
    ctx: click.Context,
    control: str | None,
    ca: Path | None,
    join_token: str | None,
    name: str | None,
    region: str | None,
    endpoint: str | None,
    gateway: bool,
    data_dir: Path,
    resync: float,
    peer_report: float,
    dns_port: int,
    upstreams: tuple[str, ...],
    metrics: str | None,
    netns_template: str | None,
    wg_ifname: str | None,
    teardown: bool,
) -> None:
    """Run the host agent (one per host)."""
    if ctx.invoked_subcommand is not None:
        return
    from sixpn.agent.agent import Agent, AgentSettings
    from sixpn.agent.datadir import DataDir
    from sixpn.agent.linux.host import LinuxHost
    from sixpn.agent.linux.wg import detect_backend
    from sixpn.core.hoststate import wg_ifname as default_ifname

    data = DataDir(data_dir)
    if teardown:
        identity = data.identity()
        if identity is None:
            raise click.UsageError(f"{data_dir}: no agent state here (host.json); nothing to do")
        ifname = identity.get("wg_ifname") or default_ifname(int(identity["host_id"]))
        LinuxHost(str(ifname), data.key_file, detect_backend()).teardown()
        click.echo(f"removed what the agent of host '{identity['name']}' made")
        return
    if not (control and name and region and endpoint):
        given = (("--control", control), ("--name", name), ("--region", region))
        missing = [opt for opt, v in (*given, ("--endpoint", endpoint)) if not v]
        raise click.UsageError(f"missing {', '.join(missing)}")
    backend = detect_backend()
    settings = AgentSettings(
        control=control,
        name=name,
        region=region,
        endpoint=endpoint,
        data_dir=data_dir,
        join_token=join_token,
        gateway=gateway,
        resync_seconds=resync,
        peer_report_seconds=peer_report,
        dns_listen=("fdaa::3", dns_port),
        upstreams=upstreams,
        wg_ifname=wg_ifname,
        metrics=metrics,
        netns_template=netns_template,
        ca=ca,
    )
    click.echo(f"sixpn agent: host '{name}', WireGuard backend: {backend}", err=True)
    runner = Agent(settings, lambda ifname, key: LinuxHost(ifname, key, backend))
    asyncio.run(runner.run())


@agent.command("status")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(data_dir: Path, as_json: bool) -> None:
    """The agent's last reconcile and its WireGuard peers as the kernel sees them."""
    from sixpn.agent.datadir import DataDir
    from sixpn.agent.linux.wg import peer_stats

    found = DataDir(data_dir).status()
    if found is None:
        raise click.ClickException(f"{data_dir}: the agent has not reconciled yet (no status.json)")
    found["wireguard_peers"] = peer_stats(found["interface"]) if found.get("interface") else []
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    for key in ("host", "backend", "interface", "applied_revision", "reconciles", "failures"):
        click.echo(f"{key:18} {found.get(key)}")
    click.echo(f"{'machines':18} {len(found.get('machines', []))}")
    for peer in found["wireguard_peers"]:
        click.echo(
            f"  peer {peer.get('public_key', '')[:12]}... endpoint {peer.get('endpoint')} "
            f"handshake {peer.get('latest_handshake')} rx {peer.get('rx_bytes')} "
            f"tx {peer.get('tx_bytes')}"
        )
