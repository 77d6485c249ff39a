"""The lab's topology file: the default is what SPEC 8 describes, a custom one parses, and
every mistake is refused before anything is built, with a message naming the file and the line
or the field path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sixpn.lab import topology
from sixpn.lab.fabric import HostSpec
from sixpn.lab.topology import AppSpec, MachineSpec, OrgSpec, PeerSpec
from sixpn.model.entities import MachineState
from sixpn.model.errors import InvalidInput

pytestmark = pytest.mark.unit

DOCS = Path(__file__).resolve().parents[2] / "docs" / "lab.md"

HOSTS = """
[[hosts]]
name = "fra-1"
region = "fra"
gateway = true

[[hosts]]
name = "fra-2"
region = "fra"

[[hosts]]
name = "ams-1"
region = "ams"
"""

ORG = """
[[orgs]]
name = "acme"
networks = ["staging"]

[[orgs.apps]]
name = "web"
"""


def refused(text: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        topology.parse(text, "topology.toml")
    assert info.value.message.startswith("topology.toml: "), info.value.message
    return info.value


# -- the default topology -------------------------------------------------------------------


def test_default_topology_is_what_spec_8_describes() -> None:
    topo = topology.default()
    assert len(topo.hosts) == 3
    assert set(topo.regions()) == {"fra", "ams"}
    for region in topo.regions():
        assert any(h.gateway for h in topo.hosts if h.region == region), region
    assert len(topo.orgs) == 2
    assert sorted(len(o.networks) for o in topo.orgs) == [0, 1]  # plus each org's default
    machines = [m for o in topo.orgs for m in o.machines]
    assert 8 <= topo.machine_count() <= 10
    assert [m.state for m in machines].count(MachineState.STOPPED) == 1
    assert any(m.process_group for m in machines)
    assert any(m.metadata for m in machines)
    assert any(m.region and m.count > 1 for m in machines), "placement by region"
    assert topology.describe(topo) == (
        "3 hosts (2 regions), 2 orgs, 3 networks, 4 apps, 9 machines"
    )


def test_default_has_an_app_in_both_regions_for_region_and_nearest_names() -> None:
    topo = topology.default()
    region_of = {h.name: h.region for h in topo.hosts}
    for org in topo.orgs:
        for app in org.apps:
            regions = {
                m.region or region_of[m.host or ""]
                for m in org.machines
                if m.app == app.name and m.state == MachineState.STARTED
            }
            if regions == {"fra", "ams"}:
                return
    pytest.fail("no app has started machines in both regions")


def test_an_app_in_a_second_network_of_the_org() -> None:
    acme = topology.default().orgs[0]
    assert acme.networks == ("staging",)
    assert {a.network for a in acme.apps} == {"default", "staging"}


def test_docs_show_the_default_topology_verbatim() -> None:
    assert topology.DEFAULT_TOML.strip() in DOCS.read_text()


def test_every_example_in_the_docs_parses() -> None:
    blocks = re.findall(r"```toml\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 2
    for block in blocks:
        assert topology.parse(block, "docs/lab.md").hosts


# -- a topology of one's own ----------------------------------------------------------------

CUSTOM = """
[[hosts]]
name = "iad-a"
region = "iad"
gateway = true

[[hosts]]
name = "iad-b"
region = "iad"

[[hosts]]
name = "sin-a"
region = "sin"
gateway = true

[[hosts]]
name = "syd-a"
region = "syd"

[[orgs]]
name = "red"
networks = ["blue", "green"]

[[orgs.apps]]
name = "db"
network = "blue"

[[orgs.apps]]
name = "cache"
network = "green"

[[orgs.machines]]
app = "db"
region = "iad"
count = 3
process_group = "primary"
metadata = { tier = "gold", "zone_id" = "z-1" }

[[orgs.machines]]
app = "cache"
host = "syd-a"
state = "stopped"

[[orgs.peers]]
name = "laptop"
network = "blue"
region = "sin"

[[orgs]]
name = "green"

[[orgs.apps]]
name = "db"          # the same app name as in org red: app names are per org

[[orgs.machines]]
app = "db"
host = "sin-a"

[[orgs]]
name = "empty"
"""


def test_a_custom_topology_parses() -> None:
    topo = topology.parse(CUSTOM, "custom.toml")
    assert topo.source == "custom.toml"
    assert topo.hosts == (
        HostSpec("iad-a", "iad", True),
        HostSpec("iad-b", "iad", False),
        HostSpec("sin-a", "sin", True),
        HostSpec("syd-a", "syd", False),
    )
    red, green, empty = topo.orgs
    assert red.networks == ("blue", "green")
    assert red.apps == (AppSpec("db", "blue"), AppSpec("cache", "green"))
    assert red.machines[0] == MachineSpec(
        app="db",
        region="iad",
        count=3,
        process_group="primary",
        metadata={"tier": "gold", "zone_id": "z-1"},
    )
    assert red.machines[1] == MachineSpec(app="cache", host="syd-a", state=MachineState.STOPPED)
    assert red.peers == (PeerSpec("laptop", "blue", "sin"),)
    assert green.apps == (AppSpec("db"),)
    assert empty == OrgSpec("empty")
    assert topology.describe(topo) == (
        "4 hosts (3 regions), 3 orgs, 5 networks, 3 apps, 5 machines, 1 peer"
    )


def test_hosts_alone_are_a_topology() -> None:
    topo = topology.parse('[[hosts]]\nname = "h"\nregion = "ams"\n', "t.toml")
    assert topo.orgs == ()
    assert topology.describe(topo) == "1 host (1 region), 0 orgs, 0 networks, 0 apps, 0 machines"


def test_load_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text(CUSTOM)
    assert topology.load(path) == topology.parse(CUSTOM, str(path))


def test_load_names_a_file_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"nope\.toml: cannot read the topology file: No such"):
        topology.load(tmp_path / "nope.toml")
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'[[hosts]]\nname = "h\xe9"\n')
    with pytest.raises(InvalidInput, match=r"latin1\.toml: not UTF-8 text"):
        topology.load(latin1)


# -- what is refused ------------------------------------------------------------------------


def test_toml_syntax_errors_name_the_line_and_column() -> None:
    error = refused(HOSTS + '\n[[orgs]]\nname "acme"\n')
    assert "not valid TOML" in error.message
    assert "(at line 16, column 6)" in error.message


def test_a_key_given_twice_is_a_toml_error_with_its_line() -> None:
    error = refused('[[hosts]]\nname = "a"\nname = "b"\n')
    assert "line 3" in error.message


MACHINE_ON = HOSTS + ORG + '\n[[orgs.machines]]\napp = "web"\n'


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        # shape: unknown keys, wrong types, missing keys
        (
            "host = 1\n" + HOSTS,
            "host",
            "unknown key (did you mean 'hosts'? keys: hosts, orgs)",
        ),
        (
            HOSTS.replace("gateway", "gatway"),
            "hosts[0].gatway",
            "unknown key (did you mean 'gateway'? keys: name, region, gateway)",
        ),
        (
            HOSTS.replace("gateway = true", 'gateway = "yes"'),
            "hosts[0].gateway",
            "must be true or false, got string 'yes'",
        ),
        ('[hosts]\nname = "a"\n', "hosts", "must be an array of tables ([[hosts]]), got a table"),
        ("hosts = [1]\n", "hosts[0]", "must be a table, got number 1"),
        ('[[hosts]]\nregion = "fra"\n', "hosts[0].name", "missing"),
        ('[[hosts]]\nname = "a"\n', "hosts[0].region", "missing"),
        ('[[hosts]]\nname = 7\nregion = "fra"\n', "hosts[0].name", "must be a string"),
        (HOSTS + '\n[[apps]]\nname = "web"\n', "apps", "write [[orgs.apps]]"),
        (
            HOSTS + ORG + '\n[[orgs.apps.machines]]\napp = "web"\n',
            "orgs[0].apps[0].machines",
            "unknown key",
        ),
        (
            HOSTS + '[[orgs]]\nname = "a"\napps = "web"\n',
            "orgs[0].apps",
            "must be an array of tables ([[orgs.apps]]), got string 'web'",
        ),
        (MACHINE_ON.replace('app = "web"', "app = 3"), "orgs[0].machines[0].app", "string"),
        # hosts
        ("", "hosts", "a lab needs at least one host"),
        (
            "".join(f'[[hosts]]\nname = "h{i}"\nregion = "fra"\n' for i in range(33)),
            "hosts",
            "at most 32 hosts (this file has 33): every host runs its own agent",
        ),
        (
            '[[hosts]]\nname = "a-very-long-host-name"\nregion = "fra"\n',
            "hosts[0].name",
            "at most 20 characters in the lab (it has 21)",
        ),
        (
            HOSTS.replace('"fra-2"', '"fra-1"'),
            "hosts[1].name",
            "host 'fra-1' is declared twice (first at hosts[0].name)",
        ),
        (
            HOSTS.replace('"fra-1"', '"Fra_1"'),
            "hosts[0].name",
            "host name 'Fra_1': must be lowercase letters, digits and dashes",
        ),
        (
            HOSTS.replace('region = "ams"', 'region = "amss"'),
            "hosts[2].region",
            "unknown region 'amss' (did you mean 'ams'? the catalogue: ams, arn,",
        ),
        # orgs, networks, apps
        (HOSTS + ORG + ORG, "orgs[1].name", "org 'acme' is declared twice (first at orgs[0]"),
        (HOSTS + '[[orgs]]\nname = "1acme"\n', "orgs[0].name", "org name '1acme': must be"),
        (HOSTS + "[[orgs]]\n", "orgs[0].name", "missing"),
        (
            HOSTS + '[[orgs]]\nname = "a"\nnetworks = ["x", "x"]\n',
            "orgs[0].networks[1]",
            "network 'x' is declared twice (first at orgs[0].networks[0])",
        ),
        (
            HOSTS + '[[orgs]]\nname = "a"\nnetworks = ["default"]\n',
            "orgs[0].networks[0]",
            "every org has the 'default' network: list only the others",
        ),
        (
            HOSTS + '[[orgs]]\nname = "a"\nnetworks = ["Blue"]\n',
            "orgs[0].networks[0]",
            "network name 'Blue': must be lowercase",
        ),
        (
            HOSTS + '[[orgs]]\nname = "a"\nnetworks = "blue"\n',
            "orgs[0].networks",
            "must be an array of network names, got string 'blue'",
        ),
        (
            HOSTS + ORG + '[[orgs.apps]]\nname = "web"\n',
            "orgs[0].apps[1].name",
            "app 'web' is declared twice in org 'acme' (first at orgs[0].apps[0].name)",
        ),
        (
            HOSTS + ORG + '[[orgs.apps]]\nname = "web-"\n',
            "orgs[0].apps[1].name",
            "app name 'web-': must not end with a dash",
        ),
        (
            HOSTS + ORG + '[[orgs.apps]]\nname = "db"\nnetwork = "stagin"\n',
            "orgs[0].apps[1].network",
            "network 'stagin' is not declared in org 'acme' (did you mean 'staging'? "
            "networks: default, staging)",
        ),
        # machines
        (
            MACHINE_ON.replace('app = "web"', 'app = "wbe"') + 'host = "fra-1"\n',
            "orgs[0].machines[0].app",
            "no app 'wbe' in org 'acme' (did you mean 'web'? apps: web)",
        ),
        (
            HOSTS + '[[orgs]]\nname = "a"\n[[orgs.machines]]\napp = "web"\nhost = "fra-1"\n',
            "orgs[0].machines[0].app",
            "no app 'web' in org 'a' (it has none: declare it in [[orgs.apps]])",
        ),
        (
            MACHINE_ON + 'host = "fra1"\n',
            "orgs[0].machines[0].host",
            "unknown host 'fra1' (did you mean 'fra-1'? hosts: fra-1, fra-2, ams-1)",
        ),
        (
            MACHINE_ON + 'host = "fra-1"\nregion = "fra"\n',
            "orgs[0].machines[0]",
            "give host or region, not both",
        ),
        (MACHINE_ON, "orgs[0].machines[0]", "needs a host"),
        (
            MACHINE_ON + 'region = "iad"\n',
            "orgs[0].machines[0].region",
            "no host of the topology is in region 'iad' (regions with hosts: fra, ams)",
        ),
        (
            MACHINE_ON + 'region = "mars"\n',
            "orgs[0].machines[0].region",
            "unknown region 'mars' (",
        ),
        (
            MACHINE_ON + 'host = "fra-1"\ncount = 0\n',
            "orgs[0].machines[0].count",
            "must be between 1 and 64, got 0",
        ),
        (
            MACHINE_ON + 'host = "fra-1"\ncount = 1000\n',
            "orgs[0].machines[0].count",
            "must be between 1 and 64, got 1000",
        ),
        (
            MACHINE_ON + 'host = "fra-1"\ncount = "2"\n',
            "orgs[0].machines[0].count",
            "must be an integer, got string '2'",
        ),
        (
            MACHINE_ON + 'host = "fra-1"\ncount = true\n',
            "orgs[0].machines[0].count",
            "must be an integer, got boolean true",
        ),
        (
            MACHINE_ON + 'host = "fra-1"\ncount = 40\n' + MACHINE_ON.split(ORG)[1] + "count = 30\n"
            'host = "ams-1"\n',
            "orgs[0].machines",
            "at most 64 machines in a lab (this one would have 70)",
        ),
        (
            MACHINE_ON + 'host = "fra-1"\nstate = "running"\n',
            "orgs[0].machines[0].state",
            "must be 'started' or 'stopped', got 'running'",
        ),
        (
            MACHINE_ON + 'host = "fra-1"\nstate = "destroyed"\n',
            "orgs[0].machines[0].state",
            "must be 'started' or 'stopped'",
        ),
        (
            MACHINE_ON + 'host = "fra-1"\nprocess_group = "Worker"\n',
            "orgs[0].machines[0].process_group",
            "process group 'Worker': must be lowercase",
        ),
        (
            MACHINE_ON + 'host = "fra-1"\nmetadata = "role=primary"\n',
            "orgs[0].machines[0].metadata",
            "must be a table of strings, got string 'role=primary'",
        ),
        (
            MACHINE_ON + 'host = "fra-1"\nmetadata = { role = 1 }\n',
            "orgs[0].machines[0].metadata.role",
            "metadata value of 'role': must be a string (got int)",
        ),
        (
            MACHINE_ON + 'host = "fra-1"\nmetadata = { "Role" = "x" }\n',
            "orgs[0].machines[0].metadata",
            "metadata key 'Role': must be lowercase",
        ),
        (
            MACHINE_ON + 'host = "fra-1"\nmetadata = { role = { a = "b" } }\n',
            "orgs[0].machines[0].metadata.role",
            "must be a string (got dict)",
        ),
        (
            MACHINE_ON + 'host = "fra-1"\nsize = "large"\n',
            "orgs[0].machines[0].size",
            "unknown key (keys: app, host, region, count, process_group, metadata, state)",
        ),
        # peers
        (
            HOSTS.replace("gateway = true", "") + ORG + '[[orgs.peers]]\nname = "laptop"\n',
            "orgs[0].peers[0]",
            "a peer needs a gateway host",
        ),
        (
            HOSTS + ORG + '[[orgs.peers]]\nname = "laptop"\nnetwork = "prod"\n',
            "orgs[0].peers[0].network",
            "network 'prod' is not declared in org 'acme'",
        ),
        (
            HOSTS + ORG + '[[orgs.peers]]\nname = "a"\n[[orgs.peers]]\nname = "a"\n',
            "orgs[0].peers[1].name",
            "peer 'a' is declared twice in org 'acme'",
        ),
    ],
)
def test_mistakes_are_refused_naming_the_field(text: str, field: str, message: str) -> None:
    error = refused(text)
    assert error.field == field
    assert error.message.startswith(f"topology.toml: {field}: "), error.message
    assert message in error.message


def test_the_unknown_host_message_in_full() -> None:
    # fra-9 is as close to fra-1 as to fra-2: no guess, the list says it all
    error = refused(MACHINE_ON + 'host = "fra-9"\n')
    assert error.message == (
        "topology.toml: orgs[0].machines[0].host: unknown host 'fra-9' (hosts: fra-1, fra-2, ams-1)"
    )


def test_the_first_mistake_in_file_order_is_reported() -> None:
    text = HOSTS.replace('"ams-1"', '"AMS"') + ORG.replace('"web"', '"Web"')
    assert refused(text).field == "hosts[2].name"
