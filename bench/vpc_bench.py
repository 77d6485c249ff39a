"""PostgreSQL through the fabric and the forwarder, against the same query inside the VPC (SPEC 6).

A real lab: a gateway host ``gw`` and a host ``h`` (fra), org ``bench`` with one machine on
``h``, and ``sixpn lab vpc db`` (an IPv4-only PostgreSQL from the distribution behind an "EC2"
namespace running stock wg-quick and ``sixpn forward '[::]:5432' <postgres IPv4>:5432``).
pgbench, PostgreSQL's own load tool, runs the same one-row query
(``select text from greetings where id = 1``) from three places, in interleaved rounds:

- **vpc** (the anchor): from the EC2 namespace straight to PostgreSQL's IPv4 address, as an
  application inside the VPC would;
- **forwarder**: from the EC2 namespace to ``[::1]:5432``, the forwarder alone in the path;
- **fabric**: from the machine to ``db._peer.internal``: the machine's veth, the mesh to the
  gateway, the tunnel to the EC2, the forwarder, PostgreSQL.

Two workloads each: one connection kept open for every query (the latency an application
with a pool sees: pgbench's per-transaction log, so percentiles), and a new connection for
every query (``pgbench -C``): TCP, the scram-sha-256 login and the session's start, which
pgbench reports as a mean per run ("average connection time"; its log holds the query only).

    .venv/bin/python bench/vpc_bench.py [--queries 5000] [--connects 300] [--rounds 3] [--quick]

Everything is the lab's (written into lab.json as it is made) and ``lab.down()`` runs in a
``finally``: namespaces, agents, server, PostgreSQL and the forwarder (stopped by PID).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sixpn.lab import netns, vpc  # noqa: E402
from sixpn.lab.fabric import HostSpec, Lab  # noqa: E402

ORG = "bench"
QUERY = "select text from greetings where id = 1;\n"
PLACES = ("vpc", "forwarder", "fabric")


def say(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


def build(lab: Lab) -> tuple[dict[str, Any], dict[str, Any]]:
    """The lab's hosts, the org, one machine on ``h``, and VPC ``db``."""
    lab.up([HostSpec("gw", "fra", gateway=True), HostSpec("h", "fra")], progress=say)
    api = lab.api()
    if api.post("/v1/orgs", json={"name": ORG}).status_code != 201:
        raise SystemExit("vpc bench: creating the org failed")
    if api.post(f"/v1/orgs/{ORG}/apps", json={"name": "api"}).status_code != 201:
        raise SystemExit("vpc bench: creating the app failed")
    r = api.post(f"/v1/orgs/{ORG}/machines", json={"app": "api", "host": "h"})
    if r.status_code != 201:
        raise SystemExit(f"vpc bench: creating the machine: {r.status_code} {r.text}")
    machine = dict(r.json())
    lab.wait_wired(machine, timeout=30)
    record = vpc.create(lab, "db", ORG, progress=say)
    return machine, record


def pgbench(
    lab: Lab,
    where: str,
    machine: dict[str, Any],
    record: dict[str, Any],
    folder: Path,
    *,
    count: int,
    connect: bool,
) -> tuple[list[float], float | None]:
    """One pgbench run from ``where``: the transactions' latencies in ms, and with ``connect``
    pgbench's mean connection time in ms."""
    host = {"vpc": record["db_address"], "forwarder": "::1", "fabric": "db._peer.internal"}[where]
    script = folder / "query.sql"
    script.write_text(QUERY)
    prefix = folder / f"{where}-{'connect' if connect else 'query'}-{time.monotonic_ns()}"
    argv = [
        "env",
        f"PGPASSWORD={record['password']}",
        "pgbench",
        "-n",  # no vacuum: the tables are not pgbench's
        "-c",
        "1",
        "-t",
        str(count),
        "-f",
        str(script),
        "-l",
        f"--log-prefix={prefix}",
        *(["-C"] if connect else []),
        "-h",
        host,
        "-p",
        str(vpc.PG_PORT),
        "-U",
        "app",
        "app",
    ]
    ns = lab.machine_ns(machine["id"]) if where == "fabric" else record["ec2_ns"]
    done = netns.run(ns, argv, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"vpc bench: pgbench from {where}: {done.stderr.strip()[-600:]}")
    logs = list(folder.glob(f"{prefix.name}.*"))
    if not logs:
        raise SystemExit(f"vpc bench: pgbench from {where} wrote no transaction log")
    # client_id transaction_no latency_us script_no epoch epoch_us
    latencies = [
        int(line.split()[2]) / 1000 for log in logs for line in log.read_text().split("\n") if line
    ]
    for log in logs:
        log.unlink()
    if len(latencies) != count:
        raise SystemExit(f"vpc bench: pgbench from {where}: {len(latencies)} of {count} logged")
    if not connect:
        return latencies, None
    found = re.search(r"average connection time = ([0-9.]+) ms", done.stdout)
    if found is None:
        raise SystemExit(f"vpc bench: pgbench -C from {where} printed no connection time")
    return latencies, float(found.group(1))


def ping_ms(lab: Lab, where: str, machine: dict[str, Any], record: dict[str, Any]) -> float:
    """The mean ICMP round trip under the same path, to the instance (the network's floor):
    from the machine to the peer's 6PN address, from the EC2 to the DB (the VPC's own)."""
    if where == "fabric":
        ns, target = lab.machine_ns(machine["id"]), record["peer_address"]
    else:
        ns, target = record["ec2_ns"], record["db_address"]
    done = netns.run(ns, ["ping", "-q", "-n", "-c", "200", "-i", "0.01", target], timeout=60)
    found = re.search(r"= [0-9.]+/([0-9.]+)/", done.stdout)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"vpc bench: ping from {where}: {done.stdout[-300:]} {done.stderr}")
    return float(found.group(1))


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "p50": pct(values, 50),
        "p90": pct(values, 90),
        "p99": pct(values, 99),
    }


def report(
    results: dict[str, list[float]], connects: dict[str, list[float]], meta: dict[str, Any]
) -> str:
    anchor = summary(results["vpc"])["p50"]
    lines = [
        f"PostgreSQL from three places, {meta['date']}, {meta['rounds']} interleaved rounds "
        f"(pgbench, one client, `{QUERY.strip()}`)",
        "",
        "One connection for every query:",
        "",
        "| from | queries | mean ms | p50 ms | p90 ms | p99 ms | p50 vs vpc |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for where in PLACES:
        s = summary(results[where])
        lines.append(
            f"| {where} | {s['n']:.0f} | {s['mean']:.3f} | {s['p50']:.3f} | {s['p90']:.3f} | "
            f"{s['p99']:.3f} | {s['p50'] / anchor:.2f}x |"
        )
    base = statistics.fmean(connects["vpc"])
    lines += [
        "",
        "ICMP round trip of the same path (200 pings, mean): "
        + ", ".join(f"{w} {statistics.fmean(v):.3f} ms" for w, v in meta["pings"].items())
        + " (vpc: EC2 to the DB; fabric: the machine to the peer's 6PN address).",
        "",
        f"A new connection for every query ({meta['connects']} per place and round; pgbench's "
        "mean connection time per round):",
        "",
        "| from | mean ms | rounds min-max ms | vs vpc |",
        "|---|---:|---:|---:|",
    ]
    for where in PLACES:
        means = connects[where]
        lines.append(
            f"| {where} | {statistics.fmean(means):.3f} | {min(means):.3f}-{max(means):.3f} | "
            f"{statistics.fmean(means) / base:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=5000, help="queries per place and round")
    ap.add_argument("--connects", type=int, default=300, help="connections per place and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, few queries")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = ap.parse_args()
    if args.quick:
        args.queries, args.connects, args.rounds = 300, 30, 1
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[float]] = {p: [] for p in PLACES}
    connects: dict[str, list[float]] = {p: [] for p in PLACES}
    pings: dict[str, list[float]] = {"vpc": [], "fabric": []}
    with tempfile.TemporaryDirectory(prefix="sixpn-vpcbench-") as tmp:
        lab = Lab(Path(tmp) / "lab")
        try:
            machine, record = build(lab)
            logs = Path(tmp) / "pgbench"
            logs.mkdir()
            for r in range(args.rounds):
                for where in ("vpc", "fabric"):
                    pings[where].append(ping_ms(lab, where, machine, record))
                for where in PLACES:
                    say(f"round {r + 1}/{args.rounds}: {where}")
                    latencies, _ = pgbench(
                        lab, where, machine, record, logs, count=args.queries, connect=False
                    )
                    results[where] += latencies
                    _, connect_ms = pgbench(
                        lab, where, machine, record, logs, count=args.connects, connect=True
                    )
                    assert connect_ms is not None
                    connects[where].append(connect_ms)
        finally:
            say("taking the lab down")
            lab.down()
    meta = {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "rounds": args.rounds,
        "connects": args.connects,
        "pings": pings,
    }
    text = report(results, connects, meta)
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}"
    (args.out / f"vpc-{stamp}.md").write_text(text)
    summaries = {p: summary(v) for p, v in results.items()}
    (args.out / f"vpc-{stamp}.json").write_text(
        json.dumps({**meta, "queries": summaries, "connection_ms": connects}, indent=2)
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
