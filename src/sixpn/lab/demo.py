"""``sixpn lab demo``: the default lab, and what the fabric does, shown by real commands.

Every step prints the command a user would type (``sixpn lab exec ...``), runs exactly that
command (the ``sixpn`` CLI in a child process), prints its real output, and checks it shows
what it should; a step that does not is reported, the demo goes on, and it fails at the end.
The lab is taken down at the end (also on Ctrl-C or a failure), unless ``keep``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from sixpn.lab.fabric import Lab
from sixpn.lab.inventory import collect

PORT = 8080
DEFAULT_DIR = Path("/var/lib/sixpn-lab")

Check = Callable[[subprocess.CompletedProcess[str]], str | None]  # None: as it should be


class Demo:
    def __init__(self, lab_dir: Path, *, keep: bool = False) -> None:
        self.dir = lab_dir
        self.keep = keep
        self.failed = 0
        self.step_no = 0
        self.servers: list[subprocess.Popen[bytes]] = []

    # -- running commands ---------------------------------------------------------------------

    def _argv(self, args: list[str]) -> tuple[list[str], str]:
        """(what runs, what is shown): the same ``sixpn lab`` command."""
        where = [] if self.dir == DEFAULT_DIR else ["--dir", str(self.dir)]
        run = [sys.executable, "-m", "sixpn", "lab", *where, *args]
        shown = " ".join(["sixpn", "lab", *where, *(_quote(a) for a in args)])
        return run, shown

    def title(self, text: str) -> None:
        self.step_no += 1
        click.echo(click.style(f"\n== {self.step_no}. {text}", bold=True))

    def live(self, args: list[str]) -> int:
        """Run a command with its output straight to the terminal (``up``, ``down``)."""
        run, shown = self._argv(args)
        click.echo(f"$ {shown}")
        return subprocess.run(run, check=False).returncode

    def step(self, args: list[str], check: Check, timeout: float = 60) -> str:
        run, shown = self._argv(args)
        click.echo(f"$ {shown}")
        done = subprocess.run(run, capture_output=True, text=True, timeout=timeout, check=False)
        out = (done.stdout + done.stderr).rstrip()
        click.echo(out if out else "(no output)")
        problem = check(done)
        if problem is not None:
            self.failed += 1
            click.echo(click.style(f"!! not as expected: {problem}", fg="red"))
        return done.stdout

    def serve(self, machine: str) -> None:
        """Start the demo's HTTP service in a machine, in the background, until the end."""
        args = ["exec", machine, "--", "python3", "-m", "sixpn.lab.hello", str(PORT), machine]
        run, shown = self._argv(args)
        run[run.index("python3")] = sys.executable  # this installation's Python
        click.echo(f"$ {shown} &")
        self.servers.append(
            subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )

    # -- the story ----------------------------------------------------------------------------

    def run(self) -> int:
        """The number of steps that did not show what they should."""
        try:
            self.title("Bring the lab up: 3 hosts in 2 regions, 2 organizations")
            if self.live(["up"]) != 0:
                self.failed += 1
                return self.failed
            inv = collect(Lab(self.dir))
            self.story(inv)
        finally:
            for server in self.servers:
                server.terminate()
                server.wait(timeout=10)
            if not self.keep and Lab(self.dir).state is not None:
                self.title("Take the lab down: nothing of it is left")
                self.live(["down"])
            elif self.keep:
                click.echo(f"\nthe lab stays up (--keep): sixpn lab --dir {self.dir} down")
        if self.failed:
            click.echo(click.style(f"\n{self.failed} step(s) not as expected", fg="red"))
        else:
            click.echo("\nevery step showed what it should")
        return self.failed

    def story(self, inv: dict[str, Any]) -> None:
        ms = inv["machines"]
        web = _addresses(ms, org="acme", app="web")
        web_ams = _addresses(ms, org="acme", app="web", region="ams")
        web_fra = _addresses(ms, org="acme", app="web", region="fra")

        self.title("What is running")
        self.step(["status"], _ok)

        self.title("A machine of acme (api, on fra-2) resolves its apps by name")
        self.step(
            ["exec", "api@fra-2", "--", "dig", "+short", "AAAA", "web.internal"], _answers(web)
        )
        self.step(
            ["exec", "api@fra-2", "--", "dig", "+short", "AAAA", "ams.web.internal"],
            _answers(web_ams),
        )
        self.step(
            ["exec", "api@fra-2", "--", "dig", "+short", "AAAA", "top1.nearest.of.web.internal"],
            _answers(web_fra),
        )
        self.step(
            ["exec", "api@fra-2", "--", "dig", "+short", "TXT", "_apps.internal"],
            _mentions("web", "api", absent="shop"),
        )

        self.title(f"web serves HTTP on port {PORT} on fra-1 and ams-1")
        self.serve("web@fra-1")
        self.serve("web@ams-1")
        self._wait_served(web)
        self.title("api (on fra-2) calls web.internal: the request crosses to another host")
        self.step(
            ["exec", "api@fra-2", "--", "curl", "-sS", "-m", "5", f"http://web.internal:{PORT}/"],
            _contains("hello from"),
        )

        self.title("globex, another organization, cannot see or reach acme's machines")
        self.step(
            ["exec", "shop@ams-1", "--", "dig", "+short", "AAAA", "web.internal"], _answers(set())
        )
        target = sorted(web_ams)[0] if web_ams else "fdaa::1"
        self.step(
            [
                "exec",
                "shop@ams-1",
                "--",
                "curl",
                "-sS",
                "-m",
                "3",
                "-g",
                f"http://[{target}]:{PORT}/",
            ],
            _fails,
        )

        self.title("A laptop joins acme's network as a WireGuard peer (stock wg-quick)")
        self.step(["peer", "laptop", "--org", "acme"], _ok)
        self.step(["exec", "laptop", "--", "dig", "+short", "AAAA", "web.internal"], _answers(web))
        self.step(
            ["exec", "laptop", "--", "curl", "-sS", "-m", "5", f"http://web.internal:{PORT}/"],
            _contains("hello from"),
        )

        self.title("An AWS VPC joins acme's network: an IPv4-only PostgreSQL behind one peer")
        made = self.step(["vpc", "db", "--org", "acme"], _ok, timeout=120)
        url = next((line.split(": ", 1)[1] for line in made.splitlines() if "URL: " in line), "")
        query = "select text from greetings where id = 1"
        self.title("api (on fra-2) queries it by the peer's name: sixpn forward on the peer")
        self.step(
            ["exec", "api@fra-2", "--", "psql", url, "-Atc", query], _says("hello from the VPC")
        )
        self.title("globex's machine cannot: the peer's name does not exist for it")
        self.step(
            ["exec", "shop@ams-1", "--", "psql", url, "-Atc", query],
            _fails_saying("could not translate host name"),
        )

    def _wait_served(self, addresses: set[str], timeout: float = 15) -> None:
        """Until the services listen (they start in the background), so the story reads
        straight; a service that never comes up shows as a failed request below."""
        code = (
            "import socket,sys\n"
            f"for a in {sorted(addresses)!r}:\n"
            f"    socket.create_connection((a,{PORT}),timeout=1).close()\n"
        )
        run, _ = self._argv(["exec", "api@fra-2", "--", sys.executable, "-c", code])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if subprocess.run(run, capture_output=True, check=False).returncode == 0:
                return
            time.sleep(0.2)


def _quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_.:/@=+[]" for c in arg) else repr(arg)


def _addresses(
    machines: list[dict[str, Any]], *, org: str, app: str, region: str | None = None
) -> set[str]:
    return {
        m["address"]
        for m in machines
        if m["org"] == org
        and m["app"] == app
        and m["state"] == "started"
        and (region is None or m["region"] == region)
    }


def _ok(done: subprocess.CompletedProcess[str]) -> str | None:
    return None if done.returncode == 0 else f"exit code {done.returncode}"


def _fails(done: subprocess.CompletedProcess[str]) -> str | None:
    return "it succeeded" if done.returncode == 0 else None


def _answers(expected: set[str]) -> Check:
    def check(done: subprocess.CompletedProcess[str]) -> str | None:
        got = set(done.stdout.split())
        if done.returncode != 0 or got != expected:
            return f"expected {sorted(expected) or 'no answer'}, exit {done.returncode}"
        return None

    return check


def _contains(text: str) -> Check:
    def check(done: subprocess.CompletedProcess[str]) -> str | None:
        return None if done.returncode == 0 and text in done.stdout else f"expected {text!r}"

    return check


def _says(text: str) -> Check:
    def check(done: subprocess.CompletedProcess[str]) -> str | None:
        ok = done.returncode == 0 and done.stdout.strip() == text
        return None if ok else f"expected {text!r}, exit {done.returncode}"

    return check


def _fails_saying(text: str) -> Check:
    def check(done: subprocess.CompletedProcess[str]) -> str | None:
        ok = done.returncode != 0 and text in done.stderr
        return None if ok else f"expected a failure saying {text!r}"

    return check


def _mentions(*words: str, absent: str) -> Check:
    def check(done: subprocess.CompletedProcess[str]) -> str | None:
        missing = [w for w in words if w not in done.stdout]
        if done.returncode != 0 or missing or absent in done.stdout:
            return f"expected {', '.join(words)} and not {absent}"
        return None

    return check
