"""The PostgreSQL server of a lab VPC's DB namespace: its "RDS" (``lab vpc``; vpc.py builds
the namespaces around it and keeps its record in lab.json).

What runs: the distribution's server (``bindir``: ``pg_config --bindir``, else the newest
/usr/lib/postgresql/<v>/bin), one cluster per VPC, made by ``initdb`` with the ``app`` role,
database and a ``greetings`` table of known rows (``GREETINGS``) for a query with a checkable
answer. It listens on the VPC's IPv4 address only, port ``PG_PORT``, and takes password logins
(scram-sha-256) from the VPC's IPv4 subnet only; the lab's own setup logs in as the OS user
postgres over the cluster's Unix socket (peer authentication).

As whom: everything runs as the OS user ``postgres``, never root (initdb and the server
refuse root). The server is started through ``setpriv``, which execs, so the PID the lab
records is the postmaster's own: ``runuser`` would stay in between as a parent that answers a
signal with SIGTERM (PostgreSQL's "smart" shutdown, which waits for clients) and SIGKILL two
seconds later. ``initdb`` and ``psql`` run to their end, so ``runuser`` is fine for them.

Where the data lives: ``PG_ROOT/<lab id>-<vpc name>/`` (``data/`` the cluster, ``run/`` its
socket directory), outside the lab's directory, which may sit in a 0700 directory the
postgres user cannot traverse; ``remove_cluster`` deletes it, and ``PG_ROOT`` once empty.

How it is stopped: by its recorded PID, if that PID still runs this cluster (``pid_runs``:
a PID in an old lab.json may have been reused), with SIGINT, PostgreSQL's "fast" shutdown
(clients are disconnected, the data stays), SIGKILL after 15 s. Ready means its
postmaster.pid says so, as ``pg_ctl start --wait`` reads it.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from sixpn.lab import netns
from sixpn.lab.fabric import Lab, LabError, run_checked
from sixpn.lab.process import log_tail, pid_runs, spawn_logged, stop_pid

PG_ROOT = Path("/var/lib/sixpn-lab-pg")
PG_PORT = 5432
GREETINGS = ((1, "hello from the VPC"), (2, "bonjour"), (3, "hallo"))

# A VPC's record (vpc.py); read here: name, pg_bindir, pg_dir, db_ns, db_address, subnet,
# password; written here: postgres_pid.
Record = dict[str, Any]


def bindir() -> Path:
    """The server's binaries: ``pg_config --bindir`` if it has them (libpq-dev's pg_config may
    be another version than the server), else the newest /usr/lib/postgresql/<v>/bin."""
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        path = Path(out.stdout.strip())
        if out.returncode == 0 and (path / "postgres").exists() and (path / "initdb").exists():
            return path
    found = [b for b in Path("/usr/lib/postgresql").glob("*/bin") if (b / "postgres").exists()]
    found.sort(key=lambda b: [int(p) for p in re.findall(r"\d+", b.parent.name)] or [0])
    if not found:
        raise LabError(
            "lab vpc needs a PostgreSQL server: apt-get install postgresql postgresql-client "
            "(make demo installs them)"
        )
    return found[-1]


def os_user() -> pwd.struct_passwd:
    """The OS user ``postgres`` everything here runs as (the distribution's package makes it)."""
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise LabError(
            "lab vpc runs PostgreSQL as the user postgres, which does not exist: "
            "apt-get install postgresql (make demo installs it)"
        ) from None


def init_cluster(r: Record) -> None:
    """A cluster of the VPC's own, made by initdb as the postgres user (it refuses root)."""
    user = os_user()
    pg_dir = Path(r["pg_dir"])
    PG_ROOT.mkdir(mode=0o755, exist_ok=True)
    for folder in (pg_dir, pg_dir / "run"):
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chown(folder, user.pw_uid, user.pw_gid)
    initdb = [f"{r['pg_bindir']}/initdb", "-D", str(pg_dir / "data"), "-U", "postgres"]
    initdb += ["-E", "UTF8", "--locale=C", "--auth-local=peer", "--auth-host=scram-sha-256"]
    initdb.append("--no-sync")  # a lab's throwaway data: no fsync of every file made
    run_checked(["runuser", "-u", "postgres", "--", *initdb], "initdb", cwd=pg_dir)
    data = pg_dir / "data"
    (data / "pg_hba.conf").write_text(
        f"# sixpn lab vpc {r['name']} (sixpn/lab/postgres.py): password logins from the VPC's\n"
        "# IPv4 subnet only; the lab's own setup as the OS user postgres over the Unix socket.\n"
        "# TYPE  DATABASE  USER      ADDRESS         METHOD\n"
        "local   all       postgres                  peer\n"
        f"host    all       all       {r['subnet']:<15} scram-sha-256\n"
    )
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"\n# sixpn lab vpc {r['name']} (sixpn/lab/postgres.py): an IPv4-only service\n"
            "# on the VPC's subnet, like RDS; its socket directory of its own, not\n"
            "# /var/run/postgresql.\n"
            f"listen_addresses = '{r['db_address']}'\n"
            f"port = {PG_PORT}\n"
            f"unix_socket_directories = '{pg_dir / 'run'}'\n"
            "password_encryption = 'scram-sha-256'\n"
        )


def start(lab: Lab, r: Record, log: Path, timeout: float = 30) -> int:
    """Start the VPC's PostgreSQL in its DB namespace (as the postgres user, output to ``log``)
    and wait until it accepts connections; its PID, kept in lab.json."""
    if _running(r) is not None:
        raise LabError(f"vpc {r['name']}: PostgreSQL already runs (PID {r['postgres_pid']})")
    pg_dir = Path(r["pg_dir"])
    as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
    server = [f"{r['pg_bindir']}/postgres", "-D", str(pg_dir / "data")]
    proc = spawn_logged(netns.exec_argv(r["db_ns"], [*as_postgres, *server]), log, cwd=pg_dir)
    r["postgres_pid"] = proc.pid
    lab.save()
    deadline = time.monotonic() + timeout
    while not _ready(pg_dir / "data", proc.pid):
        if proc.poll() is not None:
            r["postgres_pid"] = None
            lab.save()
            why = f"PostgreSQL exited ({proc.returncode})"
            raise LabError(f"vpc {r['name']}: {why}: {log_tail(log)}")
        if time.monotonic() > deadline:
            why = f"PostgreSQL not ready after {timeout:g} s"
            raise LabError(f"vpc {r['name']}: {why}: {log_tail(log)}")
        time.sleep(0.05)
    return proc.pid


def _ready(data: Path, pid: int) -> bool:
    """The postmaster ``pid`` accepts connections: its postmaster.pid says "ready" on line 8
    (what ``pg_ctl start --wait`` reads). pg_isready would log a failed login on every try."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"


def _running(r: Record) -> int | None:
    """The recorded PID if it still runs this cluster (its command line names ``pg_dir``)."""
    pid = r.get("postgres_pid")
    return int(pid) if pid is not None and pid_runs(int(pid), r["pg_dir"]) else None


def stop(lab: Lab, r: Record) -> None:
    """Stop the VPC's PostgreSQL by PID with SIGINT (fast shutdown: clients are disconnected,
    the data stays) and wait until it is gone; fine if it does not run."""
    pid = _running(r)
    if pid is not None:
        stop_pid(pid, signal.SIGINT, grace=15.0)
    r["postgres_pid"] = None
    lab.save()


def create_database(r: Record) -> None:
    """Role and database ``app`` (the password on standard input, not on a command line) and
    a table with known rows, for a query with a checkable answer."""
    rows = ", ".join(f"({i}, '{text}')" for i, text in GREETINGS)
    script = (
        f"CREATE ROLE app LOGIN PASSWORD '{r['password']}';\n"
        "CREATE DATABASE app OWNER app;\n"
        "\\connect app\n"
        "SET ROLE app;\n"
        "CREATE TABLE greetings (id int PRIMARY KEY, text text NOT NULL);\n"
        f"INSERT INTO greetings VALUES {rows};\n"
    )
    psql = [f"{r['pg_bindir']}/psql", "-h", f"{r['pg_dir']}/run", "-p", str(PG_PORT), "-d"]
    psql += ["postgres", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"]
    run_checked(
        ["runuser", "-u", "postgres", "--", *psql], "creating the app database", input=script
    )


def remove_cluster(r: Record) -> None:
    """Delete the VPC's cluster directory, and ``PG_ROOT`` once no lab has one; stop first."""
    shutil.rmtree(r["pg_dir"], ignore_errors=True)
    if PG_ROOT.is_dir() and not any(PG_ROOT.iterdir()):
        PG_ROOT.rmdir()
