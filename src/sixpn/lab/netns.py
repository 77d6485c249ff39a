"""Network namespaces: create, remove, configure, and open sockets or run commands inside.

Everything the lab and the tests make carries a ``sixpn-`` name prefix, so that cleanup touches
nothing else. Netlink work goes through pyroute2; commands run through ``ip netns exec``, which
also bind-mounts ``/etc/netns/<ns>/`` files (resolv.conf, hosts) over ``/etc`` (NOTES.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from pyroute2 import NetNS, netns

PREFIX = "sixpn-"
NETNS_DIR = Path("/var/run/netns")
_REMOVE_TRIES = 4

log = logging.getLogger("sixpn.lab.netns")


def unique_name(role: str) -> str:
    """A namespace name no other run can collide with: ``sixpn-<role>-<8 hex>``."""
    return f"{PREFIX}{role}-{secrets.token_hex(4)}"


def create(name: str) -> None:
    if not name.startswith(PREFIX):
        raise ValueError(f"namespace {name!r}: lab namespaces are named {PREFIX}...")
    netns.create(name)
    with NetNS(name) as ns:
        (lo,) = ns.link_lookup(ifname="lo")
        ns.link("set", index=lo, state="up")


def remove(name: str) -> None:
    """Remove a namespace (its interfaces go with it); absent is fine.

    One unmount removes one mount of the name: a name mounted twice (two makers racing on it)
    needs a second, so the removal is tried again while the name stays; one that cannot go
    is said (a warning naming the error), never left in silence."""
    path = NETNS_DIR / name
    error: OSError | None = None
    for _ in range(_REMOVE_TRIES):
        try:
            netns.remove(name)
        except FileNotFoundError:
            break
        except OSError as exc:
            error = exc
        if not path.exists():
            break
    else:
        log.warning("namespace %s could not be removed: %s", name, error or "it stays mounted")
    etc = Path("/etc/netns") / name
    if etc.is_dir():
        for child in etc.iterdir():
            child.unlink()
        etc.rmdir()


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def add_address(name: str, address: str, *, ifname: str = "lo") -> None:
    """Add ``address`` ("fdaa:0:1::100/128") to ``ifname`` in namespace ``name``."""
    ip, _, prefix = address.partition("/")
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with NetNS(name) as ns:
        (index,) = ns.link_lookup(ifname=ifname)
        ns.addr(
            "add",
            index=index,
            address=ip,
            prefixlen=int(prefix or (128 if family == socket.AF_INET6 else 32)),
            family=family,
            flags=0x02 if family == socket.AF_INET6 else 0,  # IFA_F_NODAD: usable at once
        )


def socket_in(name: str, family: int, kind: int) -> socket.socket:
    """A socket created inside namespace ``name`` (usable from any thread afterwards).

    Only the creating thread enters the namespace: ``setns`` is per thread, so a short-lived
    thread does it and the caller's threads stay where they are.
    """
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def make() -> None:
        try:
            fd = os.open(NETNS_DIR / name, os.O_RDONLY)
            try:
                netns.setns(fd, fork=False)  # this thread only
            finally:
                os.close(fd)
            made.append(socket.socket(family, kind))
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=make, name=f"netns-{name}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


def exec_argv(name: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", name, *argv]


def enter_argv(name: str, argv: Sequence[str]) -> list[str]:
    """Run ``argv`` in namespace ``name`` for its network only, keeping the mount namespace.

    ``ip netns exec`` gives the command a private mount namespace (for /sys and the
    /etc/netns files): namespaces that command creates, bind mounts under /var/run/netns,
    would then be invisible to everyone else. A host's agent creates its machines'
    namespaces, so it runs this way.
    """
    return ["nsenter", f"--net={NETNS_DIR / name}", *argv]


def run(name: str, argv: Sequence[str], *, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command inside the namespace and wait for it; output captured as text."""
    return subprocess.run(
        exec_argv(name, argv), capture_output=True, text=True, timeout=timeout, check=False
    )


@contextlib.contextmanager
def temporary(role: str) -> Iterator[str]:
    """A fresh namespace for the duration of a ``with`` block, removed even on failure."""
    name = unique_name(role)
    create(name)
    try:
        yield name
    finally:
        remove(name)
