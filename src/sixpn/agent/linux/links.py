"""Machines wired to the host (pyroute2); the routes, the rule and the addresses the agent owns
beside them are in :mod:`sixpn.agent.linux.hostnet`.

A wired machine (SPEC 7) is: a namespace (the orchestrator's, or ``sixpn-m-<id>`` made here);
a veth pair whose host side ``sxm<id[:12]>`` is up in the host's namespace with ``fe80::1/64``
and whose other side is ``eth0`` in the machine's namespace, up, with the machine's address /112
and ``default via fe80::1``; ``lo`` up there; ``/etc/netns/<ns>/resolv.conf`` and ``hosts``.
Both veth ends have the tunnel's MTU (1420), so that a machine's packets always fit the mesh.

Rules that hold:

- ``wire_machine`` is idempotent and completes a partial wiring; ``read_machines`` returns only
  machines wired completely, so that the planner re-wires the others;
- the record comes first and goes last (issue 17). A namespace the agent makes is named last:
  made without a name and held by the wiring process alone, it receives the veth pair, the
  host side gets its alias (the record of the machine), and only then the namespace gets its
  name in ``/var/run/netns``. Unwiring removes the files and the namespace first and the host
  side last. So a wiring or unwiring cut short at any point leaves either nothing (a nameless
  namespace dies with the process, and its veth pair with it), or a host-side link that
  records the machine (a partial wiring, completed or unwired by the next plan), or, in a
  namespace that existed already, a pair whose host side records nothing yet (a stray link,
  removed whole). Left behind is at most the empty mount point of a naming or a removal cut
  short between two system calls, as with ``ip netns add``/``del``: a wiring of the same
  machine mounts on it;
- a namespace that exists already is never made again: a machine whose veth or address was
  deleted by hand is repaired inside it, and the processes running there keep running. Not
  covered: a namespace with nothing of the host's pointing at it (left by an agent older than
  the order above, or a machine whose veth was deleted by hand and that went away before any
  repair). ``/var/run/netns`` is shared by every agent on the machine (the lab runs several),
  so a ``sixpn-m-*`` namespace alone does not say whose it is: it is left to its owner;
- the host side's alias records what it was wired for (``sixpn <id> <address> <netns>``), and
  ``read_machines`` checks that against the kernel (the peer's namespace by its netns ID, the
  peer's index, addresses, routes, files) instead of trusting it;
- what :class:`Snapshot` reads of routes and ``lo``'s addresses is only the agent's own (see
  :mod:`sixpn.agent.linux.hostnet`): nothing else in the namespace is touched.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import socket
from collections.abc import Iterator
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, netns

from sixpn.agent.linux import _sys
from sixpn.core.addressing import DNS_ADDRESS, SIXPN_PREFIX
from sixpn.core.hoststate import (
    HOST_SIDE_ADDRESS,
    MACHINE_IF_PREFIX,
    MACHINE_NETNS_PREFIX,
    MAIN_TABLE,
    PEERING_TABLE,
    ROUTE_PROTO,
    MachineLink,
    Route,
)
from sixpn.model.errors import Conflict, InvalidInput, NotFound, Unavailable

MTU = 1420
NETNS_DIR = Path("/var/run/netns")
ETC_NETNS = Path("/etc/netns")
ALIAS_TAG = "sixpn"
TABLES = (MAIN_TABLE, PEERING_TABLE)
IFF_UP = 0x1
IFA_F_NODAD = 0x02
NUD_STALE = 0x04
AF6 = socket.AF_INET6
_ALIAS_MAX = 255
_NETNS_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@+-]*$")  # a file name, no spaces or "/"


# -- machines --------------------------------------------------------------------------------


def machine_files(link: MachineLink) -> dict[str, str]:
    """The files of ``/etc/netns/<ns>/`` that ``ip netns exec`` puts over ``/etc`` (NOTES.md)."""
    return {
        "resolv.conf": f"nameserver {DNS_ADDRESS}\n",
        "hosts": f"127.0.0.1 localhost\n::1 localhost\n{link.address} sixpn-local-6pn\n",
    }


def wire_machine(link: MachineLink, *, create_netns: bool) -> None:
    """Wire ``link`` (see the module docstring); what is already right is left alone."""
    what = f"wiring machine {link.machine_id} in namespace {link.netns}"
    alias = _alias(link)
    if not _NETNS_NAME.match(link.netns) or len(alias) > _ALIAS_MAX:
        raise InvalidInput(f"{what}: not a usable namespace name", field="netns")
    path = NETNS_DIR / link.netns
    named = _sys.is_netns(path)
    if not named:
        if not create_netns:
            raise NotFound(f"{what}: the namespace does not exist")
        if path.exists() and not link.netns.startswith(MACHINE_NETNS_PREFIX):
            raise Conflict(f"{what}: {path} exists and is not a namespace")
        _check_netns_store_shared(what)
    with _sys.netlink(what), IPRoute() as ipr:
        host = None
        if not named:  # the pair and the record before the name (module docstring)
            with _sys.new_netns() as fd:
                host = _ensure_pair(ipr, link, fd, None, what)
                _sys.name_netns(fd, path)
        with _sys.ipr_in(path) as ns:
            if host is None:
                host = _ensure_pair(ipr, link, link.netns, ns, what)
            (eth0,) = ns.link_lookup(ifname=link.inner_ifname)
            _configure(ipr, ns, host, eth0, link)
    with _sys.netlink(f"{what}: writing {ETC_NETNS / link.netns}"):
        etc = ETC_NETNS / link.netns
        etc.mkdir(parents=True, exist_ok=True)
        for name, text in machine_files(link).items():
            file = etc / name
            if not file.exists() or file.read_text() != text:
                tmp = etc / f".{name}.sixpn-tmp"
                tmp.write_text(text)
                tmp.replace(file)


def _configure(ipr: Any, ns: Any, host: int, eth0: int, link: MachineLink) -> None:
    """Both ends up with the tunnel's MTU, the addresses, the default route, the neighbours."""
    ipr.link("set", index=host, mtu=MTU, state="up")
    ensure_address(ipr, host, HOST_SIDE_ADDRESS, 64)
    (lo,) = ns.link_lookup(ifname="lo")
    ns.link("set", index=lo, state="up")
    ns.link("set", index=eth0, mtu=MTU, state="up")
    ensure_address(ns, eth0, link.address, 112)
    ns.route("replace", dst="::", dst_len=0, gateway=str(HOST_SIDE_ADDRESS), oif=eth0, family=AF6)
    _introduce(ipr, host, link.address, ns, eth0, HOST_SIDE_ADDRESS)


def _introduce(
    ipr: Any, host: int, address: IPv6Address, ns: Any, eth0: int, gateway: IPv6Address
) -> None:
    """Each end of the veth pair told the other's link-layer address, so that the first packet
    to a new machine needs no neighbour solicitation: one lost in the first milliseconds of a
    link costs the kernel's 1 s retransmit (p99 of the first packet 1.1 s, docs/benchmarks.md).
    The entries are ``stale``: used at once, confirmed by the kernel as any learned one."""
    host_mac = ipr.get_links(host)[0].get_attr("IFLA_ADDRESS")
    eth0_mac = ns.get_links(eth0)[0].get_attr("IFLA_ADDRESS")
    for side, index, dst, mac in ((ipr, host, address, eth0_mac), (ns, eth0, gateway, host_mac)):
        side.neigh("replace", dst=str(dst), lladdr=mac, ifindex=index, state=NUD_STALE, family=AF6)


def _check_netns_store_shared(what: str) -> None:
    """Refuse to make a namespace that nobody else would see.

    A namespace's name is a bind mount under ``/var/run/netns``. In a mount namespace that is a
    slave of another (``ip netns exec`` makes one; so do systemd's private mounts and container
    "HostToContainer" propagation), that mount reaches neither the operator's shell nor
    ``sixpn lab exec``, and it vanishes with the agent, taking the machine's wiring with it.
    """
    target = str(NETNS_DIR.resolve())
    best, fields = "", ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            parts = line.split(" - ", 1)[0].split()
            point = parts[4]
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, fields = point, " ".join(parts[6:])
    if "master:" in fields:
        raise Unavailable(
            f"{what}: this process's mount namespace does not propagate {best} to the one it "
            "came from (started with `ip netns exec`?), so a namespace made here would be "
            "invisible outside and vanish with the agent; enter the host namespace with "
            "`nsenter --net=/var/run/netns/<host>` (network only) instead"
        )


def unwire_machine(link: MachineLink, *, delete_netns: bool) -> None:
    """Remove the files, the namespace if ``delete_netns``, then the veth pair: the host side,
    the record of the machine, goes last, so that an unwiring cut short is still a partial
    wiring the next plan finishes (module docstring). Idempotent."""
    what = f"unwiring machine {link.machine_id} from namespace {link.netns}"
    with _sys.netlink(what):
        remove_machine_files(link.netns)
        if delete_netns and (NETNS_DIR / link.netns).exists():
            netns.remove(link.netns)
    delete_machine_link(link.host_ifname, what)


def delete_machine_link(ifname: str, what: str = "") -> None:
    """Delete the host-side link ``ifname`` (its veth peer goes with it), if it is there."""
    what = what or f"deleting machine link {ifname}"
    with _sys.netlink(what), IPRoute() as ipr, _sys.ignore(_sys.ENODEV):
        for index in ipr.link_lookup(ifname=ifname):
            ipr.link("del", index=index)


def remove_machine_files(ns: str) -> None:
    if not _NETNS_NAME.match(ns):
        return  # not a namespace name: never touch a path above /etc/netns/<ns>
    etc = ETC_NETNS / ns
    for name in ("resolv.conf", "hosts"):
        with contextlib.suppress(FileNotFoundError):
            (etc / name).unlink()
    with contextlib.suppress(FileNotFoundError, OSError):
        etc.rmdir()  # only if empty: the orchestrator may keep its own files there


class Snapshot:
    """The host's namespace as one read sees it, over one netlink socket: one dump each of its
    links, IPv6 addresses and routes, made when first asked for. (pyroute2 spends ~0.6 ms of
    Python per link in a dump: a read that dumped the links once per question paid it 5 times.)
    """

    def __init__(self, ipr: IPRoute) -> None:
        self.ipr = ipr

    @functools.cached_property
    def _links(self) -> list[Any]:
        return list(self.ipr.get_links())

    @functools.cached_property
    def _addresses(self) -> dict[int, set[tuple[IPv6Address, int]]]:
        return _addresses_by_index(self.ipr)

    @functools.cached_property
    def _routes(self) -> list[Any]:
        return list(self.ipr.route("dump", family=AF6))

    def names(self, prefix: str) -> list[str]:
        """The names of the links here that start with ``prefix``, sorted."""
        names = (str(m.get_attr("IFLA_IFNAME")) for m in self._links)
        return sorted(n for n in names if n.startswith(prefix))

    def machines(self) -> frozenset[MachineLink]:
        """The machines wired completely: partial wirings are left out (the planner re-wires)."""
        found = set()
        for msg in self._links:
            link = _from_alias(msg)
            if link is None or not _host_side_ok(self.ipr, msg, link, self._addresses):
                continue
            if _machine_side_ok(link, peer_index=msg.get_attr("IFLA_LINK")):
                found.add(link)
        return frozenset(found)

    def machine_aliases(self) -> list[MachineLink]:
        """Every ``sxm*`` host-side link's record of what it was wired for, complete or not."""
        return [link for msg in self._links if (link := _from_alias(msg)) is not None]

    def stray_machine_links(self) -> frozenset[str]:
        """The ``sxm*`` links here that record no machine (module docstring)."""
        return frozenset(
            str(msg.get_attr("IFLA_IFNAME"))
            for msg in self._links
            if str(msg.get_attr("IFLA_IFNAME")).startswith(MACHINE_IF_PREFIX)
            and _from_alias(msg) is None
        )

    def routes(self) -> frozenset[Route]:
        """The routes with protocol ``ROUTE_PROTO`` in the main table and the peering table,
        and only those."""
        names = {int(m["index"]): str(m.get_attr("IFLA_IFNAME")) for m in self._links}
        found = set()
        for r in self._routes:
            oif = r.get_attr("RTA_OIF")
            table = r.get_attr("RTA_TABLE") or r["table"]
            if r["proto"] != ROUTE_PROTO or table not in TABLES or oif not in names:
                continue
            dst = r.get_attr("RTA_DST") or "::"
            found.add(Route(IPv6Network(f"{dst}/{r['dst_len']}"), names[oif], table))
        return frozenset(found)

    def service_addresses(self) -> frozenset[IPv6Address]:
        """The ``/128`` addresses inside ``fdaa::/16`` on ``lo``."""
        (lo,) = (int(m["index"]) for m in self._links if m.get_attr("IFLA_IFNAME") == "lo")
        on_lo = self._addresses.get(lo, set())
        return frozenset(a for a, plen in on_lo if plen == 128 and a in SIXPN_PREFIX)


@contextlib.contextmanager
def snapshot(what: str) -> Iterator[Snapshot]:
    """A :class:`Snapshot` of this namespace for the ``with`` block; failures name ``what``."""
    with _sys.netlink(what), IPRoute() as ipr:
        yield Snapshot(ipr)


def read_machines() -> frozenset[MachineLink]:
    with snapshot("reading machine links") as kernel:
        return kernel.machines()


def machine_aliases() -> list[MachineLink]:
    with snapshot("listing machine links") as kernel:
        return kernel.machine_aliases()


def delete_machine_links() -> None:
    """Delete every ``sxm*`` link here (teardown: the veth peers go with them)."""
    with _sys.netlink("deleting machine links"), IPRoute() as ipr:
        for msg in ipr.get_links():
            if str(msg.get_attr("IFLA_IFNAME")).startswith(MACHINE_IF_PREFIX):
                with _sys.ignore(_sys.ENODEV):
                    ipr.link("del", index=msg["index"])


def _alias(link: MachineLink) -> str:
    return f"{ALIAS_TAG} {link.machine_id} {link.address} {link.netns}"


def _from_alias(msg: Any) -> MachineLink | None:
    name = str(msg.get_attr("IFLA_IFNAME"))
    parts = str(msg.get_attr("IFLA_IFALIAS") or "").split(" ")
    if not name.startswith(MACHINE_IF_PREFIX) or len(parts) != 4 or parts[0] != ALIAS_TAG:
        return None
    try:
        address = IPv6Address(parts[2])
    except ValueError:
        return None
    prefix = IPv6Network(f"{address}/112", strict=False)
    return MachineLink(parts[1], parts[3], name, address, prefix)


def _host_side_ok(
    ipr: Any, msg: Any, link: MachineLink, addrs: dict[int, set[tuple[IPv6Address, int]]]
) -> bool:
    info = msg.get_attr("IFLA_LINKINFO")
    if info is None or info.get_attr("IFLA_INFO_KIND") != "veth":
        return False
    if not msg["flags"] & IFF_UP or msg.get_attr("IFLA_MTU") != MTU:
        return False
    if (HOST_SIDE_ADDRESS, 64) not in addrs.get(msg["index"], set()):
        return False
    nsid = msg.get_attr("IFLA_LINK_NETNSID")
    return nsid is not None and nsid == _nsid(ipr, link.netns)


def _machine_side_ok(link: MachineLink, *, peer_index: int) -> bool:
    if not _sys.is_netns(NETNS_DIR / link.netns):
        return False
    etc = ETC_NETNS / link.netns
    for name, text in machine_files(link).items():
        try:
            if (etc / name).read_text() != text:
                return False
        except OSError:
            return False
    with _sys.ipr_in(NETNS_DIR / link.netns) as ns:
        by_name = {str(m.get_attr("IFLA_IFNAME")): m for m in ns.get_links()}
        lo, eth0 = by_name.get("lo"), by_name.get(link.inner_ifname)
        if lo is None or eth0 is None or eth0["index"] != peer_index:
            return False
        if (
            not (lo["flags"] & IFF_UP and eth0["flags"] & IFF_UP)
            or eth0.get_attr("IFLA_MTU") != MTU
        ):
            return False
        if (link.address, 112) not in _addresses_by_index(ns).get(eth0["index"], set()):
            return False
        return any(
            r["dst_len"] == 0
            and r.get_attr("RTA_OIF") == eth0["index"]
            and r.get_attr("RTA_GATEWAY") == str(HOST_SIDE_ADDRESS)
            for r in ns.route("dump", family=AF6)
        )


def _ensure_pair(ipr: Any, link: MachineLink, into: str | int, ns: Any, what: str) -> int:
    """The host side's index, its alias recording ``link``, once its veth peer is ``eth0`` in
    the machine's namespace: ``ns`` (``into`` is its name), or a namespace not named yet
    (``ns`` None, ``into`` its descriptor), which has nothing of ours in it."""
    found = ipr.link_lookup(ifname=link.host_ifname)
    msg = ipr.get_links(found[0])[0] if found else None
    if msg is not None and (ns is None or not _pair_ok(ipr, msg, ns, link)):
        ipr.link("del", index=msg["index"])  # a stale pair (its peer elsewhere): made again
        msg = None
    if msg is None:
        if ns is not None and ns.link_lookup(ifname=link.inner_ifname):
            raise Conflict(f"{what}: {link.inner_ifname} already exists there and is not ours")
        peer = {"ifname": link.inner_ifname, "net_ns_fd": into, "mtu": MTU}
        ipr.link("add", ifname=link.host_ifname, kind="veth", mtu=MTU, peer=peer)
        (msg,) = ipr.get_links(*ipr.link_lookup(ifname=link.host_ifname))
    if msg.get_attr("IFLA_IFALIAS") != _alias(link):
        ipr.link("set", index=msg["index"], ifalias=_alias(link))  # the record
    return int(msg["index"])


def _pair_ok(ipr: Any, msg: Any, ns: Any, link: MachineLink) -> bool:
    """Whether a host side found by name is a veth whose peer is ``eth0`` in ``ns``."""
    info = msg.get_attr("IFLA_LINKINFO")
    if info is None or info.get_attr("IFLA_INFO_KIND") != "veth":
        return False
    nsid = msg.get_attr("IFLA_LINK_NETNSID")
    if nsid is None or nsid != _nsid(ipr, link.netns):
        return False
    return bool(ns.link_lookup(ifname=link.inner_ifname) == [msg.get_attr("IFLA_LINK")])


def _nsid(ipr: Any, ns: str) -> int | None:
    """The ID this namespace gives ``ns`` (what a veth's IFLA_LINK_NETNSID says), if any."""
    if not _sys.is_netns(NETNS_DIR / ns):
        return None
    try:
        fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
    except OSError:
        return None
    try:
        got = ipr.get_netnsid(fd=fd)
    finally:
        os.close(fd)
    nsid = None if got is None else got.get("nsid")
    return int(nsid) if nsid is not None and nsid >= 0 else None


def ensure_address(ipr: Any, index: int, address: IPv6Address, prefixlen: int) -> None:
    with _sys.ignore(_sys.EEXIST):
        ipr.addr(
            "add",
            index=index,
            address=str(address),
            prefixlen=prefixlen,
            family=AF6,
            flags=IFA_F_NODAD,  # usable at once; the address is unique by construction
        )


def _addresses_by_index(ipr: Any) -> dict[int, set[tuple[IPv6Address, int]]]:
    out: dict[int, set[tuple[IPv6Address, int]]] = {}
    for a in ipr.get_addr(family=AF6):
        address = IPv6Address(a.get_attr("IFA_ADDRESS"))
        out.setdefault(int(a["index"]), set()).add((address, int(a["prefixlen"])))
    return out
