"""The lab's namespace removal leaves nothing in /var/run/netns, even a name mounted twice
(seen once in a loaded suite: three namespaces of a VPC left after its "removing what it made";
pyroute2's remove takes one mount away, then the name's file is busy)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

import pytest

from sixpn.lab import netns

pytestmark = pytest.mark.netns


@pytest.fixture
def name() -> Iterator[str]:
    made = netns.unique_name("rmtest")
    netns.create(made)
    try:
        yield made
    finally:
        path = netns.NETNS_DIR / made
        for _ in range(3):  # whatever the test left, mounts and all
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def test_a_namespace_goes_whole(name: str) -> None:
    netns.remove(name)
    assert not netns.exists(name)
    netns.remove(name)  # absent is fine


def test_a_name_mounted_twice_goes_too(name: str) -> None:
    path = str(netns.NETNS_DIR / name)
    subprocess.run(["mount", "--bind", path, path], check=True)
    netns.remove(name)
    assert not netns.exists(name)
