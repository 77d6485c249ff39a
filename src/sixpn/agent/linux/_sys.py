"""Shared plumbing of the Linux adapters: running tools and translating their failures.

Rule: a failure leaves this package as a :class:`~sixpn.model.errors.SixpnError` whose message
says what was being done ("setting peer abc= on sxw1: ...") and carries the tool's own words;
a missing tool is :class:`~sixpn.model.errors.Unavailable`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from pyroute2 import IPRoute, NetlinkError
from pyroute2 import netns as pyroute2_netns

from sixpn.model.errors import SixpnError, Unavailable

TIMEOUT = 30.0

log = logging.getLogger("sixpn.agent")


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


@contextlib.contextmanager
def ipr_in(netns_path: Path) -> Iterator[IPRoute]:
    """An ``IPRoute`` whose socket is in the namespace at ``netns_path`` (``/var/run/netns/X``).

    The calling thread enters that namespace only while it opens the socket (``setns`` is per
    thread; a socket stays in the namespace it was opened in) and comes back at once. pyroute2's
    ``NetNS`` gives the same socket by forking a helper process, which costs ~19 ms where this
    costs ~1 ms, once per machine and resync (docs/benchmarks.md). Nothing else runs in this
    thread meanwhile, so no command or socket of the agent's lands in the machine's namespace.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(netns_path, os.O_RDONLY)
        try:
            pyroute2_netns.setns(target, fork=False)
            try:
                ipr = IPRoute()
            finally:
                _return_to(own)
        finally:
            os.close(target)
    finally:
        os.close(own)
    with ipr:
        yield ipr


_CLONE_NEWNET = 0x40000000
_MS_BIND, _MS_REC, _MS_SHARED = 0x1000, 0x4000, 0x100000
_libc = ctypes.CDLL(None, use_errno=True)


def is_netns(path: Path) -> bool:
    """Whether ``path`` names a network namespace: a mount there, not the empty file that a
    naming cut short between making the mount point and mounting leaves behind."""
    try:
        return path.stat().st_dev != path.parent.stat().st_dev
    except OSError:
        return False


@contextlib.contextmanager
def new_netns() -> Iterator[int]:
    """A new network namespace with no name, held only by the descriptor yielded: if this
    process dies before :func:`name_netns`, the namespace goes with it, and every interface
    in it (a veth's other end too). The calling thread enters it only to make it (``unshare``
    is per thread) and comes back at once, as in :func:`ipr_in`."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if _libc.unshare(_CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"making a network namespace: {os.strerror(code)}")
        try:
            fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        finally:
            _return_to(own)
    finally:
        os.close(own)
    try:
        yield fd
    finally:
        os.close(fd)


def name_netns(fd: int, path: Path) -> None:
    """Name the namespace held by ``fd`` as ``ip netns add`` does: a bind mount at ``path``
    (``/var/run/netns/<name>``), in a directory shared with the other mount namespaces. An
    empty mount point already there (a naming cut short) is mounted on."""
    _share(path.parent)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        if is_netns(path):
            raise  # named by someone else meanwhile: never mounted over
    if _libc.mount(f"/proc/self/fd/{fd}".encode(), bytes(path), None, _MS_BIND, None) != 0:
        code = ctypes.get_errno()
        with contextlib.suppress(OSError):
            path.unlink()
        raise OSError(code, f"naming a network namespace {path}: {os.strerror(code)}")


def _share(directory: Path) -> None:
    """Make ``directory`` a shared mount (a bind mount on itself first if it is none), so that
    the names made in it reach every mount namespace (iproute2's ``netns_add``)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = bytes(directory)
    if _libc.mount(b"none", target, None, _MS_SHARED | _MS_REC, None) == 0:
        return
    if (
        _libc.mount(target, target, b"none", _MS_BIND | _MS_REC, None) != 0
        or _libc.mount(b"none", target, None, _MS_SHARED | _MS_REC, None) != 0
    ):
        code = ctypes.get_errno()
        raise OSError(code, f"sharing {directory}: {os.strerror(code)}")


def _return_to(own: int) -> None:
    try:
        pyroute2_netns.setns(own, fork=False)
    except OSError as exc:  # never seen: setns back to our own namespace, as root
        # This thread would apply the host's plan inside a machine's namespace: stop instead.
        log.critical("cannot return to the host's network namespace (%s): exiting", exc)
        logging.shutdown()
        os._exit(70)


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
