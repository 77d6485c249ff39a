from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import ServerProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh `sixpn server` process with an empty SQLite store, killed after the test."""
    proc = ServerProcess(db=tmp_path / "server.db").start()
    try:
        yield proc
    finally:
        proc.kill()
