from __future__ import annotations

import os
import shutil

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The netns tier needs root and iproute2; say so clearly instead of failing obscurely."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    for tool in ("ip", "dig"):
        if shutil.which(tool) is None:
            missing.append(tool)
    if missing:
        skip = pytest.mark.skip(reason=f"netns tests need {', '.join(missing)}")
        for item in items:
            if "tests/netns/" in str(item.fspath):
                item.add_marker(skip)
