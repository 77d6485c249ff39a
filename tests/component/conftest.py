from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sixpn.store import Store
from sixpn.store.memory import MemoryStore
from sixpn.store.sqlite import SqliteStore
from tests.harness import ServerProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh `sixpn server` process with an empty SQLite store, killed after the test."""
    proc = ServerProcess(db=tmp_path / "server.db").start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The embedded stores, each test on both (a file's own ``store`` fixture overrides this)."""
    real: Store = (
        MemoryStore() if request.param == "memory" else await SqliteStore.open(tmp_path / "s.db")
    )
    try:
        yield real
    finally:
        await real.close()
