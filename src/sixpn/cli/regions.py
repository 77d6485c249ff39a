"""`sixpn regions`: the region catalogue the server places machines and gateways by."""

from __future__ import annotations

import click

from sixpn.cli import verbs
from sixpn.cli.common import Columns
from sixpn.client import Client
from sixpn.model.entities import Region


@click.group()
def regions() -> None:
    """Regions."""


COLUMNS: Columns[Region] = {
    "code": "code",
    "name": "name",
    "latitude": lambda r: f"{r.latitude:.4f}",
    "longitude": lambda r: f"{r.longitude:.4f}",
}
verbs.add_list(regions, Client.list_regions, COLUMNS, "List the regions the server knows.")
