"""The agent's data directory: its WireGuard key, its credential, who it is, its last status.

The private key is made here, on the host, and never leaves it (only the public key is sent
when joining). Secrets are written 0600 through a temporary file and a rename, so a crash never
leaves half a key. Layout::

    wg.key          the WireGuard private key (0600)
    credential      the host credential the join returned (0600)
    host.json       {"name", "host_id", "control"}: who this agent is, and where it joined
    status.json     the last reconcile: backend, revision, interface, machines, peers
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sixpn.client.keys import generate_keypair, public_key_of


def write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class DataDir:
    path: Path

    @property
    def key_file(self) -> Path:
        return self.path / "wg.key"

    def ensure(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def public_key(self) -> str:
        """The host's public key, generating the key pair on first use."""
        self.ensure()
        if not self.key_file.exists():
            write_private(self.key_file, generate_keypair().private_key + "\n")
        return public_key_of(self.key_file.read_text().strip())

    def credential(self) -> str | None:
        f = self.path / "credential"
        return f.read_text().strip() if f.exists() else None

    def save_join(self, credential: str, identity: dict[str, Any]) -> None:
        write_private(self.path / "credential", credential + "\n")
        write_private(self.path / "host.json", json.dumps(identity) + "\n")

    def identity(self) -> dict[str, Any] | None:
        f = self.path / "host.json"
        return dict(json.loads(f.read_text())) if f.exists() else None

    def save_status(self, status: dict[str, Any]) -> None:
        write_private(self.path / "status.json", json.dumps(status, indent=2) + "\n")

    def status(self) -> dict[str, Any] | None:
        f = self.path / "status.json"
        return dict(json.loads(f.read_text())) if f.exists() else None
