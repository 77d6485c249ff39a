"""Shared plumbing of the Linux adapters: running tools and translating their failures.

Rule: a failure leaves this package as a :class:`~sixpn.model.errors.SixpnError` whose message
says what was being done ("setting peer abc= on sxw1: ...") and carries the tool's own words;
a missing tool is :class:`~sixpn.model.errors.Unavailable`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from pyroute2 import NetlinkError

from sixpn.model.errors import SixpnError, Unavailable

TIMEOUT = 30.0


def run(
    argv: Sequence[str],
    what: str,
    *,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    new_session: bool = False,
) -> str:
    """Run ``argv``, return its stdout; raise SixpnError naming ``what`` if it fails."""
    code, out, err = try_run(argv, what, input=input, env=env, new_session=new_session)
    if code != 0:
        words = (err.strip() or out.strip() or f"exit {code}")[-800:]
        raise SixpnError(f"{what}: {' '.join(argv[:3])}...: {words}")
    return out


def try_run(
    argv: Sequence[str],
    what: str,
    *,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    new_session: bool = False,
) -> tuple[int, str, str]:
    """Run ``argv``: (exit status, stdout, stderr). Only a tool that cannot run raises."""
    if shutil.which(argv[0]) is None:
        raise Unavailable(f"{what}: {argv[0]} is not installed")
    try:
        done = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
            env=None if env is None else dict(env),
            start_new_session=new_session,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SixpnError(f"{what}: {argv[0]}: {exc}") from exc
    return done.returncode, done.stdout, done.stderr


@contextlib.contextmanager
def netlink(what: str) -> Iterator[None]:
    """Translate netlink and OS errors raised inside the block into SixpnError."""
    try:
        yield
    except NetlinkError as exc:
        raise SixpnError(f"{what}: {os.strerror(exc.code)} (netlink error {exc.code})") from exc
    except OSError as exc:
        raise SixpnError(f"{what}: {exc}") from exc


def ignore(*codes: int) -> contextlib.AbstractContextManager[None]:
    """Suppress a NetlinkError whose errno is one of ``codes`` (idempotent add / delete)."""
    return _Ignore(codes)


class _Ignore(contextlib.AbstractContextManager[None]):
    def __init__(self, codes: tuple[int, ...]) -> None:
        self.codes = codes

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        return isinstance(exc, NetlinkError) and exc.code in self.codes


EEXIST, ENODEV, ESRCH, EADDRNOTAVAIL, ENOENT = (
    errno.EEXIST,
    errno.ENODEV,
    errno.ESRCH,
    errno.EADDRNOTAVAIL,
    errno.ENOENT,
)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll ``predicate`` with a deadline (no fixed sleeps); SixpnError naming ``what``."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not predicate():
        if time.monotonic() > deadline:
            raise SixpnError(f"{what}: not done after {timeout:g} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
