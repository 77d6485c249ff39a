"""Following the fleet: a snapshot into a :class:`~sixpn.view.View`, then the change stream.

Used by every consumer of the control plane's state (the DNS server, the agent). They keep
working from their last view while the control plane is unreachable (the client reconnects by
itself, SPEC 4.4 and 10); a revision the server no longer keeps (410) means loading a fresh
snapshot, which is handed to ``on_load`` like the first one.

After each snapshot is loaded, the memory its decoding used is given back (:func:`settle`): at
100k machines the decode leaves ~1.6 KiB/machine resident where the state itself needs ~0.7
(glibc keeps freed memory in its arenas), and the cyclic GC's full passes would otherwise walk
every entity of the fleet again and again (docs/benchmarks.md, scale).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import random
from collections.abc import Callable

from sixpn.client import Client
from sixpn.model.errors import Gone, SixpnError
from sixpn.view import Delta, View

log = logging.getLogger("sixpn.follower")


def settle() -> bool:
    """Once a large state is loaded: collect what its building left, move what stays out of the
    cyclic GC's reach (``gc.freeze``: entities are freed by reference counts alone, a later
    snapshot's included), and hand freed memory back to the system (glibc's ``malloc_trim``).
    Whether memory could be handed back."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):  # not glibc
        return False


class Follower:
    def __init__(
        self,
        client: Client,
        *,
        on_load: Callable[[View], None],
        on_change: Callable[[View, list[Delta]], None],
        on_position: Callable[[int], None] | None = None,
    ) -> None:
        self.client = client
        self.on_load = on_load
        self.on_change = on_change
        self.on_position = on_position
        self.view = View()
        self.loaded = asyncio.Event()

    async def run(self) -> None:
        """Follow forever (cancel to stop). Raises only for a refused credential (4xx)."""
        while True:
            await self._load_snapshot()
            try:
                async for batch in self.client.follow(self.view.revision):
                    deltas = self.view.apply(batch)
                    if deltas:
                        self.on_change(self.view, deltas)
                    if self.on_position is not None:
                        self.on_position(batch.revision)
            except Gone as exc:
                log.warning("change stream: %s; loading a new snapshot", exc.message)

    async def _load_snapshot(self) -> None:
        delay = 0.1
        while True:
            try:
                snapshot = await self.client.snapshot()
                break
            except SixpnError as exc:
                if 400 <= exc.status < 500:
                    raise
                log.warning("snapshot from the control plane failed (%s); retrying", exc.message)
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, 5.0)
        self.view = View.from_snapshot(snapshot)
        del snapshot
        self.on_load(self.view)
        settle()
        self.loaded.set()
        log.info(
            "loaded revision %d: %d hosts, %d networks, %d machines, %d peers",
            self.view.revision,
            len(self.view.hosts),
            len(self.view.networks),
            len(self.view.machines),
            len(self.view.peers),
        )
