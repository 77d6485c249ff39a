"""Keeps a DNS zone fed from the control plane: a snapshot, then the change stream, forever.

The zone keeps answering from its last state while the control plane is unreachable (the
follower reconnects by itself, SPEC 4.4/10); a revision the server no longer keeps (410) means
starting again from a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import random

from sixpn.client import Client
from sixpn.dns.zone import Zone
from sixpn.model.errors import Gone, SixpnError
from sixpn.view import View

log = logging.getLogger("sixpn.dns.feed")


class ZoneFeed:
    def __init__(self, client: Client, zone: Zone) -> None:
        self.client = client
        self.zone = zone
        self.view = View()
        self.loaded = asyncio.Event()

    async def run(self) -> None:
        """Follow forever (cancel to stop)."""
        while True:
            await self._load_snapshot()
            try:
                async for batch in self.client.follow(self.view.revision):
                    self.zone.apply(self.view.apply(batch))
            except Gone as exc:
                log.warning("change stream: %s; loading a new snapshot", exc.message)

    async def _load_snapshot(self) -> None:
        delay = 0.1
        while True:
            try:
                snapshot = await self.client.snapshot()
                break
            except SixpnError as exc:
                if 400 <= exc.status < 500 and exc.status != 410:
                    raise
                log.warning("snapshot from the control plane failed (%s); retrying", exc.message)
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, 5.0)
        self.view = View.from_snapshot(snapshot)
        self.zone.load(self.view)
        self.loaded.set()
        log.info(
            "zone loaded at revision %d: %d networks, %d machines",
            self.view.revision,
            len(self.view.networks),
            len(self.view.machines),
        )
