"""The port between the agent and a host's kernel, and its verified fake.

``LinuxHost`` (``agent/linux/host.py``) is the real one; :class:`FakeHost` keeps the state in
memory and applies operations with the planner's own model (``core.plan.apply``), so the agent
loop can be tested without root. Both pass the same contract: after ``apply`` of a plan,
``read`` returns the desired state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sixpn.core.hoststate import HostState
from sixpn.core.plan import Op, apply


class HostPort(Protocol):
    backend: str

    def start(self) -> None:
        """Once per agent start, before the first read: what a read cannot see but an agent
        of this version sets (e.g. receive steering on an interface an older agent made)."""

    def read(self) -> HostState: ...

    def apply(self, op: Op) -> None: ...

    def peer_stats(self) -> list[PeerStats]:
        """What the WireGuard interface knows of each peer (``wg show``): none if absent."""
        ...

    def teardown(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PeerStats:
    public_key: str
    endpoint: str | None
    latest_handshake: int  # Unix time, 0: never
    rx_bytes: int
    tx_bytes: int


class FakeHost:
    backend = "fake"

    def __init__(self, state: HostState | None = None) -> None:
        self.state = state or HostState(wg_ifname=None)
        self.applied: list[Op] = []
        self.stats: dict[str, PeerStats] = {}  # what a test makes the interface say, by key

    def peer_stats(self) -> list[PeerStats]:
        """The peers the fake interface holds, with the counters a test set (else zeros)."""
        return [
            self.stats.get(p.public_key) or PeerStats(p.public_key, None, 0, 0, 0)
            for p in self.state.wg_peers
        ]

    def start(self) -> None:
        pass

    def read(self) -> HostState:
        return self.state

    def apply(self, op: Op) -> None:
        self.state = apply(self.state, [op])
        self.applied.append(op)

    def teardown(self) -> None:
        self.state = HostState(wg_ifname=None)
