"""The one poll loop (``sixpn.waiting``) and the two policies built on it: the lab's (a check's
error ends the wait at once; LabTimeout) and the test harness's (a check's error means "not yet",
re-raised after the deadline). A negative timeout makes "the deadline has passed" certain without
timing anything."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sixpn.lab.fabric import LabError, LabTimeout
from sixpn.lab.fabric import wait_until as lab_wait_until
from sixpn.waiting import wait_until
from tests.harness import wait_until as harness_wait_until

pytestmark = pytest.mark.unit


def true_on_call(n: int, fail: type[Exception] | None = None) -> Callable[[], bool]:
    """A check that is true on its ``n``-th call; before that it raises ``fail`` or is false."""
    calls = 0

    def check() -> bool:
        nonlocal calls
        calls += 1
        if calls < n and fail is not None:
            raise fail(f"call {calls}")
        return calls >= n

    return check


def test_returns_once_the_check_is_true() -> None:
    wait_until(true_on_call(3), 60, "the third call", interval=0)


def test_times_out_naming_what_it_waited_for() -> None:
    with pytest.raises(TimeoutError, match=r"timed out after -1s waiting for the moon"):
        wait_until(lambda: False, -1, "the moon")


def test_a_check_error_ends_the_wait_at_once_unless_retried() -> None:
    with pytest.raises(OSError, match="call 1"):
        wait_until(true_on_call(3, OSError), 60, "a port")
    wait_until(true_on_call(3, OSError), 60, "a port", interval=0, retry_on=(OSError,))


def test_a_retried_error_is_raised_after_the_deadline() -> None:
    with pytest.raises(OSError, match="call 1"):
        wait_until(true_on_call(3, OSError), -1, "a port", retry_on=(OSError,))


def test_lab_waits_raise_lab_timeout_and_stop_on_lab_errors() -> None:
    with pytest.raises(LabTimeout, match=r"^lab: timed out after -1s waiting for an agent$"):
        lab_wait_until(lambda: False, -1, "an agent")
    assert issubclass(LabTimeout, TimeoutError)
    with pytest.raises(LabError, match="call 1"):
        lab_wait_until(true_on_call(3, LabError), 60, "a server")


def test_harness_waits_retry_any_error_then_re_raise_it() -> None:
    harness_wait_until(true_on_call(3, ConnectionRefusedError), 60, "a server", interval=0)
    with pytest.raises(ConnectionRefusedError, match="call 1"):
        harness_wait_until(true_on_call(3, ConnectionRefusedError), -1, "a server")
    with pytest.raises(TimeoutError, match=r"^timed out after -1s waiting for a server$"):
        harness_wait_until(lambda: False, -1, "a server")
