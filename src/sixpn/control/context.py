"""What every use case needs: the store, the region catalogue, the clock and the random source.

Passing the clock and randomness in keeps the use cases deterministic under test.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sixpn.control import tx
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

    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def run(
        self, fn: Callable[[tx.Tx], Awaitable[T]], *, what: str, serialize: str | None = None
    ) -> T:
        """Run a use case; ``serialize`` names a hot key (an ID counter) whose writers in this
        process take turns, so that they do not all lose their compare-and-swap to each other
        (replicas still rely on the compare)."""
        if serialize is None:
            return await tx.run(self.store, self.clock, fn, what=what)
        async with self.locks.setdefault(serialize, asyncio.Lock()):
            return await tx.run(self.store, self.clock, fn, what=what)
