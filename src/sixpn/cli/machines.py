"""`sixpn machines`: app instances, each with its own 6PN address on a host.

A machine is created on a named host (``--host``) or placed by the server on a host of a region
(``--region``); giving both asks for that host and checks it is in that region. Destroying keeps
the record (state ``destroyed``, listed with ``--all``) and frees the address.
"""

from __future__ import annotations

import click

from sixpn.cli import verbs
from sixpn.cli.common import Columns, call, echo_done, echo_list, json_option, org_option
from sixpn.client import Client
from sixpn.model.entities import Machine, MachineState

COLUMNS: Columns[Machine] = {
    "id": "id",
    "app": "app",
    "region": "region",
    "host": "host",
    "state": "state",
    "address": "address",
    "group": "process_group",
}


def _summary(verb: str, m: Machine) -> str:
    return f"{verb} machine {m.id} {m.address} (app {m.app}, host {m.host}, region {m.region})"


def _metadata(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", ctx, param)
        if key in out:
            raise click.BadParameter(f"key {key!r} given twice", ctx, param)
        out[key] = value
    return out


@click.group()
def machines() -> None:
    """Machines (app instances) of an organization."""


@machines.command("create")
@org_option
@click.option("--app", required=True, help="The machine's app.")
@click.option("--host", help="Run on this host.")
@click.option("--region", help="Let the server place it on a host of this region.")
@click.option(
    "--state",
    type=click.Choice([MachineState.STARTED.value, MachineState.STOPPED.value]),
    default=MachineState.STARTED.value,
    show_default=True,
)
@click.option("--process-group", default="app", show_default=True, help="Process group.")
@click.option(
    "--metadata",
    "metadata",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_metadata,
    help="Metadata entry (repeatable).",
)
@json_option
def create(
    org: str,
    app: str,
    host: str | None,
    region: str | None,
    state: str,
    process_group: str,
    metadata: dict[str, str],
    as_json: bool,
) -> None:
    """Create a machine of an app, on --host or in --region."""
    if host is None and region is None:
        raise click.UsageError("give --host HOST or --region REGION")
    machine = call(
        lambda c: c.create_machine(
            org,
            app,
            host=host,
            region=region,
            state=MachineState(state),
            process_group=process_group,
            metadata=metadata,
        )
    )
    echo_done(machine, as_json, _summary("created", machine))


@machines.command("list")
@org_option
@click.option("--app", help="Only this app's machines.")
@click.option("--all", "include_destroyed", is_flag=True, help="Include destroyed machines.")
@json_option
def list_(org: str, app: str | None, include_destroyed: bool, as_json: bool) -> None:
    """List the organization's machines."""
    found = call(lambda c: c.list_machines(org, app=app, include_destroyed=include_destroyed))
    echo_list(found, as_json, COLUMNS)


verbs.add_show(
    machines, Client.get_machine, "Show machine ID.", org=True, argument="machine_id", metavar="ID"
)


@machines.command("start")
@click.argument("machine_id", metavar="ID")
@org_option
def start(machine_id: str, org: str) -> None:
    """Start machine ID."""
    click.echo(_summary("started", call(lambda c: c.start_machine(org, machine_id))))


@machines.command("stop")
@click.argument("machine_id", metavar="ID")
@org_option
def stop(machine_id: str, org: str) -> None:
    """Stop machine ID (it keeps its address)."""
    click.echo(_summary("stopped", call(lambda c: c.stop_machine(org, machine_id))))


@machines.command("destroy")
@click.argument("machine_id", metavar="ID")
@org_option
def destroy(machine_id: str, org: str) -> None:
    """Destroy machine ID: it leaves the network; its record stays."""
    click.echo(_summary("destroyed", call(lambda c: c.destroy_machine(org, machine_id))))
