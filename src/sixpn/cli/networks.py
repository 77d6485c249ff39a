"""`sixpn networks`: an organization's named networks; each /48 is a unit of isolation."""

from __future__ import annotations

import click

from sixpn.cli import verbs
from sixpn.cli.common import Columns, call, echo_done, json_option, org_option
from sixpn.client import Client
from sixpn.core import addressing
from sixpn.model.entities import Network


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
    prefix = addressing.network_prefix(net.net_id)
    echo_done(net, as_json, f"created network {net.org}/{net.name} {prefix}")


COLUMNS: Columns[Network] = {
    "name": "name",
    "id": lambda n: f"{n.net_id:#x}",
    "prefix": lambda n: addressing.network_prefix(n.net_id),
    "created": "created_at",
}
verbs.add_list(
    networks, Client.list_networks, COLUMNS, "List the organization's networks.", org=True
)
verbs.add_show(networks, Client.get_network, "Show network NAME.", org=True)
verbs.add_delete(
    networks,
    Client.delete_network,
    "Delete network NAME (refused while apps or peers use it).",
    "deleted network {org}/{name}",
    org=True,
)
