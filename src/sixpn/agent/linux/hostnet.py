"""The routes, the rule of routed peering, the service addresses and the forwarding switch the
agent owns in the host's namespace (pyroute2, ``/proc/sys``).

Only routes with protocol ``ROUTE_PROTO`` (in the main table and ``PEERING_TABLE``), the rule
``from fdaa::/16 lookup PEERING_TABLE`` and ``/128`` addresses inside ``fdaa::/16`` on ``lo``
are read, added or removed: nothing else in the namespace is touched. Reads go through
:func:`sixpn.agent.linux.links.snapshot`, one netlink dump for all of the host's state.
"""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from sixpn.agent.linux import _sys
from sixpn.agent.linux.links import AF6, ensure_address, snapshot
from sixpn.core.addressing import SIXPN_PREFIX
from sixpn.core.hoststate import PEERING_RULE_PRIORITY, PEERING_TABLE, ROUTE_PROTO, Route
from sixpn.model.errors import NotFound

FORWARDING = Path("/proc/sys/net/ipv6/conf/all/forwarding")


# -- routes ----------------------------------------------------------------------------------


def add_route(route: Route) -> None:
    """Route ``route.prefix`` to ``route.ifname`` with our protocol (replacing one to elsewhere)."""
    what = f"adding route {route.prefix} dev {route.ifname}"
    with _sys.netlink(what), IPRoute() as ipr:
        found = ipr.link_lookup(ifname=route.ifname)
        if not found:
            raise NotFound(f"{what}: no interface {route.ifname}")
        ipr.route("replace", **_route_spec(route), oif=found[0])


def remove_route(route: Route) -> None:
    what = f"removing route {route.prefix} dev {route.ifname}"
    with _sys.netlink(what), IPRoute() as ipr:
        found = ipr.link_lookup(ifname=route.ifname)
        if found:
            with _sys.ignore(_sys.ESRCH, _sys.ENODEV, _sys.ENOENT):
                ipr.route("del", **_route_spec(route), oif=found[0])


def read_routes() -> frozenset[Route]:
    with snapshot("reading routes") as kernel:
        return kernel.routes()


def _route_spec(route: Route) -> dict[str, Any]:
    prefix = route.prefix
    return {
        "dst": str(prefix.network_address),
        "dst_len": prefix.prefixlen,
        "proto": ROUTE_PROTO,
        "family": AF6,
        "table": route.table,
    }


# -- the rule of routed peering --------------------------------------------------------------

_PEERING_RULE = {
    "family": AF6,
    "src": str(SIXPN_PREFIX.network_address),
    "src_len": SIXPN_PREFIX.prefixlen,
    "table": PEERING_TABLE,
    "priority": PEERING_RULE_PRIORITY,
}


def peering_rule_present() -> bool:
    """Whether ``from fdaa::/16 lookup PEERING_TABLE`` is there, at its priority."""
    with _sys.netlink("reading routing rules"), IPRoute() as ipr:
        return any(_is_peering_rule(r) for r in ipr.get_rules(family=AF6))


def ensure_peering_rule() -> None:
    with _sys.netlink("adding the routed peering rule"), IPRoute() as ipr:
        if not any(_is_peering_rule(r) for r in ipr.get_rules(family=AF6)):
            ipr.rule("add", **_PEERING_RULE)


def remove_peering_rule() -> None:
    with _sys.netlink("removing the routed peering rule"), IPRoute() as ipr:
        while any(_is_peering_rule(r) for r in ipr.get_rules(family=AF6)):
            ipr.rule("del", **_PEERING_RULE)


def _is_peering_rule(rule: Any) -> bool:
    src = rule.get_attr("FRA_SRC")
    return (
        src is not None
        and IPv6Network(f"{src}/{rule['src_len']}") == SIXPN_PREFIX
        and (rule.get_attr("FRA_TABLE") or rule["table"]) == PEERING_TABLE
        and rule.get_attr("FRA_PRIORITY") == PEERING_RULE_PRIORITY
    )


# -- service addresses on lo -----------------------------------------------------------------


def add_address(address: IPv6Address) -> None:
    with _sys.netlink(f"adding {address}/128 to lo"), IPRoute() as ipr:
        (lo,) = ipr.link_lookup(ifname="lo")
        ensure_address(ipr, lo, address, 128)


def remove_address(address: IPv6Address) -> None:
    with _sys.netlink(f"removing {address}/128 from lo"), IPRoute() as ipr:
        (lo,) = ipr.link_lookup(ifname="lo")
        with _sys.ignore(_sys.EADDRNOTAVAIL, _sys.ENOENT):
            ipr.addr("del", index=lo, address=str(address), prefixlen=128, family=AF6)


def read_service_addresses() -> frozenset[IPv6Address]:
    with snapshot("reading addresses on lo") as kernel:
        return kernel.service_addresses()


# -- forwarding ------------------------------------------------------------------------------


def enable_forwarding() -> None:
    """IPv6 forwarding in this namespace (``/proc/sys`` is per namespace of the caller)."""
    with _sys.netlink("enabling IPv6 forwarding"):
        if not forwarding_enabled():
            FORWARDING.write_text("1\n")


def forwarding_enabled() -> bool:
    return FORWARDING.read_text().strip() == "1"
