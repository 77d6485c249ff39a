"""`sixpn hosts`: the fleet. Hosts join themselves (``sixpn agent --join-token``); here they are
listed, inspected and removed."""

from __future__ import annotations

import click

from sixpn.cli.common import call, echo_json, echo_table, json_option, show


@click.group()
def hosts() -> None:
    """Hosts of the fleet."""


@hosts.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List hosts."""
    found = call(lambda c: c.list_hosts())
    if as_json:
        echo_json(found)
        return
    rows = [[h.name, f"{h.host_id:#x}", h.region, h.endpoint, h.gateway] for h in found]
    echo_table(["name", "id", "region", "endpoint", "gateway"], rows)


@hosts.command("show")
@click.argument("name")
@json_option
def show_(name: str, as_json: bool) -> None:
    """Show host NAME."""
    show(call(lambda c: c.get_host(name)), as_json)


@hosts.command("delete")
@click.argument("name")
def delete(name: str) -> None:
    """Remove host NAME (refused while it runs machines or is a peer's gateway)."""
    call(lambda c: c.delete_host(name))
    click.echo(f"deleted host {name}")


@hosts.command("status")
@click.argument("name")
@json_option
def status(name: str, as_json: bool) -> None:
    """What host NAME last reported (WireGuard backend, applied revision)."""
    show(call(lambda c: c.get_host_status(name)), as_json)
