"""`sixpn apps`: an organization's apps; an app belongs to one network, chosen at creation."""

from __future__ import annotations

import click

from sixpn.cli.common import call, echo_json, echo_table, json_option, org_option, show, when


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
    if as_json:
        echo_json(app)
    else:
        click.echo(f"created app {app.org}/{app.name} (network {app.network})")


@apps.command("list")
@org_option
@json_option
def list_(org: str, as_json: bool) -> None:
    """List the organization's apps."""
    found = call(lambda c: c.list_apps(org))
    if as_json:
        echo_json(found)
    else:
        rows = [[a.name, a.network, when(a.created_at)] for a in found]
        echo_table(["name", "network", "created"], rows)


@apps.command("show")
@click.argument("name")
@org_option
@json_option
def show_(name: str, org: str, as_json: bool) -> None:
    """Show app NAME."""
    show(call(lambda c: c.get_app(org, name)), as_json)


@apps.command("delete")
@click.argument("name")
@org_option
def delete(name: str, org: str) -> None:
    """Delete app NAME (with its destroyed machines' records)."""
    call(lambda c: c.delete_app(org, name))
    click.echo(f"deleted app {org}/{name}")
