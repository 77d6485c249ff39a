"""Where the other hosts reach this host's WireGuard: ``--endpoint``, followed when the host's
own address moves.

The endpoint is written into the host's record when it joins, and every other host's mesh peer
for it carries it. When the host's underlay address changes (a new DHCP lease, a re-plugged
link, a moved VM) the others would go on sending to the old one: WireGuard's roaming hides this
only until the next reconcile, which sets the recorded (old) endpoint again. So the agent keeps
the record true (SPEC 10, "a host's underlay ... address changed"):

- An endpoint whose address is one of this host's own addresses when the agent starts is
  *followed*: while that address is still here it is the endpoint; once it is gone, the endpoint
  is the address the kernel picks as the source toward the other hosts (a connected UDP socket's
  own address: the route's preferred source), same port.
- An endpoint that is not an address of this host (a public address in front of NAT, a name) is
  the operator's word and is never changed by the agent.
- Whatever the endpoint is, the agent writes it into the host's record whenever the record
  differs (at start too: an agent restarted with a new ``--endpoint`` moves its host).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from sixpn.core.wireguard import split_endpoint

CHECK_SECONDS = 2.0  # how often the agent looks at its address: a bind() and a connect()


def _family(address: str) -> int | None:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    except ValueError:
        return None  # a host name


def is_local(address: str) -> bool:
    """Whether ``address`` is an address of this host (of this network namespace): only then
    can a socket be bound to it (no ``ip_nonlocal_bind`` on hosts that run the agent)."""
    family = _family(address)
    if family is None:
        return False
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, 0))
        except OSError:
            return False
    return True


def source_toward(address: str, port: int) -> str | None:
    """The source address the kernel would use to reach ``address`` (no packet is sent: a UDP
    ``connect`` only looks the route up); None without a route."""
    family = _family(address)
    if family is None:
        return None
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((address, port))
        except OSError:
            return None
        source: str = s.getsockname()[0]
    return source


def join_endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass
class EndpointFollower:
    """This host's endpoint now, from ``--endpoint`` (``configured``) and the addresses the
    host has (see the module's rule)."""

    configured: str
    follows: bool = field(init=False)

    def __post_init__(self) -> None:
        self._address, self._port = split_endpoint(self.configured)
        self.follows = is_local(self._address)

    def current(self, others: Iterable[str]) -> str:
        """The endpoint to record, given the other hosts' endpoints (to find the source address
        toward them when ours is gone)."""
        if not self.follows or is_local(self._address):
            return self.configured
        for other in others:
            address, port = split_endpoint(other)
            if _family(address) != _family(self._address):
                continue
            source = source_toward(address, port)
            if source is not None:
                return join_endpoint(source, self._port)
        return self.configured  # no route anywhere (link down): nothing better to say
