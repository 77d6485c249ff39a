"""The ``peered`` set of ``table inet sixpn`` against the real kernel and nft (SPEC 6).

Each scenario runs in a throwaway network namespace (``unshare --net``, gone with the process):
the table is loaded as rendered, read back, and its elements added and removed, as the agent
does. Packets through the rules are observed end to end in tests/e2e/test_vpc.py.
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
    done = subprocess.run(
        ["unshare", "--net", "--", sys.executable, "-c", SCENARIO],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_rendered_table_names_each_peering_once() -> None:
    vpc = Peering(IPv6Network("fdaa:0:18::/48"), IPv6Network("2001:db8:1::/56"))
    text = nft.render_table("sxw1", (), (), [vpc, vpc])
    assert text.count("fdaa:0:18::/48 . 2001:db8:1::/56") == 1
    assert "flags interval" in text
    with pytest.raises(InvalidInput, match="network /48"):
        nft.render_table("sxw1", (), (), [Peering(IPv6Network("fdaa:0:18::/64"), vpc.prefix)])
