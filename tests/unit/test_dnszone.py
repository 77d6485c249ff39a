"""The zone answers every `.internal` name of SPEC 4.2 from one network's data only.

Responses are built exactly as the server sends them (``dnswire.respond`` on the client's own
query bytes) and read back with dnspython, so what is checked is what a resolver would see.
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv6Address

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from sixpn.core import addressing, dnswire
from sixpn.core.regions import RegionCatalogue, great_circle_km
from sixpn.dns.zone import Zone
from sixpn.model.entities import App, Machine, MachineState, Network, Peer
from sixpn.runtime.dns import zone_settings
from sixpn.view import Delta, View

pytestmark = pytest.mark.unit

NET_A, NET_B = 7, 9
HOSTS = {"fra": 1, "ams": 2, "syd": 3}


def machine(
    mid: int,
    app: str,
    region: str,
    *,
    net: int = NET_A,
    state: MachineState = MachineState.STARTED,
    group: str = "app",
    metadata: dict[str, str] | None = None,
) -> Machine:
    host_id = HOSTS[region]
    field = 0x10000 + mid
    return Machine(
        id=f"{mid:014x}",
        org="a" if net == NET_A else "b",
        app=app,
        network="default",
        net_id=net,
        host=f"h-{region}",
        host_id=host_id,
        region=region,
        field=field,
        address=addressing.machine_address(net, host_id, field),
        state=state,
        process_group=group,
        metadata=metadata or {},
        created_at=0.0,
        updated_at=0.0,
    )


def peer(name: str, slot: int, *, ephemeral: bool = False) -> Peer:
    return Peer(
        org="a",
        name=name,
        network="default",
        net_id=NET_A,
        gateway="h-fra",
        host_id=1,
        slot=slot,
        address=addressing.peer_address(NET_A, 1, slot),
        public_key="k" * 43 + "=",
        ephemeral=ephemeral,
        created_at=0.0,
    )


MACHINES = [
    machine(1, "web", "fra", metadata={"role": "primary"}),
    machine(2, "web", "ams", group="worker", metadata={"role": "Replica"}),
    machine(3, "web", "syd"),
    machine(4, "web", "fra", state=MachineState.STOPPED, group="cron"),
    machine(5, "db", "ams"),
    machine(6, "web", "fra", net=NET_B),
    machine(7, "secret", "fra", net=NET_B),
]


@pytest.fixture
def zone() -> Zone:
    view = View(revision=1)
    view.networks = {
        ("a", "default"): Network("a", "default", NET_A, 0.0),
        ("b", "default"): Network("b", "default", NET_B, 0.0),
    }
    for app, net in (("web", NET_A), ("db", NET_A), ("empty", NET_A), ("web", NET_B)):
        org = "a" if net == NET_A else "b"
        view.apps[(org, app)] = App(org, app, "default", net, 0.0)
    view.apps[("b", "secret")] = App("b", "secret", "default", NET_B, 0.0)
    view.machines = {m.id: m for m in MACHINES}
    view.peers = {("a", p.name): p for p in (peer("laptop", 0), peer("ci", 1, ephemeral=True))}
    z = Zone(zone_settings(list(RegionCatalogue.default()), "fra", api_in_network=True))
    z.load(view)
    return z


def ask(
    zone: Zone, name: str, qtype: str = "AAAA", *, net: int = NET_A, edns: bool = False
) -> dns.message.Message:
    query = dns.message.make_query(name, qtype, use_edns=0 if edns else False)
    data = query.to_wire()
    parsed = dnswire.parse_query(data)
    assert isinstance(parsed, tuple)
    qend, qname, qt, edns_size = parsed
    entry = zone.lookup(net, qname, qt)
    reply = dns.message.from_wire(dnswire.respond(data, qend, edns_size, entry, 65535))
    assert reply.id == query.id
    assert reply.flags & dns.flags.AA
    return reply


def addresses(reply: dns.message.Message) -> list[str]:
    return [rr.address for rrset in reply.answer for rr in rrset]


def txt(reply: dns.message.Message) -> str:
    (rrset,) = reply.answer
    (rr,) = rrset
    return b"".join(rr.strings).decode()


def addr(mid: int, net: int = NET_A) -> str:
    return next(str(m.address) for m in MACHINES if m.id == f"{mid:014x}" and m.net_id == net)


def test_app_names_answer_started_machines(zone: Zone) -> None:
    assert sorted(addresses(ask(zone, "web.internal"))) == sorted([addr(1), addr(2), addr(3)])
    assert sorted(addresses(ask(zone, "global.web.internal"))) == sorted(
        [addr(1), addr(2), addr(3)]
    )
    assert addresses(ask(zone, "fra.web.internal")) == [addr(1)]
    assert addresses(ask(zone, "db.internal")) == [addr(5)]


def test_nearest_orders_by_distance_from_the_servers_region(zone: Zone) -> None:
    # From fra: fra (0 km), ams (~360 km), syd (~16000 km).
    assert addresses(ask(zone, "top1.nearest.of.web.internal")) == [addr(1)]
    assert sorted(addresses(ask(zone, "top2.nearest.of.web.internal"))) == sorted(
        [addr(1), addr(2)]
    )
    assert len(addresses(ask(zone, "top9.nearest.of.web.internal"))) == 3
    fra, ams = (RegionCatalogue.default().get(c) for c in ("fra", "ams"))
    assert great_circle_km(fra, ams) < 500


def test_vm_names_include_stopped_machines(zone: Zone) -> None:
    stopped = MACHINES[3]
    assert addresses(ask(zone, f"{stopped.id}.vm.web.internal")) == [str(stopped.address)]
    assert ask(zone, "00000000000099.vm.web.internal").rcode() == dns.rcode.NXDOMAIN


def test_process_groups_and_metadata(zone: Zone) -> None:
    assert addresses(ask(zone, "worker.process.web.internal")) == [addr(2)]
    # cron's only machine is stopped: the name exists, with nothing to list
    reply = ask(zone, "cron.process.web.internal")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == []
    assert ask(zone, "nope.process.web.internal").rcode() == dns.rcode.NXDOMAIN
    assert addresses(ask(zone, "primary.role.kv._metadata.web.internal")) == [addr(1)]
    assert addresses(ask(zone, "replica.role.kv._metadata.web.internal")) == [addr(2)]
    assert ask(zone, "other.role.kv._metadata.web.internal").rcode() == dns.rcode.NXDOMAIN


def test_txt_names(zone: Zone) -> None:
    assert txt(ask(zone, "regions.web.internal", "TXT")) == "ams,fra,syd"
    assert txt(ask(zone, "all.regions.web.internal", "TXT")) == "ams,fra,syd"
    vms = txt(ask(zone, "vms.web.internal", "TXT")).split(",")
    assert vms == [f"{m.id} {m.region}" for m in MACHINES[:3]]
    assert len(txt(ask(zone, "all.vms.web.internal", "TXT")).split(",")) == 4
    assert txt(ask(zone, "_apps.internal", "TXT")) == "db,empty,web"
    assert txt(ask(zone, "_peer.internal", "TXT")) == "laptop"  # ephemeral ci left out
    instances = txt(ask(zone, "_instances.internal", "TXT")).split(";")
    assert f"instance={MACHINES[4].id},app=db,ip={addr(5)},region=ams" in instances
    assert len(instances) == 4
    assert len(txt(ask(zone, "all._instances.internal", "TXT")).split(";")) == 5


def test_peers_and_api(zone: Zone) -> None:
    assert addresses(ask(zone, "laptop._peer.internal")) == [
        str(addressing.peer_address(NET_A, 1, 0))
    ]
    assert addresses(ask(zone, "ci._peer.internal")) == [str(addressing.peer_address(NET_A, 1, 1))]
    assert addresses(ask(zone, "_api.internal")) == [str(addressing.network_service_address(NET_A))]


def test_long_txt_values_are_split_into_255_byte_strings(zone: Zone) -> None:
    many = [machine(100 + i, "many", "fra") for i in range(40)]
    zone.apply(Delta("machine", None, m) for m in many)
    reply = ask(zone, "vms.many.internal", "TXT")
    (rrset,) = reply.answer
    (rr,) = rrset
    assert len(rr.strings) > 1
    assert all(len(s) <= 255 for s in rr.strings)
    assert b"".join(rr.strings).decode().split(",") == [f"{m.id} fra" for m in many]


def test_negative_answers_carry_the_soa_and_types_answer_nodata(zone: Zone) -> None:
    nx = ask(zone, "nothing.internal")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    (soa,) = nx.authority
    assert soa.name.to_text() == "internal."
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa.ttl == 5
    for name, qtype in (("web.internal", "A"), ("web.internal", "TXT"), ("_apps.internal", "AAAA")):
        reply = ask(zone, name, qtype)
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.answer == []
        assert reply.authority[0].rdtype == dns.rdatatype.SOA


def test_case_is_matched_insensitively_and_echoed(zone: Zone) -> None:
    reply = ask(zone, "FRA.Web.INTERNAL")
    assert reply.question[0].name.to_text() == "FRA.Web.INTERNAL."
    assert reply.answer[0].name.to_text() == "FRA.Web.INTERNAL."
    assert addresses(reply) == [addr(1)]


def test_another_networks_names_look_like_names_that_do_not_exist(zone: Zone) -> None:
    secret = ask(zone, "secret.internal")  # exists, but in network B
    never = ask(zone, "sekret.internal")  # exists nowhere, same length
    assert secret.rcode() == never.rcode() == dns.rcode.NXDOMAIN
    assert len(secret.to_wire()) == len(never.to_wire())
    # same app name in both networks: each sees only its own
    assert addresses(ask(zone, "web.internal", net=NET_B)) == [addr(6, NET_B)]
    # a network that does not exist
    assert ask(zone, "web.internal", net=12345).rcode() == dns.rcode.NXDOMAIN


def test_changes_invalidate_only_what_they_touch(zone: Zone) -> None:
    assert len(addresses(ask(zone, "web.internal"))) == 3
    db_before = ask(zone, "db.internal")
    stopped = dataclasses.replace(MACHINES[0], state=MachineState.STOPPED)
    zone.apply([Delta("machine", MACHINES[0], stopped)])
    assert sorted(addresses(ask(zone, "web.internal"))) == sorted([addr(2), addr(3)])
    assert addresses(ask(zone, "fra.web.internal")) == []
    assert len(txt(ask(zone, "_instances.internal", "TXT")).split(";")) == 3
    assert addresses(ask(zone, "db.internal")) == addresses(db_before)
    destroyed = dataclasses.replace(stopped, state=MachineState.DESTROYED)
    zone.apply([Delta("machine", stopped, destroyed)])
    assert ask(zone, f"{stopped.id}.vm.web.internal").rcode() == dns.rcode.NXDOMAIN
    new = machine(50, "web", "ams")
    zone.apply([Delta("machine", None, new)])
    assert str(new.address) in addresses(ask(zone, "ams.web.internal"))


def test_truncation_over_udp_and_full_answer_with_room() -> None:
    many = [machine(200 + i, "big", "fra") for i in range(100)]
    z = Zone(zone_settings(list(RegionCatalogue.default()), None, api_in_network=False))
    view = View(revision=1, networks={("a", "default"): Network("a", "default", NET_A, 0.0)})
    view.machines = {m.id: m for m in many}
    z.load(view)
    query = dns.message.make_query("big.internal", "AAAA")
    data = query.to_wire()
    parsed = dnswire.parse_query(data)
    assert isinstance(parsed, tuple)
    qend, qname, qtype, edns_size = parsed
    entry = z.lookup(NET_A, qname, qtype)
    small = dnswire.respond(data, qend, edns_size, entry, dnswire.udp_limit(edns_size))
    assert len(small) <= 512
    truncated = dns.message.from_wire(small)
    assert truncated.flags & dns.flags.TC
    assert truncated.answer == []
    full = dns.message.from_wire(dnswire.respond(data, qend, edns_size, entry, 65535))
    assert {IPv6Address(a) for a in addresses(full)} == {m.address for m in many}


def test_an_app_of_5000_machines_answers_every_name_without_an_error() -> None:
    """SPEC 4.2 names stay answerable when their answer exceeds one DNS message: the app's
    AAAA holds the addresses that fit, ``_instances`` and ``all._instances`` their first whole
    rows (they used to raise FormError at ~5,000 machines)."""
    view = View(revision=1)
    view.networks = {("a", "default"): Network("a", "default", NET_A, 0.0)}
    view.apps[("a", "big")] = App("a", "big", "default", NET_A, 0.0)
    fleet = [machine(i, "big", ("fra", "ams", "syd")[i % 3]) for i in range(1, 5001)]
    view.machines = {m.id: m for m in fleet}
    z = Zone(zone_settings(list(RegionCatalogue.default()), "fra", api_in_network=True))
    z.load(view)
    every = {str(m.address) for m in fleet}
    found = addresses(ask(z, "big.internal", edns=True))
    assert 2000 < len(found) < 2400
    assert set(found) <= every
    for name in ("_instances.internal", "all._instances.internal"):
        rows = txt(ask(z, name, "TXT", edns=True)).split(";")
        assert 500 < len(rows) < 5000
        assert all(r.startswith("instance=") and r.endswith(("fra", "ams", "syd")) for r in rows)
    assert txt(ask(z, "_apps.internal", "TXT")) == "big"
