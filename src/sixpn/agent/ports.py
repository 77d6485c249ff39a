"""The port between the agent and a host's kernel, and its verified fake.

``LinuxHost`` (``agent/linux/host.py``) is the real one; :class:`FakeHost` keeps the state in
memory and applies operations with the planner's own model (``core.plan.apply``), so the agent
loop can be tested without root. Both pass the same contract: after ``apply`` of a plan,
``read`` returns the desired state.
"""

from __future__ import annotations

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

    def teardown(self) -> None: ...


class FakeHost:
    backend = "fake"

    def __init__(self, state: HostState | None = None) -> None:
        self.state = state or HostState(wg_ifname=None)
        self.applied: list[Op] = []

    def start(self) -> None:
        pass

    def read(self) -> HostState:
        return self.state

    def apply(self, op: Op) -> None:
        self.state = apply(self.state, [op])
        self.applied.append(op)

    def teardown(self) -> None:
        self.state = HostState(wg_ifname=None)
