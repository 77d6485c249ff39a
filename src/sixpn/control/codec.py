"""Entities to bytes and back, for the store and the change feed.

pydantic's compiled validators do the work (one TypeAdapter per entity type, built once); the
stored form is the JSON the API also shows, so a value read from the store or the stream needs no
second translation at the edge.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from pydantic import TypeAdapter

from sixpn.model.entities import (
    App,
    Host,
    HostStatus,
    Machine,
    Network,
    Org,
    Peer,
    PeerStatus,
    Token,
)

E = TypeVar("E")

KINDS: dict[str, type[Any]] = {
    "org": Org,
    "network": Network,
    "app": App,
    "host": Host,
    "hoststatus": HostStatus,
    "machine": Machine,
    "peer": Peer,
    "peerstat": PeerStatus,
    "token": Token,
}
_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {cls: TypeAdapter(cls) for cls in KINDS.values()}


def encode(entity: object) -> bytes:
    return _ADAPTERS[type(entity)].dump_json(entity)


def decode(cls: type[E], raw: bytes) -> E:
    return cast(E, _ADAPTERS[cls].validate_json(raw))


def to_jsonable(entity: object) -> dict[str, Any]:
    return cast(dict[str, Any], _ADAPTERS[type(entity)].dump_python(entity, mode="json"))
