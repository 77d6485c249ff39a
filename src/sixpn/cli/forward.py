"""`sixpn forward LISTEN TARGET`: the TCP forwarder for a peer in an external network (SPEC 6).

The command only parses, prints what it will do and runs ``sixpn.forward.serve``; every rule
about connections lives in ``sixpn/forward.py``. Logging is set up by the root group
(``cli/main.py``, level from ``$SIXPN_LOG_LEVEL``).
"""

from __future__ import annotations

import asyncio

import click


@click.command("forward")
@click.argument("listen")
@click.argument("target")
@click.option(
    "--max-connections",
    type=int,
    default=1024,
    show_default=True,
    help="Connections over this many are accepted and closed at once (and logged).",
)
@click.option(
    "--idle-timeout",
    type=float,
    default=0.0,
    show_default=True,
    help="Close a connection with no bytes either way for this many seconds (0: never).",
)
@click.option(
    "--grace",
    type=float,
    default=30.0,
    show_default=True,
    help="On SIGTERM, let open connections finish for this many seconds, then cut them.",
)
def forward(
    listen: str, target: str, max_connections: int, idle_timeout: float, grace: float
) -> None:
    """Forward TCP connections on LISTEN to TARGET.

    LISTEN is [IPV6]:PORT, IPV4:PORT or :PORT (every address, IPv4 and IPv6). TARGET is
    HOST:PORT or [IPV6]:PORT; a HOST name is resolved again for every connection.

    Example: sixpn forward '[::]:5432' db.abc.rds.amazonaws.com:5432
    """
    from sixpn.forward import Forwarder, check_limits, parse_listen, parse_target, serve

    where = parse_listen(listen)
    to = parse_target(target)
    check_limits(max_connections, idle_timeout, grace)
    forwarder = Forwarder(where, to, max_connections=max_connections, idle_timeout=idle_timeout)
    click.echo(f"sixpn forward: {where} -> {to} (max {max_connections} connections)", err=True)
    asyncio.run(serve(forwarder, grace))
