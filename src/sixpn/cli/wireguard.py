"""`sixpn wireguard`: WireGuard peers (a laptop, a CI runner, an external network's gateway).

``sixpn wireguard create [ORG] [REGION] [NAME] [FILE]`` (SPEC section 5). Decisions:

- Positionals fill from the left: ORG defaults to ``$SIXPN_ORG``, REGION to none (the server picks
  the gateway region), NAME to ``peer-<6 random hex digits>``, FILE to standard output (as does
  ``-``). With ``$SIXPN_ORG`` set, ``create fra laptop`` still reads ``fra`` as ORG: positionals
  are never guessed at.
- The X25519 key pair is generated here (``sixpn.client.keys``); only the public key is sent.
  The private key is written into the file (or printed) and nowhere else: a warning on standard
  error says it cannot be recovered.
- ``--public-key KEY`` (bring your own key, for automation): the file is written the same way,
  but its PrivateKey line is a comment saying to put the matching private key there; ``wg-quick``
  refuses the file until that is done. ``--json`` gives the same details as JSON.
- The file is handed out once the gateway has installed the peer (``--wait``, 10 s at most; 0:
  at once): ``wg-quick up`` right after it then connects at the first handshake. A gateway
  that does not install it in time gets a warning, and the file is written all the same.
- FILE is created with mode 0600 and ``O_EXCL``: an existing file is never overwritten. It is
  checked before anything is created on the server, so "file exists" leaves nothing behind; should
  writing still fail afterwards, the new peer is removed again.
- When the file goes to standard output, the one-line summary goes to standard error, so that
  ``sixpn wireguard create acme > wg0.conf`` leaves a clean file. With ``--json`` standard output
  is one JSON object: the API's answer plus ``file`` (the path written, or null) and ``config``
  (the wg-quick text, only when no FILE was written).
- ``list``, ``show``, ``status`` and ``remove`` take ``[ORG]`` first too; ORG defaults to
  ``$SIXPN_ORG``. ``status`` shows the peer as its gateway last reported it ("never" before
  its first handshake).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from pathlib import Path

import click

from sixpn.cli.common import call, echo_json, echo_table, json_option, show, when
from sixpn.client import Client, generate_keypair, to_jsonable
from sixpn.control.api.schemas import PeerCreated
from sixpn.core.wgquick import render_wg_quick
from sixpn.core.wireguard import validate_key
from sixpn.model.entities import Peer
from sixpn.model.errors import AlreadyExists, NotFound, SixpnError


def _require_org(org: str | None) -> str:
    if not org:
        raise click.UsageError("missing ORG: give it, or set SIXPN_ORG")
    return org


def _org_and_name(args: tuple[str, ...]) -> tuple[str, str]:
    if len(args) == 1:
        return _require_org(os.environ.get("SIXPN_ORG")), args[0]
    if len(args) == 2:
        return args[0], args[1]
    raise click.UsageError("expected [ORG] NAME")


def _check_file(path: Path) -> None:
    """Refuse before the server creates anything: the file exists, or cannot be created."""
    if os.path.lexists(path):
        raise AlreadyExists(
            f"{path} already exists: sixpn never overwrites a peer file; choose another FILE",
            field="FILE",
        )
    parent = path.parent
    if not parent.is_dir():
        raise NotFound(f"directory {parent} does not exist (for FILE {path})", field="FILE")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SixpnError(f"cannot create {path}: directory {parent} is not writable", field="FILE")


def _write_new(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600; never replace an existing file (O_EXCL)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "w", encoding="ascii") as out:
            fd = -1
            out.write(text)
    finally:
        if fd != -1:
            os.close(fd)


@click.group()
def wireguard() -> None:
    """WireGuard peers of an organization's network."""


@wireguard.command("create")
@click.argument("org", required=False, envvar="SIXPN_ORG")
@click.argument("region", required=False)
@click.argument("name", required=False)
@click.argument("file", required=False)
@click.option("--network", default="default", show_default=True, help="The network to join.")
@click.option("--ephemeral", is_flag=True, help="Hide from _peer.internal; removed when idle.")
@click.option("--public-key", help="Use this public key instead of generating a key pair.")
@click.option(
    "--route", "routes", multiple=True, metavar="CIDR", help="Extra IPv6 prefix behind the peer."
)
@click.option(
    "--no-dns",
    is_flag=True,
    help="Leave the DNS line out (a server keeps its own resolver; .internal names still "
    "resolve at the network's DNS address).",
)
@click.option(
    "--mtu",
    type=click.IntRange(1280, 9000),
    help="Write an MTU line (default: wg-quick's, the outgoing interface's MTU less 80).",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Wait this long for the gateway to install the peer before handing out the file.",
)
@json_option
def create(
    org: str | None,
    region: str | None,
    name: str | None,
    file: str | None,
    network: str,
    ephemeral: bool,
    public_key: str | None,
    routes: tuple[str, ...],
    no_dns: bool,
    mtu: int | None,
    wait: float,
    as_json: bool,
) -> None:
    """Create a peer and write its wg-quick FILE (mode 0600; '-' or none: standard output).

    ORG defaults to $SIXPN_ORG, REGION to the server's choice, NAME to peer-<random hex>.
    """
    org = _require_org(org)
    name = name or f"peer-{secrets.token_hex(3)}"
    path = None if file in (None, "-") else Path(str(file))
    if path is not None:
        _check_file(path)
    if public_key is not None:
        keypair = None
        validate_key(public_key)
    else:
        keypair = generate_keypair()
        public_key = keypair.public_key
    pubkey: str = public_key

    async def create_and_wait(c: Client) -> tuple[PeerCreated, bool]:
        made = await c.create_peer(
            org, name, pubkey, network=network, region=region, ephemeral=ephemeral, routes=routes
        )
        return made, await _installed(c, org, made.peer.name, wait)

    created, installed = call(create_and_wait)
    if not installed and wait > 0:
        click.echo(
            f"warning: gateway {created.gateway.name} has not installed the peer after {wait:g} s "
            "(is its agent running?); the first connection may take a few seconds longer",
            err=True,
        )
    private_key = None if keypair is None else keypair.private_key
    text = _render(created, private_key, pubkey, use_dns=not no_dns, mtu=mtu)
    if path is not None:
        try:
            _write_new(path, text)
        except OSError as exc:
            call(lambda c: c.delete_peer(org, created.peer.name))
            raise SixpnError(
                f"writing {path}: {exc.strerror or exc}; the peer was removed again", field="FILE"
            ) from exc

    peer, gw = created.peer, created.gateway
    if as_json:
        out = to_jsonable(created)
        out["file"] = None if path is None else str(path)
        if path is None:
            out["config"] = text
        click.echo(json.dumps(out, indent=2))
    else:
        summary = (
            f"created peer {peer.name} {peer.address} (org {peer.org}, network {peer.network}, "
            f"gateway {gw.name} in {gw.region} at {gw.endpoint})"
        )
        if path is None:
            click.echo(text, nl=False)
            click.echo(summary, err=True)
        else:
            click.echo(f"{summary}; wrote {path}")
    where = "standard output" if path is None else str(path)
    if keypair is not None:
        click.echo(
            f"warning: the private key is only in {where}; sixpn cannot recover it. Keep it "
            "safe (if it is lost, remove the peer and create another).",
            err=True,
        )
    else:
        click.echo(
            f"note: {where} has no private key: put the private key of {pubkey} on its "
            "PrivateKey line (sixpn never sees private keys).",
            err=True,
        )


async def _installed(c: Client, org: str, name: str, wait: float) -> bool:
    """Until the gateway has the peer (its agent applied the store as of the peer's creation).

    Why wait: ``wg-quick up`` sends its first handshake at once, and a gateway that does not
    know the peer yet drops it; WireGuard then tries again only after 5 s (REKEY_TIMEOUT), so
    a file handed out early costs its user five seconds (docs/benchmarks.md)."""
    deadline = time.monotonic() + wait
    while True:
        if (await c.peer_status(org, name)).installed:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)


def _render(
    created: PeerCreated,
    private_key: str | None,
    public_key: str,
    *,
    use_dns: bool = True,
    mtu: int | None = None,
) -> str:
    peer, gw = created.peer, created.gateway
    return render_wg_quick(
        private_key,
        peer.address,
        created.dns,
        gw.public_key,
        created.allowed_ips,
        gw.endpoint,
        header=(
            f"sixpn WireGuard peer {peer.name} of {peer.org}/{peer.network}, "
            f"gateway {gw.name} ({gw.region})"
        ),
        public_key=public_key,
        use_dns=use_dns,
        mtu=mtu,
    )


@wireguard.command("list")
@click.argument("org", required=False, envvar="SIXPN_ORG")
@json_option
def list_(org: str | None, as_json: bool) -> None:
    """List the organization's peers. ORG defaults to $SIXPN_ORG."""
    the_org = _require_org(org)
    found = call(lambda c: c.list_peers(the_org))
    if as_json:
        echo_json(found)
        return
    echo_table(["name", "network", "address", "gateway", "ephemeral", "routes"], _rows(found))


def _rows(peers: list[Peer]) -> list[list[object]]:
    return [
        [p.name, p.network, p.address, p.gateway, p.ephemeral, [str(r) for r in p.routes]]
        for p in peers
    ]


@wireguard.command("show")
@click.argument("args", nargs=-1, metavar="[ORG] NAME")
@json_option
def show_(args: tuple[str, ...], as_json: bool) -> None:
    """Show peer NAME. ORG defaults to $SIXPN_ORG."""
    org, name = _org_and_name(args)
    show(call(lambda c: c.get_peer(org, name)), as_json)


@wireguard.command("status")
@click.argument("args", nargs=-1, metavar="[ORG] NAME")
@json_option
def status(args: tuple[str, ...], as_json: bool) -> None:
    """Peer NAME as its gateway sees it: latest handshake, endpoint, bytes. ORG: $SIXPN_ORG."""
    org, name = _org_and_name(args)
    found = call(lambda c: c.peer_status(org, name))
    if as_json:
        echo_json(found)
        return
    rows: list[tuple[str, str]] = [
        ("peer", f"{found.name} ({found.org}/{found.network}) {found.address}"),
        ("gateway", found.gateway),
    ]
    if not found.reported:
        rows.append(("latest handshake", "never (the gateway has not reported this peer yet)"))
    else:
        rows += [
            ("latest handshake", _handshake(found.latest_handshake, found.handshake_age)),
            ("endpoint", found.endpoint or "-"),
            ("received", _bytes(found.rx_bytes)),
            ("sent", _bytes(found.tx_bytes)),
            ("reported", when(found.reported_at) if found.reported_at else "-"),
        ]
    if found.ephemeral and found.expires_at is not None:
        rows.append(("ephemeral", f"yes: removed at {when(found.expires_at)} if still idle"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key.ljust(width)}  {value}")


def _handshake(at: float | None, age: float | None) -> str:
    if at is None or age is None:
        return "never"
    return f"{when(at)} ({_age(age)} ago)"


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _bytes(n: int) -> str:
    size, unit = float(n), "B"
    for next_unit in ("KiB", "MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size, unit = size / 1024, next_unit
    return f"{n} B" if unit == "B" else f"{size:.1f} {unit} ({n} B)"


@wireguard.command("remove")
@click.argument("args", nargs=-1, metavar="[ORG] NAME")
def remove(args: tuple[str, ...]) -> None:
    """Remove peer NAME: it is taken off its gateway. ORG defaults to $SIXPN_ORG."""
    org, name = _org_and_name(args)
    call(lambda c: c.delete_peer(org, name))
    click.echo(f"removed peer {name} (org {org})")


from sixpn.cli.wgdoctor import doctor as _doctor  # noqa: E402  (its own module: offline, no API)

wireguard.add_command(_doctor)
