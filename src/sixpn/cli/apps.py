"""`sixpn apps`: an organization's apps; an app belongs to one network, chosen at creation."""

from __future__ import annotations

import click

from sixpn.cli import verbs
from sixpn.cli.common import Columns, call, echo_done, json_option, org_option
from sixpn.client import Client
from sixpn.model.entities import App


@click.group()
def apps() -> None:
    """Apps of an organization."""


@apps.command("create")
@click.argument("name")
@org_option
@click.option(
    "--network", default="default", show_default=True, help="The app's network (never moved)."
)
@json_option
def create(name: str, org: str, network: str, as_json: bool) -> None:
    """Create app NAME in the organization."""
    app = call(lambda c: c.create_app(org, name, network))
    echo_done(app, as_json, f"created app {app.org}/{app.name} (network {app.network})")


COLUMNS: Columns[App] = {"name": "name", "network": "network", "created": "created_at"}
verbs.add_list(apps, Client.list_apps, COLUMNS, "List the organization's apps.", org=True)
verbs.add_show(apps, Client.get_app, "Show app NAME.", org=True)
verbs.add_delete(
    apps,
    Client.delete_app,
    "Delete app NAME (with its destroyed machines' records).",
    "deleted app {org}/{name}",
    org=True,
)
