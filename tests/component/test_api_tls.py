"""The API over TLS with real certificates (issue 17): a real `sixpn server --tls-cert/--tls-key`
process, the real CLI (subprocesses) and the Python client.

The certificates are made with the `cryptography` package (``control/tlsfiles.py``): a CA and
a server certificate for 127.0.0.1 and localhost, and a second CA that has nothing to do with
them. What a user would check: with the right CA everything works; with the wrong one (or the
system's store, which does not know a private CA) the client refuses the server with an error
naming the URL and why, never a traceback; the server refuses bad certificate files and plain
HTTP on a network address before it listens; and no token ever shows in the server's log.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sixpn.client import Client
from sixpn.control.tlsfiles import issue_server_cert, make_ca
from sixpn.model.errors import InvalidInput, Unavailable
from sixpn.runtime.server import is_local
from tests.harness import ServerProcess, free_port

pytestmark = pytest.mark.component


@dataclass(frozen=True)
class Pki:
    ca: Path  # the server's CA certificate
    cert: Path  # the server's certificate (127.0.0.1, localhost)
    key: Path
    other_ca: Path  # an unrelated CA
    other_key: Path  # a key of another certificate (the unrelated CA's server's)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca("sixpn test CA")
    ca.write(d / "ca.pem", d / "ca.key")
    issue_server_cert(ca, ["127.0.0.1", "localhost"]).write(d / "server.pem", d / "server.key")
    other = make_ca("unrelated CA")
    other.write(d / "other-ca.pem", d / "other-ca.key")
    issue_server_cert(other, ["127.0.0.1"]).write(d / "other.pem", d / "other.key")
    return Pki(
        ca=d / "ca.pem",
        cert=d / "server.pem",
        key=d / "server.key",
        other_ca=d / "other-ca.pem",
        other_key=d / "other.key",
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("tls") / "server.db"
    proc = ServerProcess(db=db, tls=(pki.cert, pki.key), ca=pki.ca).start()
    try:
        yield proc
    finally:
        proc.kill()


def sixpn(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sixpn", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def no_ca(env: dict[str, str]) -> dict[str, str]:
    env = dict(env)
    env.pop("SIXPN_CA", None)
    return env


def test_the_server_speaks_https_only(server: ServerProcess) -> None:
    assert server.url.startswith("https://127.0.0.1:")
    with httpx.Client(verify=False) as plain, pytest.raises(httpx.HTTPError):
        plain.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)


def test_cli_with_the_right_ca_works(server: ServerProcess, pki: Pki) -> None:
    made = sixpn(server.env(), "orgs", "create", "acme-tls")  # SIXPN_CA in the environment
    assert made.returncode == 0, made.stderr
    listed = sixpn(no_ca(server.env()), "--ca", str(pki.ca), "orgs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "acme-tls" in listed.stdout


async def test_python_client_with_the_right_ca_works(server: ServerProcess, pki: Pki) -> None:
    async with Client(server.url, server.admin_token, ca=pki.ca) as client:
        org = await client.create_org("py-tls")
        assert org.name == "py-tls"
        assert "py-tls" in [o.name for o in await client.list_orgs()]
    env_client = Client.from_env({**server.env(), "SIXPN_CA": str(pki.ca)})
    async with env_client:
        assert (await env_client.health())["status"] == "ok"


def test_cli_with_the_wrong_ca_is_refused(server: ServerProcess, pki: Pki) -> None:
    refused = sixpn(no_ca(server.env()), "--ca", str(pki.other_ca), "orgs", "list")
    assert refused.returncode == 1, refused
    assert server.url in refused.stderr
    assert "did not verify" in refused.stderr
    assert "unable to get local issuer certificate" in refused.stderr
    assert str(pki.other_ca) in refused.stderr
    assert "Traceback" not in refused.stderr


def test_system_store_does_not_know_a_private_ca(server: ServerProcess) -> None:
    refused = sixpn(no_ca(server.env()), "orgs", "list")
    assert refused.returncode == 1, refused
    assert server.url in refused.stderr
    assert "system's trust store" in refused.stderr
    assert "--ca" in refused.stderr
    assert "Traceback" not in refused.stderr


async def test_python_client_with_the_wrong_ca_is_refused(server: ServerProcess, pki: Pki) -> None:
    async with Client(server.url, server.admin_token, ca=pki.other_ca) as client:
        with pytest.raises(Unavailable) as info:
            await client.list_orgs()
    assert server.url in info.value.message
    assert "certificate" in info.value.message


def test_an_unusable_ca_file_is_a_usage_error(server: ServerProcess, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    answer = sixpn(no_ca(server.env()), "--ca", str(missing), "orgs", "list")
    assert answer.returncode == 2, answer
    assert str(missing) in answer.stderr
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(InvalidInput, match=str(garbage)):
        Client(server.url, "t", ca=garbage)


def test_the_wrong_scheme_is_named(server: ServerProcess, pki: Pki, tmp_path: Path) -> None:
    plain_url = server.url.replace("https://", "http://")
    answer = sixpn({**server.env(), "SIXPN_API": plain_url}, "orgs", "list")
    assert answer.returncode == 1, answer
    assert plain_url in answer.stderr
    assert "if it serves HTTPS, the URL is https://" in answer.stderr
    plain = ServerProcess(db=tmp_path / "plain.db").start()
    try:
        tls_url = plain.url.replace("http://", "https://")
        answer = sixpn(
            {**plain.env(), "SIXPN_API": tls_url, "SIXPN_CA": str(pki.ca)}, "orgs", "list"
        )
    finally:
        plain.kill()
    assert answer.returncode == 1, answer
    assert tls_url in answer.stderr
    assert "does it serve plain http://" in answer.stderr


# -- the server refuses what it cannot serve safely, before it listens -------------------------


def start_server(tmp_path: Path, *args: str, port: int) -> subprocess.CompletedProcess[str]:
    """A `sixpn server` expected to exit by itself (it refuses to start)."""
    argv = ["server", "--db", str(tmp_path / "refused.db"), "--admin-token", "x" * 32, *args]
    answer = sixpn(dict(os.environ), *argv)
    with socket.socket() as probe:  # nothing was left listening
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return answer


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("missing cert", "cannot read the certificate"),
        ("missing key", "cannot read the private key"),
        ("garbage cert", "not a PEM certificate"),
        ("garbage key", "not an unencrypted PEM private key"),
        ("another certificate's key", "is not the private key of the certificate"),
        ("cert without key", "--tls-cert and --tls-key go together"),
    ],
)
def test_bad_certificate_files_stop_the_server(
    tmp_path: Path, pki: Pki, case: str, fragment: str
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    missing = tmp_path / "missing.pem"
    cert, key = {
        "missing cert": (missing, pki.key),
        "missing key": (pki.cert, missing),
        "garbage cert": (garbage, pki.key),
        "garbage key": (pki.cert, garbage),
        "another certificate's key": (pki.cert, pki.other_key),
        "cert without key": (pki.cert, None),
    }[case]
    port = free_port()
    args = ["--listen", f"127.0.0.1:{port}", "--tls-cert", str(cert)]
    if key is not None:
        args += ["--tls-key", str(key)]
    answer = start_server(tmp_path, *args, port=port)
    assert answer.returncode == 2, answer
    assert fragment in answer.stderr
    named = {"missing key": missing, "garbage key": garbage, "another certificate's key": key}
    if case != "cert without key":
        assert str(named.get(case, cert)) in answer.stderr
    assert "Traceback" not in answer.stderr
    assert not (tmp_path / "refused.db").exists()  # refused before the store was opened


@pytest.mark.parametrize(
    ("listen", "local"),
    [
        ("127.0.0.1:7180", True),
        ("127.8.9.10:7180", True),
        ("[::1]:7180", True),
        ("localhost:7180", True),
        ("unix:/run/sixpn/api.sock", True),
        ("0.0.0.0:7180", False),
        ("[::]:7180", False),
        ("192.0.2.5:7180", False),
        ("cp.example.com:7180", False),
    ],
)
def test_what_counts_as_local(listen: str, local: bool) -> None:
    assert is_local(listen) is local


def test_plain_http_on_a_network_address_is_refused(tmp_path: Path) -> None:
    port = free_port()
    answer = start_server(tmp_path, "--listen", f"0.0.0.0:{port}", port=port)
    assert answer.returncode == 2, answer
    assert f"--listen 0.0.0.0:{port}: refusing plain HTTP" in answer.stderr
    assert "--insecure-plain-http" in answer.stderr
    assert "--tls-cert" in answer.stderr


def test_plain_http_on_a_network_address_with_the_opt_out_warns(tmp_path: Path) -> None:
    server = ServerProcess(db=tmp_path / "server.db", extra_args=("--insecure-plain-http",))
    # ServerProcess listens on 127.0.0.1: a second --listen (the last one wins) opens it wide.
    server.extra_args += ("--listen", f"0.0.0.0:{server.port}")
    server.start()
    try:
        with server.client() as http:  # reached over loopback, as the bind covers it
            assert http.get("/v1/orgs").status_code == 200
    finally:
        server.kill()
    log = server.read_log()
    assert "INSECURE: serving plain HTTP on 0.0.0.0" in log
    assert "WARNING" in log


def test_plain_http_on_loopback_is_quiet(tmp_path: Path) -> None:
    server = ServerProcess(db=tmp_path / "server.db").start()
    server.kill()
    assert "WARNING" not in server.read_log()
    assert "INSECURE" not in server.read_log()


# -- no token in the log -------------------------------------------------------------------------


def test_no_token_ever_reaches_the_server_log(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIXPN_LOG_LEVEL", "DEBUG")  # the server's own loggers at their most verbose
    server = ServerProcess(db=tmp_path / "server.db", tls=(pki.cert, pki.key), ca=pki.ca).start()
    wrong = "sixpn_WRONG" + "w" * 32
    in_query = "sixpn_QUERY" + "q" * 32
    in_path = "sixpn_PATH" + "p" * 32
    in_body = "sixpn_BODY" + "b" * 32
    try:
        with server.client() as admin:
            made = admin.post("/v1/orgs", json={"name": "logged"})
            assert made.status_code in (200, 201), made.text
            org_token = admin.post("/v1/orgs/logged/tokens", json={}).json()["secret"]
            assert admin.get("/v1/orgs").status_code == 200
            assert admin.get(f"/v1/orgs?token={in_query}").status_code == 200
            assert admin.get(f"/v1/orgs/{in_path}").status_code == 404
            assert admin.post("/v1/orgs", json={"name": in_body}).status_code == 422
        with server.client(org_token) as org:
            assert org.get("/v1/orgs/logged/apps").status_code == 200
            assert org.get("/v1/tokens").status_code == 403
        with server.client(wrong) as bad:
            assert bad.get("/v1/orgs").status_code == 401
            assert bad.post("/v1/orgs", content=b"{").status_code == 401
        with server.client() as http:
            for header in (f"Basic {wrong}", wrong, f"Bearer {wrong} extra"):
                answer = http.get("/v1/orgs", headers={"Authorization": header})
                assert answer.status_code == 401
        # A raw, broken request carrying a token: whatever the server says, it must not echo it.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            context = ssl.create_default_context(cafile=str(pki.ca))
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                broken = f"GET /v1/orgs HTTP/1.1\r\nAuthorization: Bearer {wrong}\r\n\0\r\n\r\n"
                tls.sendall(broken.encode())
                tls.recv(65536)
    finally:
        server.kill()
    log = server.read_log()
    assert "sixpn.server" in log  # the log is there and was written
    for secret in (server.admin_token, org_token, wrong, in_query, in_path, in_body):
        assert secret not in log, f"a token in the server log:\n{log}"
