"""bench/summary.py and bench/plots.py on small hand-made outputs shaped like the real ones
(bench/out/<name>-<stamp>.json): the latest file per benchmark, one row per SPEC 9 target with
the report's own verdict, "not run" for a missing benchmark, and non-empty PNGs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import summary  # noqa: E402

pytestmark = pytest.mark.unit

KINDS = ("machine created", "machine stopped", "machine destroyed", "app added")


# -- samples, with the structure of real outputs (values made up) -----------------------------


def dns_round(server: str, qps: float, cpu_us: float, p99_us: float) -> dict[str, Any]:
    def run(qps: float, cpu_us: float, latency: dict[str, float]) -> dict[str, Any]:
        return {
            "wall_s": 2.0,
            "sent": int(2 * qps),
            "completed": int(2 * qps),
            "lost": 0,
            "qps": qps,
            "rcodes": {"NOERROR": int(2 * qps)},
            "avg_response": 185,
            "server_cpu_s": 1.5,
            "cpu_us_per_query": cpu_us,
            "server_user_s": 0.3,
            "user_us_per_query": cpu_us / 5,
            "dnsperf_cpu_s": 1.6,
            "other_cpu": {"0": 0.1, "1": 0.1},
            "control_cpu_s": 0.0,
            "latency_us": latency,
            "bad_answers": 0,
        }

    paced = {"50": 57.0, "90": 96.0, "99": p99_us, "99.9": 3 * p99_us}
    return {
        "server": server,
        "round": 1,
        "command": [server],
        "exe": f"/usr/sbin/{server}",
        "answers_ok_percent": 100.0,
        "max_qps": run(qps, cpu_us, {}),
        "paced": run(9999.9, 10 * cpu_us, paced),
    }


DNS = [
    dns_round("unbound", 170_000, 4.5, 204.0),
    dns_round("knot", 186_000, 4.2, 244.0),
    dns_round("sixpn", 190_000, 4.0, 177.0),
]


def change(kind: str, i: int, host: str, dns_ms: float, dp_ms: float | None) -> dict[str, Any]:
    sent = 100.0 + i
    hosts = ("a", "b", "c", "d", "e")
    return {
        "kind": kind,
        "machine": f"m{i}",
        "host": host,
        "sent": sent,
        "answered": sent + 0.01,
        "seen": {h: sent + dns_ms / 1000 * (1 + j / 10) for j, h in enumerate(hosts)},
        "early": dict.fromkeys(hosts, False),
        "first_poll": dict.fromkeys(hosts, sent),
        "polls": dict.fromkeys(hosts, 5),
        "stream": sent + 0.005,
        "data_path": None if dp_ms is None else sent + dp_ms / 1000,
        "data_path_from": "e" if dp_ms is not None else None,
    }


def every(p50: float, p99: float, n: int) -> dict[str, Any]:
    return {"n": n, "p50": p50, "p99": p99, "max": p99, "timeouts": 0}


PROPAGATION = {
    "settings": {"quick": False, "rate": 200.0, "load_start": "1.24 2.97 3.76"},
    "env": {"kernel": "6.1", "cores": "2", "wireguard-go": "wireguard-go v0.0.20230223"},
    "figures": {
        "dns": {
            "create+stop": {"every_host": every(30.0, 68.0, 20)},
            "all": {"every_host": every(30.0, 70.0, 30)},
        },
        "data_path": every(90.0, 140.0, 5),
        "quiet": {"dns": {"all": every(12.0, 39.0, 9)}, "data_path": every(50.0, 52.0, 2)},
        "rates": {"window_s": 10.0, "measured_per_s": 3.0, "revisions_per_s": 225.0},
        "verdicts": {
            "rate_at_least_200": True,
            "dns_p99_create_stop": False,
            "dns_p99_all_kinds": False,
            "data_path_p99": True,
            "nothing_lost": True,
        },
    },
    "cpu": {"wall_s": 3.7, "busy": 189.0, "softirq": 2.1, "steal": 0.0, "roles": {}, "top": []},
    "load": {"rate": 200.0},
    "stream": {"revisions": 2250},
    "check": {"mismatches": []},
    "changes": [
        change(kind, i, "a" if i % 3 == 0 else "far-1", 20 + 5 * i, 100 + 8 * i if i % 3 else None)
        for i, kind in enumerate(["create", "stop", "destroy"] * 10)
    ],
    "quiet": [change("create", i, "b", 10 + i, 50 + i) for i in range(3)],
}


def datapath_round(n: int, anchor: float, fabric: float) -> dict[str, Any]:
    def side(gbps: float) -> dict[str, Any]:
        return {"gbps": gbps, "retransmits": 0, "cpu": {}, "rtt_ms": [0.4], "paced": None}

    return {
        "round": n,
        "order": ["anchor", "fabric"],
        "anchor": side(anchor),
        "fabric": side(fabric),
    }


# the fabric at 85-88% of the anchor in every round: FAIL against both 98% and the 95% floor
DATAPATH = {
    "settings": {"rounds": 12},
    "environment": {},
    "rounds": [datapath_round(n, 2.0 + n / 100, 1.7 + n / 100) for n in range(1, 13)],
    "propagation": [],
    "propagation_cpu": None,
    "notes": [],
}


def scale_size(size: int, change_us: float, agent_ms: float) -> dict[str, Any]:
    def stat(value: float) -> dict[str, float]:
        return {"median": value, "p90": value, "max": value, "n": 5}

    part = {"decode": stat(change_us / 2), "view": stat(change_us / 4)}
    part |= {"zone": stat(change_us / 4), "forget": stat(1.0), "kept": stat(10.0)}
    dns = {
        "machines": size,
        "seconds": {
            "build": 0.9e-5 * size,
            "build_cpu": 0.9e-5 * size,
            "end_to_end": 2e-5 * size,
            "end_to_end_cpu": 2e-5 * size,
            "anchor_json_loads": 0.5e-5 * size,
        },
        "rss": {
            "base": 50_000_000,
            "loaded": 50_000_000 + 2000 * size,
            "peak": 50_000_000 + 2000 * size,
            "after_gc": 50_000_000 + 1600 * size,
            "after_trim": 50_000_000 + 700 * size,
        },
        "changes": {k: part for k in KINDS},
    }
    agent_kinds = (*KINDS, "machine created here")
    agent = {"changes": {k: {"desired_plan_ms": stat(agent_ms)} for k in agent_kinds}}
    return {"size": size, "dns": [dns], "agent": [agent]}


SCALE = {
    "started": "2026-12-05T22:14:26+00:00",
    "argv": [],
    "sizes": [scale_size(1_000, 33.0, 4.8), scale_size(10_000, 34.0, 20.0),
              scale_size(100_000, 35.0, 500.0)],
}  # fmt: skip


def peers_steps(op: str, seconds: float) -> list[dict[str, Any]]:
    return [{"read_s": seconds / 2, "plan_s": 0.01, "apply_s": 0.002, "total_s": seconds,
             "ops": [op]} for _ in range(3)]  # fmt: skip


PEERS_QUICK = {
    "stamp": "20261205T183239Z",
    "args": {"quick": "True"},
    "gateway": {
        "backend": "wireguard-go",
        "counts": [1, 10, 200],
        "rounds": 2,
        "daemon_kib_full": 20_000,
        "installs": [
            {"peers": n, "sixpn": peers_steps(f"SetPeers/{n}", 0.01 + n / 10_000),
             "setconf": [0.005 + n / 20_000]} for n in (1, 10, 200)
        ],
        "changes": {
            "add": peers_steps("SetPeers/1", 0.05),
            "remove": peers_steps("RemovePeers/1", 0.06),
            "wg_add": [0.002, 0.002],
            "wg_remove": [0.0014, 0.0015],
        },
    },
}  # fmt: skip

FORWARD = {
    "args": {"rounds": 1},
    "results": {
        side: {
            "stream": [{"gbit_s": g, "mb": 1.0, "cpu_s": 1.0, "cpu_ms_per_mb": c}],
            "conn": [{"conn_s": n, "cpu_s": 1.0, "cpu_us_per_conn": 400.0}],
        }
        for side, g, c, n in (("sixpn", 15.6, 0.39, 2153.0), ("socat", 9.4, 0.83, 1938.0))
    },
}


def write(folder: Path, name: str, stamp: str, data: Any) -> Path:
    path = folder / f"{name}-{stamp}.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    older = [dns_round(s, 100_000, 9.0, 900.0) for s in ("unbound", "knot", "sixpn")]
    write(tmp_path, "dns", "20261205T100000Z", older)  # older: must not be the one read
    write(tmp_path, "dns", "20261205T215624Z", DNS)
    write(tmp_path, "propagation", "20261205T220646Z", PROPAGATION)
    write(tmp_path, "datapath", "20261205T221522Z", DATAPATH)
    write(tmp_path, "scale", "20261205T221426Z", SCALE)
    write(tmp_path, "peers", "20261205T183239Z", PEERS_QUICK)
    write(tmp_path, "forward", "20261205T191559Z", FORWARD)
    (tmp_path / "dataset.json").write_text("{}")  # not a report
    (tmp_path / "propagation-20261205T220646Z.md").write_text("# report")
    return tmp_path


def by_target(rows: list[summary.Row]) -> dict[str, summary.Row]:
    return {r.target: r for r in rows}


# -- summary ---------------------------------------------------------------------------------


def test_latest_takes_the_newest_stamp_of_each_benchmark(outputs: Path) -> None:
    write(outputs, "vpc", "20261205T200747", {})  # vpc stamps have no Z
    write(outputs, "vpc", "20261205T200957", {})
    found = summary.latest(outputs)
    assert found["dns"].name == "dns-20261205T215624Z.json"
    assert found["vpc"].name == "vpc-20261205T200957.json"
    assert set(found) == {"dns", "propagation", "datapath", "scale", "peers", "forward", "vpc"}


def test_dns_rows_carry_the_reports_verdict_against_each_anchor(outputs: Path) -> None:
    rows = by_target(summary.collect(outputs)[0])
    cpu = rows["DNS: CPU us/query at max QPS <= Knot's"]
    assert (cpu.figure, cpu.verdict) == ("4.00", "PASS")
    assert cpu.anchor.startswith("4.20")
    assert cpu.source == "dns-20261205T215624Z.json"
    assert rows["DNS: QPS >= Unbound's"].verdict == "PASS"
    p99 = rows["DNS: p99 at 10000 qps <= 0.2 ms"]
    assert (p99.figure, p99.verdict) == ("0.177 ms", "PASS")
    assert "Knot 0.244 ms" in p99.anchor
    assert rows["DNS: answers ok 100%"].verdict == "PASS"


def test_failing_verdicts_stay_failing(outputs: Path) -> None:
    rows = by_target(summary.collect(outputs)[0])
    dns = rows["Propagation: create or stop -> every host's DNS, p99 < 50 ms"]
    assert dns.verdict == "FAIL"
    assert dns.figure.startswith("p99 68.0 ms")
    assert dns.anchor == "no load, same run: p99 39.0 ms"
    assert rows["Propagation: create -> data path passes packets, p99 < 250 ms"].verdict == "PASS"
    floor = rows["Data path: TCP throughput >= 95% of plain WireGuard (the floor)"]
    assert floor.verdict == "FAIL"
    assert "12 rounds" in floor.figure
    assert floor.anchor.startswith("plain wireguard-go 2.0")
    assert rows["Data path: TCP throughput >= 98% of plain WireGuard"].verdict == "FAIL"
    agent = rows["Scale: agent per change independent of fleet size"]
    assert agent.verdict == "FAIL"  # 4.8 -> 500 ms
    assert agent.anchor.startswith("1,000 machines")
    assert rows["Scale: DNS per change independent of fleet size (decode + apply)"].verdict == (
        "PASS"
    )
    assert rows["Scale: DNS full build < 2 s CPU"].verdict == "PASS"  # 0.9 s
    assert rows["Scale: DNS build from the snapshot request on < 2 s CPU"].verdict == "FAIL"  # 2.0
    assert rows["Scale: DNS memory < 1 KiB/machine, resident"].figure == "700 B/machine"


def test_a_run_smaller_than_the_target_is_inconclusive(outputs: Path) -> None:
    rows = by_target(summary.collect(outputs)[0])
    held = rows["Scale: one gateway holds 5,000 peers"]
    assert held.verdict == "inconclusive"
    assert "SPEC 9: 5,000" in held.figure
    assert held.source == "peers-20261205T183239Z.json (--quick)"
    one = rows["Scale: adding or removing one peer touches no other"]
    assert one.verdict == "inconclusive"
    assert "SetPeers/1" in one.figure


def test_missing_and_failed_benchmarks(outputs: Path) -> None:
    (outputs / "datapath-20261205T221522Z.json").unlink()
    rows, lines = summary.collect(outputs, failed={"datapath": "exit 1, 3.0 min"})
    datapath = [r for r in rows if r.target.startswith("Data path")]
    assert [(r.figure, r.verdict) for r in datapath] == [("failed: exit 1, 3.0 min", "not run")]
    assert "resync: not run" in lines
    assert any(line.startswith("forward: `sixpn forward` 15.6 Gbit/s") for line in lines)


def test_only_the_chosen_benchmarks(outputs: Path) -> None:
    rows, lines = summary.collect(outputs, only=["scale"])
    assert {r.target.split(":")[0] for r in rows} == {"Scale"}
    assert all(r.source.startswith("scale-") for r in rows)
    assert lines == []


def test_an_output_of_another_shape_is_reported_not_raised(outputs: Path) -> None:
    write(outputs, "scale", "20261206T000000Z", {"sizes": [{"size": 1}]})
    rows = summary.collect(outputs, only=["scale"])[0]
    assert [r.verdict for r in rows] == ["inconclusive"]
    assert rows[0].figure.startswith("unreadable: KeyError")


def test_markdown_and_text(outputs: Path) -> None:
    rows, lines = summary.collect(outputs)
    md = summary.markdown(rows, lines)
    assert md.startswith("| SPEC 9 target | sixpn | anchor, same run | verdict | source |\n")
    assert "| **FAIL** |" in md
    assert "- resync: not run" in md
    text = summary.text(rows, lines)
    assert "FAIL         Propagation: create or stop" in text
    assert "|" not in text.splitlines()[0]


# -- plots -----------------------------------------------------------------------------------


def test_plots_write_non_empty_pngs(outputs: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import plots

    dest = tmp_path / "img"
    made = plots.make_all(outputs, dest, "2026-12-05")
    assert set(made) == {"dns-latency", "propagation", "scale"}
    for what, path in made.items():
        assert path == dest / f"bench-{what}-2026-12-05.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 10_000


def test_the_faults_headline_gives_each_faults_median_and_total_loss(tmp_path: Path) -> None:
    def row(fault: str, seconds: float, lost_b: int, lost_c: int) -> dict[str, Any]:
        lost = {"a1->b1": lost_b, "a1->c1": lost_c}
        return {"fault": fault, "round": 0, "recovery_s": seconds, "lost": lost, "sent": lost}

    rows = [row("cable pulled", s, 600, 0) for s in (1.0, 3.0, 2.0)]
    rows.append(row("control plane down", 2.5, 0, 1))
    (tmp_path / "faults-20261206T000000Z.json").write_text(json.dumps({"rows": rows}))
    _, lines = summary.collect(tmp_path, only=["faults"])
    assert lines == [
        "faults: recovery, median; packets lost a1->b1/a1->c1 over all rounds: cable pulled "
        "2.00 s (lost 1800/0); control plane down 2.50 s (lost 0/1) "
        "(faults-20261206T000000Z.json)"
    ]
