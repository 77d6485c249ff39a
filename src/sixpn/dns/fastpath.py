"""The C loop for the DNS server's UDP hot path, when it is there (ARCHITECTURE habit 10).

``sixpn.dns._fastpath`` (``_fastpath.c``, built by ``pip install``; optional) receives a batch of
datagrams with one ``recvmmsg``, answers those whose whole response is in the server's cache
with one ``sendmmsg``, and hands the rest back as ``(data, address)`` pairs exactly as
``socket.recvfrom`` gives them, for the Python path (``DnsServer._answer_misses``) to handle.

Without the extension (no compiler at install time) or with ``SIXPN_DNS_PURE_PYTHON=1`` in the
environment, :func:`udp_drain` returns None and the server keeps its pure-Python loop; which
one runs is logged once per process.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from typing import Any, cast

log = logging.getLogger("sixpn.dns.fastpath")

ENV_PURE_PYTHON = "SIXPN_DNS_PURE_PYTHON"

# drain(fd, responses, rcodes, budget, any_source_net=None) -> (received, dropped, misses):
# batches of up to 64 datagrams until the socket is empty or ``budget`` were received;
# - responses: {(network ID, query[2:]): response[2:]}, read only; a hit sends query[:2] + value
#   from the socket and adds 1 to rcodes[value[1] & 0x0F];
# - received: datagrams taken from the socket; dropped: failed sends and datagrams over 4096
#   bytes; misses: [(data, address)] as socket.recvfrom(4096) returns them;
# - any_source_net: tests only, every source counts as this network (not only fdaa::/16).
# The addresses are typed as typeshed types socket.recvfrom's: Any.
Drain = Callable[..., tuple[int, int, list[tuple[bytes, Any]]]]
# serve(fd, stop_fd, responses, counters, budget, lock, zone, version) -> None | False | misses:
# waits (GIL released) until fd or stop_fd is readable; None: stop; then with ``lock`` held,
# False if zone.version != version (nothing drained), else drain(fd, responses,
# counters.rcodes, budget) with received and dropped added to counters.queries and .dropped.
Serve = Callable[..., list[tuple[bytes, Any]] | bool | None]

_logged = False


def _load() -> Drain | None:
    try:
        module = importlib.import_module("sixpn.dns._fastpath")
    except ImportError:
        return None
    return cast(Drain, module.drain)


def udp_serve() -> Serve | None:
    """The C ``serve`` (a UDP thread's wait and drain), when the C ``drain`` is in use."""
    if udp_drain() is None:
        return None
    return cast(Serve, importlib.import_module("sixpn.dns._fastpath").serve)


def extension() -> Drain | None:
    """The extension's ``drain``, whatever the environment says (tests); None if not built."""
    return _load()


def udp_drain() -> Drain | None:
    """The C ``drain`` to use for IPv6 UDP sockets, or None for the pure-Python loop."""
    global _logged
    forced = os.environ.get(ENV_PURE_PYTHON, "") not in ("", "0")
    drain = None if forced else _load()
    if not _logged:
        _logged = True
        if drain is not None:
            log.info("DNS UDP path: C (sixpn.dns._fastpath: recvmmsg/sendmmsg)")
        elif forced:
            log.info("DNS UDP path: pure Python (%s is set)", ENV_PURE_PYTHON)
        else:
            log.warning("DNS UDP path: pure Python (sixpn.dns._fastpath is not built)")
    return drain
