"""Test harness: real `sixpn server` processes on loopback, started and stopped by PID.

Every process a test starts is killed in a ``finally`` by its own PID (never by name), so a
failing test leaves nothing running.

A server runs on its own SQLite file (``db``) by default, or on an etcd cluster
(``etcd=cluster.endpoints``, under ``etcd_prefix``): several such servers with one prefix are
replicas of one control plane (give them the same ``admin_token`` and ``join_token``). In etcd
mode ``db`` only names the log file (``db.with_suffix(".log")``).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from sixpn import waiting


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.02
) -> None:
    """Poll ``predicate`` until it returns true; a TimeoutError naming ``what`` after ``timeout``
    s. A predicate that raises counts as not yet true (a server still starting refuses), and its
    last exception is re-raised after the deadline."""
    waiting.wait_until(predicate, timeout, what, interval=interval, retry_on=(Exception,))


@dataclass
class ServerProcess:
    """A `sixpn server` child process with its own SQLite file (or an etcd cluster) and admin
    token. :meth:`kill` then :meth:`start` restarts it on the same port and store."""

    db: Path
    port: int = field(default_factory=free_port)
    admin_token: str = field(default_factory=lambda: "sixpn_test_" + secrets.token_hex(16))
    join_token: str = field(default_factory=lambda: "sixpn_join_" + secrets.token_hex(16))
    heartbeat: float = 0.5
    uds: Path | None = None  # listen on this Unix socket instead of a loopback port
    etcd: list[str] | None = None  # run on these etcd endpoints instead of ``db``
    etcd_prefix: str = "/sixpn/"
    # HTTPS: (certificate, key) files for 127.0.0.1, and the CA file that clients trust.
    tls: tuple[Path, Path] | None = None
    ca: Path | None = None
    extra_args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"unix:{self.uds}" if self.uds else f"{scheme}://127.0.0.1:{self.port}"

    @property
    def _base(self) -> str:
        return "http://sixpn" if self.uds else self.url

    def _transport(self) -> httpx.HTTPTransport | None:
        return httpx.HTTPTransport(uds=str(self.uds)) if self.uds else None

    def _verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.ca)) if self.ca else True

    def env(self, token: str | None = None) -> dict[str, str]:
        """The environment a CLI invocation against this server needs."""
        env = dict(os.environ)
        env.update(SIXPN_API=self.url, SIXPN_TOKEN=token or self.admin_token)
        env.pop("SIXPN_ORG", None)
        env.pop("SIXPN_CA", None)
        if self.ca:
            env["SIXPN_CA"] = str(self.ca)
        return env

    def start(self) -> ServerProcess:
        self.log = self.db.with_suffix(".log")
        if self.etcd is None:
            store = ["--db", str(self.db)]
        else:
            store = ["--etcd", ",".join(self.etcd), "--etcd-prefix", self.etcd_prefix]
        cmd = [
            sys.executable,
            "-m",
            "sixpn",
            "server",
            *store,
            "--listen",
            self.url if self.uds else f"127.0.0.1:{self.port}",
            "--admin-token",
            self.admin_token,
            "--join-token",
            self.join_token,
            "--heartbeat",
            str(self.heartbeat),
            *(["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])] if self.tls else []),
            *self.extra_args,
        ]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until(self._healthy, 60, f"sixpn server on port {self.port}")
        except BaseException:
            self.kill()
            raise
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}: {self.read_log()}")
        try:
            with httpx.Client(
                base_url=self._base, transport=self._transport(), verify=self._verify()
            ) as http:
                return http.get("/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def read_log(self) -> str:
        return self.log.read_text() if self.log and self.log.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """Graceful stop (SIGTERM), then SIGKILL if it lingers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self._base,
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
            timeout=30,
            transport=self._transport(),
            verify=self._verify(),
        )
