"""The second anchor: Knot DNS (``knotd`` from Debian's ``knot`` package) serving the same records.

Knot is an authoritative server: it serves ``internal.`` from a zone file, which is generated
here from the very records Unbound's ``local-data`` is generated from
(``dnsbench_dataset.build_records``, itself derived from the machines read back from the control
plane). The zone's SOA is Unbound's (``ns.internal. hostmaster.internal. 1 3600 600 86400 5``,
TTL 5, as sixpn's); no NS at the apex (Unbound's static local zone has none either, so positive
answers carry no authority section on any of the three servers; Knot logs a warning about it).

Everything Knot needs lives in a directory of the benchmark's temporary work directory: the
configuration, the zone file, its run directory (PID file, control socket) and its database
(timers, an unused journal). It runs in the foreground as root (no ``user:``), with one UDP
worker (Unbound runs ``num-threads: 1``, sixpn one event loop), one TCP worker and one background
worker, pinned with the others to CPU 0 by ``taskset``; the benchmark checks every thread's
affinity. The zone is never written back (``zonefile-sync: -1``), nothing is journalled.

Pure text, except :func:`write_knot` (writes the files and asks ``knotc`` to check them).
"""

from __future__ import annotations

from pathlib import Path

import dnsbench_dataset as ds
from dnsbench_measure import run

ZONE = "internal"
SOA = f"ns.internal. hostmaster.internal. 1 3600 600 86400 {ds.TTL}"


def _txt(strings: list[str]) -> str:
    def quoted(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return " ".join(quoted(s) for s in strings)


def knot_zone(records: dict[ds.RecordKey, list[str]]) -> str:
    """The zone file of ``internal.``: SOA, then every record, absolute owner names, TTL 5."""
    lines = [
        f"$ORIGIN {ZONE}.",
        f"{ZONE}. {ds.TTL} IN SOA {SOA}",
    ]
    for (name, rtype), values in sorted(records.items()):
        if rtype == "AAAA":
            lines.extend(f"{name}. {ds.TTL} IN AAAA {value}" for value in values)
        else:
            lines.append(f"{name}. {ds.TTL} IN TXT {_txt(values)}")
    return "\n".join(lines) + "\n"


def knot_config(directory: Path, port: int = 53) -> str:
    """knotd's configuration: ``[fdaa::3]:port``, one UDP worker, everything in ``directory``."""
    d = directory.resolve()
    return "\n".join(
        [
            "server:",
            f"    listen: {ds.SERVER_ADDRESS}@{port}",
            "    udp-workers: 1",
            "    tcp-workers: 1",
            "    background-workers: 1",
            f'    rundir: "{d}"',
            f'    pidfile: "{d}/knot.pid"',
            "",
            "database:",
            f'    storage: "{d}/db"',
            "",
            "log:",
            "  - target: stderr",
            "    any: notice",
            "",
            "template:",
            "  - id: default",
            f'    storage: "{d}"',
            "    zonefile-sync: -1",
            "    zonefile-load: whole",
            "    journal-content: none",
            "",
            "zone:",
            f"  - domain: {ZONE}.",
            f'    file: "{d}/{ZONE}.zone"',
            "",
        ]
    )


def write_knot(records: dict[ds.RecordKey, list[str]], directory: Path) -> Path:
    """Write Knot's configuration and zone file into ``directory``; checked with ``knotc``.
    Returns the configuration's path (``knotd -c`` takes it)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "db").mkdir(exist_ok=True)
    (directory / f"{ZONE}.zone").write_text(knot_zone(records))
    conf = directory / "knot.conf"
    conf.write_text(knot_config(directory))
    run(["knotc", "-c", str(conf), "conf-check"])
    return conf


def knot_command(conf: Path) -> list[str]:
    """knotd in the foreground (its default), the PID the benchmark accounts."""
    return ["knotd", "-c", str(conf)]


def knot_version() -> str:
    out = run(["knotd", "-V"], check=False)
    return out.strip().rsplit(" ", 1)[-1] if out.strip() else "unknown"
