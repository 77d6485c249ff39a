"""Real etcd servers for tests: one member or an N-member cluster on free localhost ports.

The ``etcd`` binary is Debian's (``etcd-server``, installed by ``scripts/sysdeps.sh``). Every
cluster lives in a fresh directory (under /dev/shm when it exists: etcd fsyncs every commit, and
tmpfs makes that free), with names and a cluster token unique to the run; members are processes
of the test, stopped by PID (and killed with the test process if it dies: PR_SET_PDEATHSIG).
Waits poll with a deadline.

    with EtcdCluster(3) as cluster:        # started and healthy
        cluster.endpoints                  # ["http://127.0.0.1:PORT", ...]
        cluster.kill(0)                    # SIGKILL by PID
        cluster.restart(0)                 # same name, ports and data: it rejoins
        await cluster.leader()             # the index of the current leader

``EtcdCluster(1, tls=True)`` serves clients over TLS with client certificates: a CA made for the
run signs the server's and the client's certificates (``ca_file``, ``cert_file``, ``key_file``).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aetcd
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sixpn.lab.etcd import free_ports  # below the ephemeral range: a restart finds its ports free

ETCD = shutil.which("etcd")
START_TIMEOUT = 20.0  # seconds for a member (or a cluster) to report healthy


def require_etcd() -> str:
    """The etcd binary, or skip the test with the reason."""
    if ETCD is None:
        pytest.skip("the etcd binary is not installed (scripts/sysdeps.sh installs etcd-server)")
    return ETCD


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    scheme: str = "http"
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class EtcdCluster:
    """``size`` etcd members forming one cluster; :meth:`start` (or ``with``) starts them all."""

    def __init__(
        self, size: int = 1, *, tls: bool = False, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.binary = require_etcd()
        self.size = size
        self.extra_args = extra_args
        shm = Path("/dev/shm")
        base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
        self.dir = Path(tempfile.mkdtemp(prefix="sixpn-etcd-", dir=base))
        self.token = f"sixpn-test-{uuid.uuid4().hex[:12]}"
        self.members: list[Member] = []
        self.tls = tls
        self.ca_file = self.cert_file = self.key_file = self.dir / "none"
        if tls:
            self.ca_file, self.cert_file, self.key_file = _make_certificates(self.dir / "tls")

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def start(self, timeout: float = START_TIMEOUT) -> EtcdCluster:
        """Start every member on fresh free ports and wait until all are healthy. A port taken
        between choosing it and etcd binding it makes a member exit: then start again."""
        for _attempt in range(3):
            ports = free_ports(2 * self.size)
            scheme = "https" if self.tls else "http"
            self.members = [
                Member(f"{self.token}-{i}", ports[2 * i], ports[2 * i + 1], self.dir / f"m{i}")
                for i in range(self.size)
            ]
            for m in self.members:
                m.scheme = scheme
            for i in range(self.size):
                self._spawn(i)
            try:
                self.wait_healthy(timeout=timeout)
                return self
            except RuntimeError:
                if all(m.running for m in self.members):
                    self.stop()
                    raise
                self._stop_members()
                for m in self.members:
                    shutil.rmtree(m.data_dir, ignore_errors=True)
        self.stop()
        raise RuntimeError(f"etcd cluster in {self.dir} did not start (see the logs there)")

    def _spawn(self, i: int) -> None:
        m = self.members[i]
        cluster = ",".join(f"{o.name}={o.peer_url}" for o in self.members)
        args = [
            self.binary,
            f"--name={m.name}",
            f"--data-dir={m.data_dir}",
            f"--listen-client-urls={m.client_url}",
            f"--advertise-client-urls={m.client_url}",
            f"--listen-peer-urls={m.peer_url}",
            f"--initial-advertise-peer-urls={m.peer_url}",
            f"--initial-cluster={cluster}",
            f"--initial-cluster-token={self.token}",
            "--initial-cluster-state=new",  # ignored when the data dir exists (a restart)
            # Faster elections than the defaults (100 ms / 1 s): a killed leader is replaced
            # within a second.
            "--heartbeat-interval=50",
            "--election-timeout=500",
            "--logger=zap",
            "--log-level=warn",
            *self.extra_args,
        ]
        if self.tls:
            tls = self.dir / "tls"
            args += [f"--cert-file={tls / 'server.pem'}", f"--key-file={tls / 'server.key'}"]
            args += [f"--trusted-ca-file={self.ca_file}", "--client-cert-auth"]
        # PR_SET_PDEATHSIG follows the thread that forked: only from the main thread (pytest's).
        # Set by setpriv, which then execs etcd (the PID stays etcd's): no Python runs in the
        # child, which is not safe in a process with threads (gRPC's) and crashed it (SIGSEGV
        # before exec) now and then.
        main = threading.current_thread() is threading.main_thread()
        wrapper = ["setpriv", "--pdeathsig", "KILL", "--"] if main else []
        log = (self.dir / f"{m.name}.log").open("ab")
        try:
            m.process = subprocess.Popen([*wrapper, *args], stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()

    def wait_healthy(self, *members: int, timeout: float = START_TIMEOUT) -> None:
        """Wait until each given member (default: every running one) answers /health true."""
        which = [self.members[i] for i in members] or [m for m in self.members if m.running]
        deadline = time.monotonic() + timeout
        for m in which:
            while not self._healthy(m):
                if not m.running:
                    log = self.dir / f"{m.name}.log"
                    tail = log.read_text(errors="replace")[-1500:] if log.exists() else "no log"
                    code = m.process.returncode if m.process else None
                    raise RuntimeError(f"etcd member {m.name} exited ({code}): {tail}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd member {m.name} not healthy after {timeout:g} s")
                time.sleep(0.05)

    async def wait_healthy_async(self, *members: int, timeout: float = START_TIMEOUT) -> None:
        """:meth:`wait_healthy` without blocking the event loop."""
        await asyncio.to_thread(self.wait_healthy, *members, timeout=timeout)

    async def leader(self) -> int:
        """The index of the member that leads the cluster now (asked of a running member)."""
        for m in self.members:
            if m.running and m.scheme == "http":
                async with aetcd.Client("127.0.0.1", m.client_port, timeout=5) as client:
                    status = await client.status()
                if status.leader is not None:
                    return [o.name for o in self.members].index(status.leader.name)
        raise RuntimeError("no running member knows a leader")

    def kill(self, i: int, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to member ``i`` by PID and reap it."""
        m = self.members[i]
        if m.process is not None and m.process.poll() is None:
            os.kill(m.process.pid, sig)
            m.process.wait(timeout=10)

    def restart(self, i: int, *, wait: bool = True) -> None:
        """Start member ``i`` again on its ports and data: it rejoins the cluster."""
        self.kill(i)
        self._spawn(i)
        if wait:
            self.wait_healthy(i)

    def _stop_members(self) -> None:
        for m in self.members:
            if m.running:
                assert m.process is not None
                m.process.terminate()
        for m in self.members:
            if m.process is not None:
                try:
                    # etcd hands over leadership on SIGTERM; with the peers gone it would try
                    # for seconds. The data is thrown away anyway.
                    m.process.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    m.process.kill()
                    m.process.wait()

    def stop(self) -> None:
        """Stop every member by PID and remove the directory."""
        try:
            self._stop_members()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        if not self.members:
            try:
                self.start()
            except BaseException:
                self.stop()
                raise
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _healthy(self, m: Member) -> bool:
        context = None
        if self.tls:
            context = ssl.create_default_context(cafile=self.ca_file)
            context.load_cert_chain(self.cert_file, self.key_file)
        try:
            url = f"{m.client_url}/health"
            with urllib.request.urlopen(url, timeout=1, context=context) as answer:
                return bool(json.loads(answer.read()).get("health") == "true")
        except (OSError, ValueError):
            return False


def _make_certificates(where: Path) -> tuple[Path, Path, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, signed by the CA.
    Returns the CA's file and the client's certificate and key files."""
    where.mkdir(parents=True)
    now = datetime.datetime.now(datetime.UTC)

    def issue(
        name: str,
        key: ec.EllipticCurvePrivateKey,
        ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    ) -> x509.Certificate:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca[0].subject if ca else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca is None, path_length=None), critical=True)
        )
        if ca is not None:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            builder = builder.add_extension(san, critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        return builder.sign(ca[1] if ca else key, hashes.SHA256())

    def write(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        (where / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (where / f"{stem}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("sixpn test CA", ca_key, None)
    write("ca", ca, ca_key)
    for stem in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        write(stem, issue(f"sixpn test {stem}", key, (ca, ca_key)), key)
    return where / "ca.pem", where / "client.pem", where / "client.key"
