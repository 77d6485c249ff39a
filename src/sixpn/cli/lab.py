"""``sixpn lab``: the whole fabric on one Linux machine (SPEC 8; docs/lab.md).

``up`` checks the topology first (a bad file builds nothing, exit 2), then builds it and prints
each step; whatever interrupts it (Ctrl-C, SIGTERM, a failing step) takes down what was built
before the command exits. ``down`` removes everything ``lab.json`` names, also after a crash.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import click

from sixpn.lab import laptop
from sixpn.lab.fabric import Lab, LabError
from sixpn.lab.inventory import collect, resolve
from sixpn.lab.populate import populate
from sixpn.lab.topology import Topology, default, describe, load

DEFAULT_DIR = Path("/var/lib/sixpn-lab")
NEEDED = ("ip", "nft", "wg", "nsenter", "sysctl")


@click.group()
@click.option(
    "--dir",
    "lab_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    envvar="SIXPN_LAB_DIR",
    help="The lab's own directory (state, store, logs); one lab per directory.",
)
@click.pass_context
def lab(ctx: click.Context, lab_dir: Path) -> None:
    """A complete fabric on this machine: hosts and machines as network namespaces (root)."""
    ctx.obj = lab_dir.absolute()
    if os.environ.get("SIXPN_LOG_LEVEL", "").upper() != "DEBUG":
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise


def _lab(ctx: click.Context, *, up: bool = True) -> Lab:
    the_lab = Lab(ctx.obj)
    if up and the_lab.state is None:
        raise LabError(f"no lab is up in {ctx.obj} (sixpn lab up)")
    return the_lab


def _preflight() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, WireGuard, nftables)")
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing:
        raise LabError(f"missing tools: {', '.join(missing)} (make demo installs them)")


class Interrupted:
    """The Ctrl-C or SIGTERM a command got, remembered: the exception a signal raises can be
    lost (raised in a finalizer, Python prints "Exception ignored" and goes on), and a build
    that lost it would finish and exit 0. :meth:`check` raises it again at the next step."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def check(self) -> None:
        if self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is not None:
            raise SystemExit(128 + self.signum)

    def say(self, text: str) -> None:
        """A step's line, after the check (each step is where an interrupted build stops)."""
        self.check()
        click.echo(text)


@contextmanager
def _signals_as_exit() -> Iterator[Interrupted]:
    """SIGTERM unwinds like Ctrl-C, so the cleanup runs; forked helpers just exit (pyroute2
    forks to create namespaces: such a child must not run the parent's cleanup). Either is
    remembered (:class:`Interrupted`): a command that lost its exception still exits non-zero."""
    main = os.getpid()
    interrupted = Interrupted()

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != main:
            os._exit(128 + signum)
        interrupted.signum = signum
        interrupted.check()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield interrupted
        interrupted.check()
    finally:
        for s, was in previous.items():
            signal.signal(s, was)


def bring_up(
    the_lab: Lab,
    topology: Topology,
    say: Callable[[str], None] = click.echo,
    *,
    store: str = "sqlite",
    check: Callable[[], None] = lambda: None,
) -> list[dict[str, Any]]:
    """Build ``topology`` in ``the_lab`` on ``store``: hosts, agents, orgs, apps, machines (all
    wired), and the topology's peers on laptops. On any failure or interruption, everything made
    is removed before the exception goes on (``check`` raises an interruption remembered but
    lost, :class:`Interrupted`)."""
    say(f"lab {the_lab.root}: {describe(topology)}")
    the_lab.up(list(topology.hosts), progress=say, store=store)
    try:
        with the_lab.api() as api:
            machines = populate(topology, api, progress=say)
        say(f"waiting for the agents to wire {len(machines)} machines")
        for m in machines:
            the_lab.wait_wired(m, timeout=60)
        the_lab.wait_settled(timeout=60)
        for org in topology.orgs:
            for peer in org.peers:
                say(f"peer {peer.name} of {org.name}: sixpn wireguard create, then wg-quick up")
                laptop.bring_up(the_lab, peer.name, org.name, peer.network, peer.region)
        check()
        return machines
    except BaseException:
        click.echo("lab up failed or was interrupted: taking down what was built")
        the_lab.down()
        raise


def summary(the_lab: Lab) -> str:
    inv = collect(the_lab)
    hosts = ", ".join(
        f"{h['name']} ({h['region']}{', gateway' if h['gateway'] else ''})" for h in inv["hosts"]
    )
    started = sum(1 for m in inv["machines"] if m["state"] == "started")
    logs = f"{the_lab.root}/server.log, {the_lab.root}/agent-<host>.log"
    if inv["store"]["kind"] == "etcd":
        logs = f"{the_lab.root}/server<n>.log, etcd-<n>.log, agent-<host>.log"
    lines = [
        f"lab is up: {len(inv['hosts'])} hosts: {hosts}",
        f"  machines: {len(inv['machines'])} ({started} started); peers: {len(inv['peers'])}",
        f"  store: {_describe_store(inv['store'])}",
        f"  API: {inv['lab']['api']} (SIXPN_API; admin token in {the_lab.state_file}"
        + (f"; SIXPN_CA={the_lab.ca_file})" if the_lab.ca_file.exists() else ")"),
        f"  logs: {logs}",
        "  next: sixpn lab status; sixpn lab exec <app> -- dig +short AAAA <app>.internal",
    ]
    return "\n".join(lines)


def _describe_store(store: dict[str, Any]) -> str:
    replicas = store["replicas"]
    up = sum(1 for r in replicas if r["healthy"])
    served = f"{len(replicas)} server replica{'s' if len(replicas) > 1 else ''} ({up} healthy)"
    if store["kind"] == "sqlite":
        return f"sqlite {store['db']}, {served}"
    members = store["members"]
    healthy = sum(1 for m in members if m["healthy"])
    return f"etcd, {len(members)} members ({healthy} healthy) in {store['data_dir']}, {served}"


@lab.command()
@click.option(
    "--topology",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML topology (docs/lab.md); default: 3 hosts in 2 regions, 2 orgs.",
)
@click.option(
    "--store",
    type=click.Choice(["sqlite", "etcd"]),
    default="sqlite",
    show_default=True,
    help="The control plane's store: one server on SQLite, or 2 replicas on a 3-member etcd.",
)
@click.pass_context
def up(ctx: click.Context, topology: Path | None, store: str) -> None:
    """Build a lab: control plane, hosts, agents, and the topology's orgs and machines."""
    topo = load(topology) if topology is not None else default()  # refused before building
    _preflight()
    if store == "etcd":
        from sixpn.lab import etcd

        etcd.binary()
    the_lab = _lab(ctx, up=False)
    if the_lab.state is not None:
        raise LabError(f"the lab is already up in {ctx.obj} (sixpn lab status; sixpn lab down)")
    with _signals_as_exit() as interrupted:
        bring_up(the_lab, topo, interrupted.say, store=store, check=interrupted.check)
    click.echo(summary(the_lab))


@lab.command()
@click.option("--json", "as_json", is_flag=True, help="Everything, as JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """The store, hosts, machines (id, org, app, region, host, address, namespace, state),
    peers."""
    inv = collect(_lab(ctx))
    if as_json:
        click.echo(json.dumps(inv, indent=2))
        return
    click.echo(f"lab {inv['lab']['dir']} (API {inv['lab']['api']})")
    control = inv["control_plane"]
    if not control["answers"]:
        as_of = "never seen" if control["as_of"] is None else f"as of {_when(control['as_of'])}"
        click.echo(
            f"\ncontrol plane DOWN: {control['error']}\n"
            f"  machines and peers below: last seen ({as_of}), less the machines whose "
            "namespace is gone, plus those the agents wired since"
        )
    _show_store(inv["store"])
    click.echo("\nhosts")
    _table(
        inv["hosts"],
        ("name", "region", "gateway", "underlay", "namespace", "agent_running", "backend"),
    )
    click.echo("\nmachines")
    cols = ("id", "org", "app", "region", "host", "address", "state", "namespace")
    _table(inv["machines"], cols)
    click.echo("\npeers")
    _table(inv["peers"], ("name", "org", "network", "address", "gateway", "laptop"))
    if inv["vpcs"]:
        click.echo("\nvpcs (database URLs: lab status --json)")
        _table(inv["vpcs"], ("name", "org", "nat", "ec2", "db", "forward_running", "db_running"))


def _when(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _show_store(store: dict[str, Any]) -> None:
    click.echo(f"\nstore: {_describe_store(store)}")
    if store["members"]:
        _table(store["members"], ("name", "client_url", "pid", "alive", "healthy", "leader"))
    click.echo("\nserver replicas")
    _table(store["replicas"], ("name", "url", "pid", "alive", "healthy"))


def _table(rows: list[dict[str, Any]], cols: tuple[str, ...]) -> None:
    if not rows:
        click.echo("  (none)")
        return
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    click.echo("  " + "  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)))
    for row in cells:
        click.echo("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@lab.command(
    "exec",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("machine")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_(ctx: click.Context, machine: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in MACHINE's namespace (its resolv.conf, SIXPN_PRIVATE_IP set).

    MACHINE: a machine ID, [ORG/]APP (its first machine), [ORG/]APP@HOST, or a laptop peer.
    """
    from sixpn.lab import netns

    if command and command[0] == "--":  # click keeps it after a positional argument
        command = command[1:]
    if not command:
        raise click.UsageError("no COMMAND to run (sixpn lab exec MACHINE -- COMMAND...)")
    target = resolve(collect(_lab(ctx)), machine)
    argv = ["env", f"SIXPN_PRIVATE_IP={target['address']}", *command]
    sys.stdout.flush()
    os.execvp("ip", netns.exec_argv(target["namespace"], argv))


@lab.command()
@click.argument("name")
@click.option("--org", required=True, envvar="SIXPN_ORG", help="The peer's organization.")
@click.option("--network", default="default", show_default=True, help="The network it joins.")
@click.option("--region", help="Gateway region (default: the lab's first gateway's).")
@click.option("--ephemeral", is_flag=True, help="An ephemeral peer (removed when idle).")
@click.pass_context
def peer(
    ctx: click.Context, name: str, org: str, network: str, region: str | None, ephemeral: bool
) -> None:
    """Create WireGuard peer NAME and bring up a laptop namespace with stock wg-quick."""
    the_lab = _lab(ctx)
    with _signals_as_exit():
        made = laptop.bring_up(the_lab, name, org, network, region, ephemeral=ephemeral)
    click.echo(made["created"])
    click.echo(made["wg_quick"])
    click.echo(
        f"laptop {name}: namespace {made['ns']}, underlay {made['underlay']}, "
        f"interface {made['ifname']}, file {made['conf']}"
    )
    click.echo(f"  try: sixpn lab exec {name} -- dig +short AAAA <app>.internal")


@lab.command("vpc")
@click.argument("name")
@click.option("--org", required=True, envvar="SIXPN_ORG", help="The peer's organization.")
@click.option("--network", default="default", show_default=True, help="The network it joins.")
@click.option("--region", help="Gateway region (default: the lab's first gateway's).")
@click.pass_context
def vpc_(ctx: click.Context, name: str, org: str, network: str, region: str | None) -> None:
    """An external network (an AWS VPC) joined as WireGuard peer NAME (SPEC 6).

    A NAT, an "EC2" instance running stock wg-quick and `sixpn forward '[::]:5432' ...`, and an
    IPv4-only PostgreSQL ("RDS"); machines of the network reach it as NAME._peer.internal:5432.
    """
    from sixpn.lab import vpc

    _preflight()
    the_lab = _lab(ctx)
    with _signals_as_exit():
        made = vpc.create(the_lab, name, org, network, region, progress=click.echo)
    click.echo(f"vpc {name} is up: peer {made['peer_address']} of {org}/{network}")
    click.echo(f"  database URL: {made['url']}")
    machine = next(
        (
            m
            for m in collect(the_lab)["machines"]
            if m["org"] == org and m["network"] == network and m["state"] == "started"
        ),
        None,
    )
    query = "select text from greetings order by id"
    click.echo(f"  try: sixpn lab exec {machine['id'] if machine else '<machine>'} -- ", nl=False)
    click.echo(f'psql "{made["url"]}" -Atc "{query}"')


@lab.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Remove everything the lab made (namespaces, links, processes, tables, files)."""
    the_lab = _lab(ctx, up=False)
    if the_lab.state is None:
        click.echo(f"no lab in {ctx.obj}: nothing to take down")
        return
    with _signals_as_exit():
        the_lab.down()
    click.echo(f"lab in {ctx.obj} is down: nothing of it is left")


@lab.command()
@click.option("--keep", is_flag=True, help="Leave the lab up at the end.")
@click.pass_context
def demo(ctx: click.Context, keep: bool) -> None:
    """Bring a lab up and show, step by step, what the fabric does."""
    from sixpn.lab.demo import Demo

    _preflight()
    if Lab(ctx.obj).state is not None:
        raise LabError(f"a lab is already up in {ctx.obj}: sixpn lab down first (or --dir)")
    with _signals_as_exit():
        failed = Demo(ctx.obj, keep=keep).run()
    if failed:
        raise LabError(f"the demo: {failed} step(s) did not show what they should (above)")
