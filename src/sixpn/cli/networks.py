"""`sixpn networks`: an organization's named networks; each /48 is a unit of isolation."""

from __future__ import annotations

import click

from sixpn.cli.common import call, echo_json, echo_table, json_option, org_option, show, when
from sixpn.core import addressing


@click.group()
def networks() -> None:
    """Networks of an organization (every organization has 'default')."""


@networks.command("create")
@click.argument("name")
@org_option
@json_option
def create(name: str, org: str, as_json: bool) -> None:
    """Create network NAME in the organization."""
    net = call(lambda c: c.create_network(org, name))
    if as_json:
        echo_json(net)
    else:
        prefix = addressing.network_prefix(net.net_id)
        click.echo(f"created network {net.org}/{net.name} {prefix}")


@networks.command("list")
@org_option
@json_option
def list_(org: str, as_json: bool) -> None:
    """List the organization's networks."""
    found = call(lambda c: c.list_networks(org))
    if as_json:
        echo_json(found)
        return
    rows = [
        [n.name, f"{n.net_id:#x}", addressing.network_prefix(n.net_id), when(n.created_at)]
        for n in found
    ]
    echo_table(["name", "id", "prefix", "created"], rows)


@networks.command("show")
@click.argument("name")
@org_option
@json_option
def show_(name: str, org: str, as_json: bool) -> None:
    """Show network NAME."""
    show(call(lambda c: c.get_network(org, name)), as_json)


@networks.command("delete")
@click.argument("name")
@org_option
def delete(name: str, org: str) -> None:
    """Delete network NAME (refused while apps or peers use it)."""
    call(lambda c: c.delete_network(org, name))
    click.echo(f"deleted network {org}/{name}")
