"""Allocation decisions: which ID, field or slot to hand out next. Pure.

The store makes a decision stick (a compare-and-swap on the counter or on the taken key, retried
on contention); these functions only decide. Randomness comes in as callables so that tests can
drive it.

Rules that hold:

- Network IDs and host IDs are counters that only go up: never reused, not even after a delete.
  They start at 1 (the first call gets ``last=0``); host ID 0 is reserved for service addresses.
- Machine fields are random in ``[MACHINE_FIELD_MIN, MACHINE_FIELD_MAX]`` and unique per
  (network, host) among the live machines (random, so that concurrent creators rarely collide
  on the same key and the CAS rarely retries).
- Peer slots per (network, gateway host) are handed out in increasing order and never reused, so
  a removed peer's address is never given to somebody else.
- A machine's string ID is 14 lowercase hex characters (7 random bytes), as on Fly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container
from collections.abc import Set as AbstractSet

from sixpn.core.addressing import MACHINE_FIELD_MAX, MACHINE_FIELD_MIN, MAX_ID, PEER_SLOTS
from sixpn.model.errors import Exhausted

MACHINE_ID_BYTES = 7
MACHINE_ID_RE = re.compile(r"^[0-9a-f]{14}$")
"""Use with ``fullmatch`` (``$`` alone would accept a trailing newline)."""


def is_machine_id(value: str) -> bool:
    """Whether ``value`` has the shape of a machine's string ID."""
    return MACHINE_ID_RE.fullmatch(value) is not None


def next_id(last: int, *, what: str, maximum: int = MAX_ID) -> int:
    """The ID after ``last`` for a never-reused counter; ``last=0`` for the first one.

    Raises Exhausted once ``maximum`` has been handed out.
    """
    if last < 0:
        raise ValueError(f"allocating {what}: last value {last} is negative")
    if last >= maximum:
        raise Exhausted(f"allocating {what}: all {maximum} IDs have been used")
    return last + 1


def pick_free(
    taken: Container[int],
    rand_below: Callable[[int], int],
    *,
    low: int,
    high: int,
    what: str,
    tries: int = 64,
) -> int:
    """A random value in ``[low, high]`` not in ``taken``; Exhausted if there is none.

    ``rand_below(n)`` returns an int in ``[0, n)``. After ``tries`` random picks that were all
    taken, scan upward (wrapping) from a random start. When ``taken`` is a Set of size k the scan
    stops after at most k + 1 steps: k + 1 distinct values cannot all be among k taken ones. For
    another Container the scan may visit the whole range before it reports Exhausted.
    """
    if low > high:
        raise ValueError(f"allocating {what}: empty range [{low}, {high}]")
    span = high - low + 1

    def draw() -> int:
        r = rand_below(span)
        if not 0 <= r < span:
            raise ValueError(f"allocating {what}: rand_below({span}) returned {r}")
        return r

    for _ in range(tries):
        candidate = low + draw()
        if candidate not in taken:
            return candidate
    steps = min(span, len(taken) + 1) if isinstance(taken, AbstractSet) else span
    start = draw()
    for i in range(steps):
        candidate = low + (start + i) % span
        if candidate not in taken:
            return candidate
    raise Exhausted(f"allocating {what}: all {span} values in [{low:#x}, {high:#x}] are in use")


def pick_machine_field(
    taken: Container[int], rand_below: Callable[[int], int], *, tries: int = 64
) -> int:
    """A random machine field not in ``taken`` (the fields of live machines on that /80).

    Pass a Set to keep the never-reached fallback scan bounded by ``len(taken) + 1`` steps.
    """
    return pick_free(
        taken,
        rand_below,
        low=MACHINE_FIELD_MIN,
        high=MACHINE_FIELD_MAX,
        what="machine field",
        tries=tries,
    )


def next_peer_slot(last: int | None) -> int:
    """The next peer slot of a (network, gateway host): 0 first, then increasing, never reused."""
    if last is None:
        return 0
    if last < 0:
        raise ValueError(f"allocating peer slot: last slot {last} is negative")
    if last >= PEER_SLOTS - 1:
        raise Exhausted(
            f"allocating peer slot: all {PEER_SLOTS} peer /120s of this gateway host "
            "in this network have been used"
        )
    return last + 1


def new_machine_id(rand_bytes: Callable[[int], bytes]) -> str:
    """A new machine string ID: 7 random bytes as 14 lowercase hex characters."""
    raw = rand_bytes(MACHINE_ID_BYTES)
    if len(raw) != MACHINE_ID_BYTES:
        raise ValueError(f"rand_bytes({MACHINE_ID_BYTES}) returned {len(raw)} bytes")
    return raw.hex()
