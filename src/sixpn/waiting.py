"""Waiting for a condition in blocking code: poll with a deadline, never a fixed sleep.

The one poll loop of the lab (``lab/fabric.py``: its waits raise ``LabTimeout``) and of the test
harness (``tests/harness.py``: a check that raises counts as "not yet"). Each caller pins its
policy in a thin wrapper of its own; the loop, the deadline and the message live here. Code on an
event loop waits on events instead (``asyncio``), not on this.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    check: Callable[[], object],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
    retry_on: tuple[type[Exception], ...] = (),
    error: Callable[[str], Exception] = TimeoutError,
) -> None:
    """Call ``check`` every ``interval`` s until it returns something true.

    After ``timeout`` s raise ``error("timed out after {timeout}s waiting for {what}")``. An
    exception of ``check`` propagates at once, unless it is one of ``retry_on``: those count as
    "not yet", and the last one is re-raised once the deadline has passed (it says more about
    what went wrong than a bare timeout would).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except retry_on:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
