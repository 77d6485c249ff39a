"""The typed async client of the control plane's HTTP API, used by the CLI, agents and DNS servers.

- :class:`Client`: one method per API operation, returning entity dataclasses; failures are the
  ``model/errors.py`` tree (an unreachable server is :class:`~sixpn.model.errors.Unavailable`).
- :meth:`Client.snapshot` and :meth:`Client.follow`: the change feed, resumable across drops.
- :func:`generate_keypair`: WireGuard keys, made where they are used.
"""

from sixpn.client.api import DEFAULT_API, Client
from sixpn.client.feed import ChangeBatch, ChangeEvent, Snapshot
from sixpn.client.keys import KeyPair, generate_keypair, public_key_of
from sixpn.client.wire import to_jsonable

__all__ = [
    "DEFAULT_API",
    "ChangeBatch",
    "ChangeEvent",
    "Client",
    "KeyPair",
    "Snapshot",
    "generate_keypair",
    "public_key_of",
    "to_jsonable",
]
