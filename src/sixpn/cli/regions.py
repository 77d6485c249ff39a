"""`sixpn regions`: the region catalogue the server places machines and gateways by."""

from __future__ import annotations

import click

from sixpn.cli.common import call, echo_json, echo_table, json_option


@click.group()
def regions() -> None:
    """Regions."""


@regions.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List the regions the server knows."""
    found = call(lambda c: c.list_regions())
    if as_json:
        echo_json(found)
        return
    rows = [[r.code, r.name, f"{r.latitude:.4f}", f"{r.longitude:.4f}"] for r in found]
    echo_table(["code", "name", "latitude", "longitude"], rows)
