"""Routed peering's pieces against the real kernel and nft (SPEC 6): the ``peered`` set of
``table inet sixpn``, and the routing table that only 6PN's packets look up.

Each scenario runs in a throwaway network namespace (``unshare --net``, gone with the process),
through the agent's own adapters. Packets through the whole path are observed end to end in
tests/e2e/test_vpc.py.
"""

from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv6Network

import pytest

from sixpn.agent.linux import nft
from sixpn.core.hoststate import Peering
from sixpn.model.errors import InvalidInput

pytestmark = pytest.mark.netns

SCENARIO = """
import sys
from ipaddress import IPv6Network as N
from sixpn.agent.linux import nft
from sixpn.core.hoststate import Peering, Source

net, other = N("fdaa:0:18::/48"), N("fdaa:0:19::/48")
vpc = Peering(net, N("2001:db8:1::/56"))
one = Peering(other, N("2001:db8:2::5/128"))
more = Peering(net, N("2001:db8:3::/64"))
nft.replace_table("sxw1", {net}, {Source("sxmabc", N("fdaa:0:18:1:2:3:4:0/112"))}, {vpc, one})
table = nft.read("sxw1")
assert table.rules_ok, "the table as rendered reads back as rendered"
assert table.peered == {vpc, one}, table.peered
nft.add_peered({more})
assert nft.read("sxw1").peered == {vpc, one, more}
nft.remove_peered({more, Peering(other, N("2001:db8:9::/64"))})  # one absent: no failure
assert nft.read("sxw1").peered == {vpc, one}
nft.remove_peered({vpc, one})
table = nft.read("sxw1")
assert table.peered == frozenset() and table.rules_ok
print("ok")
"""


def test_peerings_are_loaded_read_added_and_removed_in_the_kernel() -> None:
    run_scenario(SCENARIO)


ROUTING = """
import json, subprocess
from ipaddress import IPv6Network as N
from sixpn.agent.linux import hostnet
from sixpn.core.hoststate import PEERING_TABLE, Route

def ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout

def dev_for(dst, src=None):
    argv = ["-6", "-j", "route", "get", dst] + (["from", src] if src else [])
    done = subprocess.run(["ip", *argv], capture_output=True, text=True)
    return json.loads(done.stdout)[0].get("dev") if done.returncode == 0 else None

ip("link", "add", "sxw1", "type", "veth", "peer", "name", "up0")
ip("link", "set", "sxw1", "up"); ip("link", "set", "up0", "up"); ip("link", "set", "lo", "up")
ip("-6", "addr", "add", "2001:db8:ffff::1/64", "dev", "up0", "nodad")  # the host's own uplink
ip("-6", "route", "add", "default", "via", "2001:db8:ffff::2", "dev", "up0")
route = Route(N("2001:db8::/32"), "sxw1", PEERING_TABLE)  # covers the host's own uplink
hostnet.ensure_peering_rule(); hostnet.ensure_peering_rule()  # idempotent
assert hostnet.peering_rule_present()
hostnet.add_route(route)
assert route in hostnet.read_routes()
# 6PN's packets follow the route; the host's own (its WireGuard endpoint, anything) do not
assert dev_for("2001:db8:1::5", src="fdaa:0:18:0:1:0:a:2") == "sxw1"
assert dev_for("2001:db8:1::5") == "up0"
assert dev_for("2001:db8:ffff::2") == "up0"
hostnet.remove_route(route)
assert route not in hostnet.read_routes()
hostnet.remove_peering_rule(); hostnet.remove_peering_rule()
assert not hostnet.peering_rule_present()
assert "lookup 110" not in ip("-6", "rule")
print("ok")
"""


def run_scenario(code: str) -> None:
    done = subprocess.run(
        ["unshare", "--net", "--", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_a_routed_prefix_is_followed_by_6pn_packets_only() -> None:
    """Even a prefix covering the host's own uplink takes none of the host's traffic."""
    run_scenario(ROUTING)


def test_the_rendered_table_names_each_peering_once() -> None:
    vpc = Peering(IPv6Network("fdaa:0:18::/48"), IPv6Network("2001:db8:1::/56"))
    text = nft.render_table("sxw1", (), (), [vpc, vpc])
    assert text.count("fdaa:0:18::/48 . 2001:db8:1::/56") == 1
    assert "flags interval" in text
    with pytest.raises(InvalidInput, match="network /48"):
        nft.render_table("sxw1", (), (), [Peering(IPv6Network("fdaa:0:18::/64"), vpc.prefix)])
