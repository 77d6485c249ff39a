"""The UDP path's whole-response cache: a change in one network drops that network's kept
responses and no other's, and every answer after a change is the new one."""

from __future__ import annotations

import dataclasses

import dns.message
import pytest

from sixpn.dns.server import DnsServer
from sixpn.dns.zone import Zone
from sixpn.view import Delta, View
from tests.unit.test_dnszone import NET_A, NET_B, machine
from tests.unit.test_dnszone import zone as zone_fixture

pytestmark = pytest.mark.unit

zone = zone_fixture


def ask(server: DnsServer, net_id: int, name: str) -> set[str]:
    """One UDP query through the server's general path (and its cache), answered from net_id."""
    if server.zone.version != server._responses_version:
        server._forget_changed()
    data = dns.message.make_query(name, "AAAA").to_wire()
    hit = server._responses.get((net_id, data[2:]))
    out = data[:2] + hit if hit is not None else server._answer_udp(None, data, ("x", 0), net_id)  # type: ignore[arg-type]
    assert out is not None
    return {rr.address for rrset in dns.message.from_wire(out).answer for rr in rrset}


def test_a_change_in_one_network_keeps_the_others_responses(zone: Zone) -> None:
    server = DnsServer(zone)
    server.ready = True
    before_a, before_b = ask(server, NET_A, "web.internal"), ask(server, NET_B, "web.internal")
    assert before_a
    assert before_b
    kept_b = {k for k in server._responses if k[0] == NET_B}
    assert kept_b
    new = machine(900, "web", "fra")  # a new machine of network A's web
    zone.apply([Delta("machine", None, new)])
    after_a = ask(server, NET_A, "web.internal")
    assert after_a == before_a | {str(new.address)}  # the new answer, not the kept one
    assert kept_b <= set(server._responses)  # network B's responses were kept
    assert ask(server, NET_B, "web.internal") == before_b
    stopped = dataclasses.replace(new, state="stopped")
    zone.apply([Delta("machine", new, stopped)])
    assert ask(server, NET_A, "web.internal") == before_a


def test_a_reload_forgets_every_kept_response(zone: Zone) -> None:
    server = DnsServer(zone)
    server.ready = True
    ask(server, NET_A, "web.internal")
    ask(server, NET_B, "web.internal")
    assert server._responses
    zone.load(View(revision=2))  # a new snapshot: every network may have changed
    assert ask(server, NET_A, "web.internal") == set()
    assert all(k[0] == NET_A for k in server._responses)  # only the answer just given
