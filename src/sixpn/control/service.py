"""The control plane's use cases, grouped by noun, over one store.

Every write goes through here; the HTTP layer only translates. The change stream is the store's
own watch (``control/feed.py``): a use case does not publish anything by itself.
"""

from __future__ import annotations

from sixpn.control.context import Context
from sixpn.control.hosts import Hosts
from sixpn.control.machines import Machines
from sixpn.control.orgs import Orgs
from sixpn.control.peers import Peers
from sixpn.control.peerstatus import DEFAULT_EPHEMERAL_IDLE, PeerStatuses
from sixpn.control.tokens import Tokens


class Service:
    def __init__(self, ctx: Context, *, ephemeral_idle: float = DEFAULT_EPHEMERAL_IDLE) -> None:
        self.ctx = ctx
        self.orgs = Orgs(ctx)
        self.tokens = Tokens(ctx)
        self.hosts = Hosts(ctx, self.tokens)
        self.machines = Machines(ctx)
        self.peers = Peers(ctx)
        self.peer_status = PeerStatuses(ctx, ephemeral_idle)
