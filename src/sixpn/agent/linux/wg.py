"""The host's WireGuard interface: kernel module or wireguard-go, configured with ``wg``.

Both backends are configured the same way, through the ``wg`` tool, so everything below
``ensure_interface`` is backend-agnostic. With wireguard-go the interface is a tun device held
by a daemon that forks itself away (in its own session here), so it outlives the agent: an
agent restart does not interrupt traffic, and deleting the link is what stops the daemon.

Rules that hold:

- ``set_peers`` gives each peer exactly the allowed IPs it is given (``wg set ... allowed-ips``
  replaces the list) and touches no other peer of the interface; an endpoint is set only when
  given, as a client peer's endpoint is learned from its packets;
- peers are set and removed in batches, one ``wg set`` with many ``peer`` clauses, each batch
  well under ARG_MAX;
- wireguard-go's control sockets live in ``/var/run/wireguard/<ifname>.sock`` for every
  namespace, so interface names must be unique on the machine (``sxw<host id>`` is);
- ``read`` returns None when the interface does not exist in this namespace.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
from collections.abc import Iterable, Iterator
from ipaddress import IPv6Network, ip_network
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, NetlinkError

from sixpn.agent.linux import _sys
from sixpn.core.hoststate import WgPeer
from sixpn.model.errors import SixpnError, Unavailable

KERNEL = "kernel"
WIREGUARD_GO = "wireguard-go"
MTU = 1420  # 1500 minus the IPv6 + UDP + WireGuard overhead (80 bytes)
SOCKET_DIR = Path("/var/run/wireguard")
# Peers per `wg set` and its argument bytes: beyond ~500 a batch saves nothing measurable
# (docs/benchmarks.md), and a failing batch's error names fewer peers.
BATCH_PEERS = 500
BATCH_BYTES = 256 * 1024
log = logging.getLogger(__name__)


def detect_backend() -> str:
    """ "kernel" if this namespace can make a WireGuard link, else "wireguard-go" if installed."""
    probe = f"sxwp{secrets.token_hex(4)}"
    with IPRoute() as ipr:
        try:
            ipr.link("add", ifname=probe, kind="wireguard")
        except NetlinkError:
            pass
        else:
            ipr.link("del", index=ipr.link_lookup(ifname=probe)[0])
            return KERNEL
    if shutil.which("wireguard-go") is not None:
        return WIREGUARD_GO
    raise Unavailable(
        "choosing a WireGuard backend: the kernel has no WireGuard support and wireguard-go "
        "is not installed (apt-get install --no-install-recommends wireguard-go)"
    )


def ensure_interface(ifname: str, listen_port: int, private_key_path: Path, backend: str) -> None:
    """Create ``ifname`` if absent, then set its port and key, MTU 1420, link up. Idempotent."""
    what = f"setting up WireGuard interface {ifname} ({backend})"
    if _index(ifname) is None:
        if backend == KERNEL:
            with _sys.netlink(what), IPRoute() as ipr:
                ipr.link("add", ifname=ifname, kind="wireguard")
        elif backend == WIREGUARD_GO:
            # LOG_LEVEL unset: the daemon then gets /dev/null for its output and never holds
            # our pipes open; its own session keeps it out of the agent's process group.
            env = {k: v for k, v in os.environ.items() if k != "LOG_LEVEL"}
            _sys.run(["wireguard-go", ifname], what, env=env, new_session=True)
            _sys.wait_for(lambda: _index(ifname) is not None, f"{what}: waiting for the link")
        else:
            raise SixpnError(f"{what}: unknown backend {backend!r}")
    wg_set = ["wg", "set", ifname, "listen-port", str(listen_port)]
    _sys.run([*wg_set, "private-key", str(private_key_path)], what)
    with _sys.netlink(what), IPRoute() as ipr:
        ipr.link("set", index=_require(ipr, ifname), mtu=MTU, state="up")
    steer_receive(ifname)


def steer_receive(ifname: str) -> None:
    """Receive packet steering over every CPU for the interface's one receive queue.

    What arrives decrypted is mostly forwarded into a machine's namespace (routing, nftables,
    the veth, the machine's TCP), and without steering all of that runs in the thread that
    wrote the packet into the tun: wireguard-go's one writer. Steered by flow hash, it runs on
    another CPU and the writer goes back to decrypted packets sooner (docs/benchmarks.md:
    ~4-5 points of throughput for the fabric, nothing for plain WireGuard, whose packets end
    in a local socket). A no-op on one CPU; a kernel without RPS gets a warning in the log, as
    this is speed, not isolation.

    The setting lives only in sysfs, and a sysfs mount shows the devices of the namespace it
    was mounted in, which is not this one when the agent entered its namespace with
    ``nsenter`` (the lab): so it is written through a sysfs of this namespace, mounted in a
    private mount namespace that ends with the command.
    """
    cpus = os.cpu_count() or 1
    if cpus < 2:
        return
    path = '"/sys/class/net/$2/queues/rx-0/rps_cpus"'
    script = f'mount -t sysfs sysfs /sys && printf %s "$1" > {path}'
    argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script]
    code, _, err = _sys.try_run([*argv, "sh", cpu_mask(cpus), ifname], "receive steering")
    if code != 0:
        log.warning("receive steering on %s not set: %s", ifname, err.strip()[-300:])


def cpu_mask(cpus: int) -> str:
    """The sysfs bitmap of CPUs 0..cpus-1: hex, comma-separated 32-bit words (``ff,ffffffff``)."""
    digits = f"{(1 << cpus) - 1:x}"
    words = []
    while digits:
        words.append(digits[-8:])
        digits = digits[:-8]
    return ",".join(reversed(words))


def remove_interface(ifname: str) -> None:
    """Delete ``ifname``; a wireguard-go daemon exits when its tun goes (waited for). Idempotent."""
    what = f"removing WireGuard interface {ifname}"
    pid = daemon_pid(ifname)
    with _sys.netlink(what), IPRoute() as ipr, _sys.ignore(_sys.ENODEV):
        index = ipr.link_lookup(ifname=ifname)
        if index:
            ipr.link("del", index=index[0])
    _sys.wait_for(lambda: _index(ifname) is None, f"{what}: waiting for the link to go")
    if pid is not None:
        try:
            _sys.wait_for(lambda: not _alive(pid), f"{what}: waiting for wireguard-go {pid}")
        except SixpnError:
            # The daemon held this interface's tun (daemon_pid checks that): it is ours to stop.
            os.kill(pid, signal.SIGTERM)
            _sys.wait_for(lambda: not _alive(pid), f"{what}: stopping wireguard-go {pid}")


def set_peers(ifname: str, peers: Iterable[WgPeer]) -> None:
    """Add or update ``peers``: each one's allowed IPs become exactly its ``allowed_ips``.

    One ``wg set`` per batch of peers (several ``peer`` clauses), not per peer: a process costs
    ~1.5 ms here, the work per peer inside one ~0.13 ms (docs/benchmarks.md).
    """
    clauses = [_peer_clause(p) for p in sorted(peers, key=lambda p: p.public_key)]
    _set_in_batches(ifname, clauses, "setting", "on")


def remove_peers(ifname: str, public_keys: Iterable[str]) -> None:
    """Remove the peers with ``public_keys`` (absent ones are fine), one ``wg set`` per batch."""
    clauses = [["peer", key, "remove"] for key in sorted(public_keys)]
    _set_in_batches(ifname, clauses, "removing", "from")


def _set_in_batches(ifname: str, clauses: list[list[str]], verb: str, prep: str) -> None:
    for batch, first, last in _batches(clauses):
        what = (
            f"{verb} peer {first} {prep} {ifname}"
            if first == last
            else f"{verb} {len(batch)} peers {prep} {ifname} ({first} to {last})"
        )
        _sys.run(["wg", "set", ifname, *(arg for clause in batch for arg in clause)], what)


def _peer_clause(peer: WgPeer) -> list[str]:
    allowed = ",".join(str(n) for n in sorted(peer.allowed_ips, key=_net_key))
    clause = ["peer", peer.public_key, "allowed-ips", allowed]
    if peer.endpoint is not None:
        clause += ["endpoint", peer.endpoint]
    return [*clause, "persistent-keepalive", str(peer.keepalive) if peer.keepalive else "off"]


def _batches(clauses: list[list[str]]) -> Iterator[tuple[list[list[str]], str, str]]:
    """``clauses`` cut into batches of at most :data:`BATCH_PEERS` peers and
    :data:`BATCH_BYTES` of arguments (far below ARG_MAX, which is 2 MiB with the default
    stack limit, whatever routes the peers carry); each with its first and last key."""
    batch: list[list[str]] = []
    size = 0
    for clause in clauses:
        length = sum(len(arg) + 1 for arg in clause)
        if batch and (len(batch) == BATCH_PEERS or size + length > BATCH_BYTES):
            yield batch, batch[0][1], batch[-1][1]
            batch, size = [], 0
        batch.append(clause)
        size += length
    if batch:
        yield batch, batch[0][1], batch[-1][1]


def read(ifname: str) -> tuple[int, frozenset[WgPeer]] | None:
    """(listen port, peers) of ``ifname`` as the kernel or daemon has them; None if absent.

    Allowed IPs that are not IPv6 are left out: the agent never sets them.
    """
    global _parsed
    rows = _dump(ifname)
    if rows is None:
        return None
    port = int(rows[0][2])
    peers = set()
    known, parsed = _parsed, {}
    for key, _psk, endpoint, allowed, _hs, _rx, _tx, keepalive in rows[1:]:
        nets = known.get(allowed)
        if nets is None:
            nets = _allowed_ips(allowed)
        parsed[allowed] = nets
        peers.add(
            WgPeer(
                public_key=key,
                allowed_ips=nets,
                endpoint=None if endpoint == "(none)" else endpoint,
                keepalive=0 if keepalive == "off" else int(keepalive),
            )
        )
    _parsed = parsed  # what this read saw: the memo never outgrows the interface
    return port, frozenset(peers)


# Allowed-IPs text of the last read -> its networks. Parsing them with `ipaddress` cost 40 of the
# 55 ms of Python a read of 5,000 peers took (docs/benchmarks.md); from one read to the next
# almost every peer's text is the same, and a dict lookup costs nothing in comparison.
_parsed: dict[str, frozenset[IPv6Network]] = {}


def _allowed_ips(text: str) -> frozenset[IPv6Network]:
    nets = (ip_network(a, strict=False) for a in text.split(",") if a != "(none)")
    return frozenset(n for n in nets if isinstance(n, IPv6Network))


def peer_stats(ifname: str) -> list[dict[str, Any]]:
    """Per peer: public key, endpoint, latest handshake (Unix time, 0 = never), rx/tx bytes."""
    rows = _dump(ifname) or [[]]
    return [
        {
            "public_key": key,
            "endpoint": None if endpoint == "(none)" else endpoint,
            "allowed_ips": [] if allowed == "(none)" else allowed.split(","),
            "latest_handshake": int(handshake),
            "rx_bytes": int(rx),
            "tx_bytes": int(tx),
        }
        for key, _psk, endpoint, allowed, handshake, rx, tx, _ka in rows[1:]
    ]


def daemon_pid(ifname: str) -> int | None:
    """The PID of the wireguard-go process holding ``ifname``'s tun in this namespace, if any.

    Found by what the process holds (its tun file descriptor's ``iff:``), not by its name.
    """
    here = os.stat("/proc/self/ns/net").st_ino
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry.name}/ns/net").st_ino != here:
                continue
            for fd in os.listdir(f"/proc/{entry.name}/fd"):
                if os.readlink(f"/proc/{entry.name}/fd/{fd}") != "/dev/net/tun":
                    continue
                info = Path(f"/proc/{entry.name}/fdinfo/{fd}").read_text()
                if f"iff:\t{ifname}\n" in info:
                    return int(entry.name)
        except OSError:  # the process went away while we looked, or is not ours to see
            continue
    return None


def _dump(ifname: str) -> list[list[str]] | None:
    if _index(ifname) is None:
        return None
    out = _sys.run(["wg", "show", ifname, "dump"], f"reading WireGuard interface {ifname}")
    return [line.split("\t") for line in out.splitlines() if line]


def _index(ifname: str) -> int | None:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def _require(ipr: Any, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise SixpnError(f"interface {ifname} does not exist")
    return int(found[0])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _net_key(net: IPv6Network) -> tuple[int, int]:
    return (int(net.network_address), net.prefixlen)
