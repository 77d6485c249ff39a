"""`sixpn hosts`: the fleet. Hosts join themselves (``sixpn agent --join-token``); here they are
listed, inspected and removed."""

from __future__ import annotations

import click

from sixpn.cli import verbs
from sixpn.cli.common import Columns
from sixpn.client import Client
from sixpn.model.entities import Host


@click.group()
def hosts() -> None:
    """Hosts of the fleet."""


COLUMNS: Columns[Host] = {
    "name": "name",
    "id": lambda h: f"{h.host_id:#x}",
    "region": "region",
    "endpoint": "endpoint",
    "gateway": "gateway",
}
verbs.add_list(hosts, Client.list_hosts, COLUMNS, "List hosts.")
verbs.add_show(hosts, Client.get_host, "Show host NAME.")
REMOVE = "Remove host NAME (refused while it runs machines or is a peer's gateway)."
verbs.add_delete(hosts, Client.delete_host, REMOVE, "deleted host {name}")
verbs.add_show(
    hosts,
    Client.get_host_status,
    "What host NAME last reported (WireGuard backend, applied revision).",
    name="status",
)
