"""The agent's endpoint rule (agent/endpoint.py) in a namespace of its own: an endpoint on one
of the host's addresses is followed when that address goes; any other is left as given."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from sixpn.lab import netns

pytestmark = pytest.mark.netns

PROBE = """
import json, sys
from sixpn.agent.endpoint import EndpointFollower
follow = EndpointFollower(sys.argv[1])
print(json.dumps([follow.follows, follow.current(sys.argv[2:])]))
"""


def follow(ns: str, configured: str, *others: str) -> tuple[bool, str]:
    """What the agent would say in ``ns``: whether it follows ``configured``, and the endpoint
    it would record now given the other hosts' ``others``."""
    argv = [sys.executable, "-c", PROBE, configured, *others]
    done = subprocess.run(netns.exec_argv(ns, argv), capture_output=True, text=True, check=True)
    follows, now = json.loads(done.stdout)
    return bool(follows), str(now)


def ip(ns: str, *argv: str) -> None:
    done = netns.run(ns, ["ip", *argv])
    assert done.returncode == 0, done.stderr


@pytest.fixture
def host() -> Iterator[str]:
    """A host whose underlay link (a veth: this kernel has no dummy links) holds 10.77.0.11/24
    and 2001:db8:77::11/64."""
    with netns.temporary("ep") as ns:
        ip(ns, "link", "add", "eth0", "type", "veth", "peer", "name", "wire0")
        ip(ns, "link", "set", "wire0", "up")
        ip(ns, "link", "set", "eth0", "up")
        ip(ns, "addr", "add", "10.77.0.11/24", "dev", "eth0")
        ip(ns, "addr", "add", "2001:db8:77::11/64", "dev", "eth0", "nodad")
        yield ns


def test_an_endpoint_on_the_hosts_own_address_follows_it_when_it_moves(host: str) -> None:
    others = ("10.77.0.12:51820", "[2001:db8:77::12]:51820")
    assert follow(host, "10.77.0.11:51820", *others) == (True, "10.77.0.11:51820")
    ip(host, "addr", "del", "10.77.0.11/24", "dev", "eth0")
    ip(host, "addr", "add", "10.77.0.62/24", "dev", "eth0")
    # the kernel's source toward the other hosts, the configured port
    assert follow(host, "10.77.0.11:51820", *others) == (False, "10.77.0.11:51820")
    # (an agent started now is told the old address: it is not this host's, so it is left
    # alone; the agent that was running when it moved follows it, as below)


def test_a_running_agent_follows_its_address_and_comes_back_with_it(host: str) -> None:
    probe = """
import json, subprocess, sys
from sixpn.agent.endpoint import EndpointFollower
follow = EndpointFollower("10.77.0.11:51820")
others = ["[2001:db8:77::12]:51820", "10.77.0.12:51820"]
seen = [follow.follows, follow.current(others)]
ip = ["ip", "addr"]
subprocess.run([*ip, "del", "10.77.0.11/24", "dev", "eth0"], check=True)
subprocess.run([*ip, "add", "10.77.0.62/24", "dev", "eth0"], check=True)
seen.append(follow.current(others))
subprocess.run([*ip, "add", "10.77.0.11/24", "dev", "eth0"], check=True)
seen.append(follow.current(others))
print(json.dumps(seen))
"""
    argv = [sys.executable, "-c", probe]
    done = subprocess.run(netns.exec_argv(host, argv), capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == [
        True,
        "10.77.0.11:51820",
        "10.77.0.62:51820",  # gone: the source toward an IPv4 host (not the IPv6 one)
        "10.77.0.11:51820",  # back: the configured one again
    ]


def test_an_endpoint_that_is_not_the_hosts_is_never_changed(host: str) -> None:
    # a public address in front of NAT, and a name: the operator's word
    for configured in ("203.0.113.5:51820", "gw.example.com:51820"):
        assert follow(host, configured, "10.77.0.12:51820") == (False, configured)


def test_with_no_route_to_any_other_host_the_endpoint_stays(host: str) -> None:
    ip(host, "link", "set", "eth0", "down")
    ip(host, "addr", "del", "10.77.0.11/24", "dev", "eth0")
    assert follow(host, "10.77.0.11:51820", "10.77.0.12:51820") == (False, "10.77.0.11:51820")
