from __future__ import annotations

import pytest

from sixpn.core import dnsnames as n

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("name", "question"),
    [
        ("web", n.AppMachines("web")),
        ("global.web", n.AppMachines("web")),
        ("fra.web", n.AppMachines("web", region="fra")),
        ("regions.web", n.RegionList("web", include_stopped=False)),
        ("all.regions.web", n.RegionList("web", include_stopped=True)),
        ("vms.web", n.VmList("web", include_stopped=False)),
        ("all.vms.web", n.VmList("web", include_stopped=True)),
        ("top2.nearest.of.web", n.Nearest("web", 2)),
        ("top10.nearest.of.web", n.Nearest("web", 10)),
        ("0123456789abcd.vm.web", n.Vm("web", "0123456789abcd")),
        ("worker.process.web", n.ProcessGroup("web", "worker")),
        ("primary.role.kv._metadata.web", n.Metadata("web", key="role", value="primary")),
        ("_apps", n.AppList()),
        ("_peer", n.PeerList()),
        ("laptop._peer", n.PeerAddress("laptop")),
        ("_instances", n.Instances(include_stopped=False)),
        ("all._instances", n.Instances(include_stopped=True)),
        ("_api", n.Api()),
    ],
)
def test_names_parse_to_their_question(name: str, question: n.Question) -> None:
    assert n.parse(tuple(name.split("."))) == question


@pytest.mark.parametrize(
    "name",
    [
        "",
        "top0.nearest.of.web",
        "topx.nearest.of.web",
        "top2.nearest.web",
        "a.b.c.web",
        "x.vm.y.web",
        "_nope",
        "a.b._peer",
        "primary.role.kv.web",
        "x.all.regions.web",
    ],
)
def test_other_names_do_not_exist(name: str) -> None:
    assert n.parse(tuple(name.split(".")) if name else ()) is None
