"""What every use case needs: the store, the region catalogue, the clock and the random source.

Passing the clock and randomness in keeps the use cases deterministic under test.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sixpn.control import tx
from sixpn.control.ids import IdBlocks
from sixpn.core.regions import RegionCatalogue
from sixpn.store import Store

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    store: Store
    regions: RegionCatalogue = field(default_factory=RegionCatalogue.default)
    clock: Callable[[], float] = time.time
    rand_bytes: Callable[[int], bytes] = secrets.token_bytes
    rand_below: Callable[[int], int] = secrets.randbelow

    ids: IdBlocks = field(default_factory=IdBlocks)

    async def take_id(self, counter: str, *, what: str) -> int:
        """A network or host ID: unique across replicas, never reused (``control.ids``)."""
        return await self.ids.take(self.store, self.clock, counter, what=what)

    async def run(self, fn: Callable[[tx.Tx], Awaitable[T]], *, what: str) -> T:
        """Run a use case: its reads compared at the commit, run again on interference."""
        return await tx.run(self.store, self.clock, fn, what=what)
