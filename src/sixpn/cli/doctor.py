"""`sixpn doctor`: checks an operator runs on a host.

``sixpn doctor isolation`` compares the policy the control plane implies for this host (the
agent's desired state: forwarding pairs, machine sources, routed peerings, the fixed nftables
rules, routes, machine wiring, WireGuard peers) with what the kernel actually holds, and lists
every difference as the operation that would repair it. Exit 0: no difference; 1: differences (or a
failure).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import click

from sixpn.cli.agent import DEFAULT_DATA_DIR


@click.group("doctor")
def doctor() -> None:
    """Check this host's fabric against the control plane."""


def describe(op: object) -> str:
    from sixpn.core import plan as p

    match op:
        case p.AddPairs(networks=nets):
            return "nftables: forwarding missing for " + ", ".join(sorted(map(str, nets)))
        case p.RemovePairs(networks=nets):
            return "nftables: forwarding allowed that should not be for " + ", ".join(
                sorted(map(str, nets))
            )
        case p.AddSources(sources=sources):
            return "nftables: machine sources missing (its packets are dropped): " + ", ".join(
                sorted(f"{s.ifname} {s.prefix}" for s in sources)
            )
        case p.RemoveSources(sources=sources):
            return "nftables: machine sources allowed that should not be: " + ", ".join(
                sorted(f"{s.ifname} {s.prefix}" for s in sources)
            )
        case p.AddPeered(peerings=peerings):
            return "nftables: routed peering missing (its packets are dropped): " + ", ".join(
                sorted(f"{x.network} . {x.prefix}" for x in peerings)
            )
        case p.RemovePeered(peerings=peerings):
            return "nftables: routed peering allowed that should not be: " + ", ".join(
                sorted(f"{x.network} . {x.prefix}" for x in peerings)
            )
        case p.ReplaceNftTable():
            return (
                "nftables: table inet sixpn is missing or its fixed rules were changed (or IPv6 "
                "forwarding is off, or the routed peering rule is missing)"
            )
        case p.AddRoute(route=r):
            return f"route missing: {_route(r)}"
        case p.RemoveRoute(route=r):
            return f"route that should not be there: {_route(r)}"
        case p.WireMachine(link=link):
            return f"machine {link.machine_id} not (fully) wired ({link.address})"
        case p.UnwireMachine(link=link):
            return f"machine {link.machine_id} wired but should not be ({link.address})"
        case p.SetPeers(peers=peers):
            keys = _some(sorted(f"{peer.public_key[:12]}..." for peer in peers))
            return f"WireGuard peers missing or different ({len(peers)}): {keys}"
        case p.RemovePeers(public_keys=public_keys):
            keys = _some(sorted(f"{key[:12]}..." for key in public_keys))
            return f"WireGuard peers that should not be there ({len(public_keys)}): {keys}"
        case p.AddAddress(address=a):
            return f"service address missing on lo: {a}"
        case p.RemoveAddress(address=a):
            return f"service address that should not be there: {a}"
        case p.EnsureWg(ifname=name):
            return f"WireGuard interface {name} missing or misconfigured"
        case p.RemoveWg(ifname=name):
            return f"WireGuard interface {name} should not be there"
        case p.RemoveStrayLink(ifname=name):
            return f"machine link {name} records no machine (a wiring cut short): removed next"
    return str(op)


def _route(route: object) -> str:
    from sixpn.core.hoststate import MAIN_TABLE, Route

    assert isinstance(route, Route)
    table = "" if route.table == MAIN_TABLE else f" table {route.table}"
    return f"{route.prefix} dev {route.ifname}{table}"


def _some(names: list[str], shown: int = 10) -> str:
    """The first ``shown`` names and how many more: a gateway may miss thousands of peers."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


@doctor.command("isolation")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    help="The agent's data directory (who this host is, its credential).",
)
def isolation(data_dir: Path) -> None:
    """Compare the implied isolation policy with the kernel's ruleset (run on the host)."""
    from sixpn.agent.datadir import DataDir
    from sixpn.agent.linux.host import LinuxHost
    from sixpn.agent.linux.wg import detect_backend
    from sixpn.client import Client
    from sixpn.core.desired import desired_state
    from sixpn.core.plan import plan
    from sixpn.core.wireguard import split_endpoint
    from sixpn.view import View

    data = DataDir(data_dir)
    identity, credential = data.identity(), data.credential()
    if identity is None or credential is None:
        raise click.UsageError(f"{data_dir}: no agent state here (host.json, credential)")

    async def snapshot_view() -> View:
        ca = os.environ.get("SIXPN_CA") or None  # the agent's CA (also `sixpn --ca FILE`)
        async with Client(str(identity["control"]), credential, ca=ca) as client:
            return View.from_snapshot(await client.snapshot())

    view = asyncio.run(snapshot_view())
    me = view.hosts.get(str(identity["name"]))
    if me is None:
        raise click.ClickException(f"host '{identity['name']}' is not in the control plane")
    ifname = str(identity.get("wg_ifname") or "")
    desired = desired_state(
        me,
        view.hosts,
        view.machines.values(),
        view.peers.values(),
        listen_port=split_endpoint(me.endpoint)[1],
        wg=ifname or None,
    )
    actual = LinuxHost(desired.wg_ifname or ifname, data.key_file, detect_backend()).read()
    differences = plan(actual, desired)
    if not differences:
        click.echo(
            f"isolation: host '{me.name}' matches the control plane at revision "
            f"{view.revision} ({len(desired.pairs)} networks, {len(desired.machines)} machines)"
        )
        return
    click.echo(
        f"isolation: host '{me.name}' differs from the control plane (revision {view.revision}):"
    )
    for op in differences:
        click.echo(f"  - {describe(op)}")
    sys.exit(1)
