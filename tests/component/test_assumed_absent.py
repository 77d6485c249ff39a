"""Keys a use case assumes absent on its first attempt (``control/tx.py``: deletion guards, a
freshly drawn machine ID or field), on the real stores: when the guess is wrong, the answer is
the same as when every key was read first. A parent being deleted refuses new children naming
it, before any later error (and a guard left by a crashed server stops counting after 30 s);
an ID or a field that is already taken is drawn again, and the machine that holds it is left
as it was."""

from __future__ import annotations

import base64
import json
import os
import random
from collections.abc import Callable, Iterator

import pytest

from sixpn.control import codec, keys
from sixpn.control.context import Context
from sixpn.control.service import Service
from sixpn.control.tx import GUARD_STALE_SECONDS
from sixpn.core.addressing import MACHINE_FIELD_MAX, MACHINE_FIELD_MIN
from sixpn.core.alloc import MACHINE_ID_BYTES
from sixpn.model.entities import Machine
from sixpn.model.errors import Conflict
from sixpn.store import Put, Store

pytestmark = pytest.mark.component

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def replay(values: list[bytes]) -> Callable[[int], bytes]:
    """``rand_bytes`` giving ``values`` in turn for machine IDs, random bytes for the rest."""
    it: Iterator[bytes] = iter(values)
    return lambda n: next(it) if n == MACHINE_ID_BYTES else os.urandom(n)


async def fleet(svc: Service) -> None:
    await svc.orgs.create("acme")
    await svc.orgs.create_app("acme", "web")
    key = base64.b64encode(b"k" * 32).decode()
    await svc.hosts.join("h1", "fra", "198.51.100.1:51820", key)


async def machines(store: Store) -> list[Machine]:
    kvs, _ = await store.range(keys.machines_of("acme"))
    return [codec.decode(Machine, kv.value) for kv in kvs]


@pytest.mark.parametrize(
    ("parent", "named"),
    [
        (keys.org("acme"), "organization 'acme'"),
        (keys.app("acme", "web"), "app 'acme/web'"),
        (keys.host("h1"), "host 'h1'"),
    ],
)
async def test_a_parent_being_deleted_refuses_a_new_machine(
    store: Store, parent: str, named: str
) -> None:
    clock = Clock()
    svc = Service(Context(store=store, clock=clock))
    await fleet(svc)
    # what the first step of a deletion writes (tx.delete_guarded), by another server
    guard = json.dumps({"at": clock.now}).encode()
    await store.txn([], [Put(keys.guard(parent), guard)])

    with pytest.raises(Conflict) as refused:
        await svc.machines.create("acme", "web", host="h1")
    assert refused.value.message == f"{named} is being deleted"
    assert await machines(store) == []

    # a guard left by a server that died mid-deletion stops counting
    clock.now += GUARD_STALE_SECONDS + 1
    made = await svc.machines.create("acme", "web", host="h1")
    assert [m.id for m in await machines(store)] == [made.id]


async def test_the_parent_being_deleted_is_said_before_a_later_error(store: Store) -> None:
    """The first error a create meets with every key read: the app's deletion, not the host
    named next, which does not exist (the first attempt, which read no guard, met that one)."""
    clock = Clock()
    svc = Service(Context(store=store, clock=clock))
    await fleet(svc)
    guard = json.dumps({"at": clock.now}).encode()
    await store.txn([], [Put(keys.guard(keys.app("acme", "web")), guard)])

    with pytest.raises(Conflict) as refused:
        await svc.machines.create("acme", "web", host="nope")
    assert refused.value.message == "app 'acme/web' is being deleted"


async def test_a_machine_id_already_taken_is_drawn_again(store: Store) -> None:
    first, second = bytes.fromhex("aa" * 7), bytes.fromhex("bb" * 7)
    # the second create draws the first one's ID, then another
    svc = Service(Context(store=store, rand_bytes=replay([first, first, second])))
    await fleet(svc)
    a = await svc.machines.create("acme", "web", host="h1")
    b = await svc.machines.create("acme", "web", host="h1")

    assert (a.id, b.id) == ("aa" * 7, "bb" * 7)
    assert {m.id: m for m in await machines(store)} == {a.id: a, b.id: b}
    assert await svc.machines.get("acme", a.id) == a


async def test_a_field_already_taken_is_drawn_again(store: Store) -> None:
    draws = iter([5, 5, 9])  # the second create draws the first one's field, then another
    span = MACHINE_FIELD_MAX - MACHINE_FIELD_MIN + 1
    rnd = random.Random(1)
    svc = Service(
        Context(store=store, rand_below=lambda n: next(draws) if n == span else rnd.randrange(n))
    )
    await fleet(svc)
    a = await svc.machines.create("acme", "web", host="h1")
    b = await svc.machines.create("acme", "web", host="h1")

    assert (a.field, b.field) == (MACHINE_FIELD_MIN + 5, MACHINE_FIELD_MIN + 9)
    assert a.address != b.address
    assert {m.id: m for m in await machines(store)} == {a.id: a, b.id: b}
