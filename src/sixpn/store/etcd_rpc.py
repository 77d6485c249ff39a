"""The connection of the etcd store to its cluster: a narrow, typed layer over gRPC.

It speaks etcd's gRPC API through the stubs that ``aetcd`` generates (``aetcd.rpc``), on
``grpc.aio`` channels of its own, one per endpoint: ``aetcd.Client`` reaches one endpoint, in
plain text only, and hands out watch events one by one, losing the response boundaries that keep
a revision whole. grpcio and those generated modules have no type hints; the Protocols below say
what the store reads from etcd's messages.

The rules that hold:

- Every call has one deadline that covers failing over between endpoints, so a store cut off
  from the cluster's majority fails with Unavailable within it instead of hanging. Every request
  carries etcd's "require leader" metadata: a member without a leader answers at once (and
  cancels its watch streams) instead of waiting for one.
- A request is sent again (to the next endpoint) only when it surely was not applied: no
  connection, or no leader (etcd's own clientv3 retries writes on the same condition). Reads are
  retried on any unavailability; a write whose fate is unknown (the connection broke after it
  was sent, the deadline passed) fails with Unavailable saying so.
- gRPC errors become sixpn errors here and only here (store misuse: InvalidInput; the rest:
  Unavailable naming the store, its endpoints and what was being done).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc  # type: ignore[import-untyped]  # grpcio ships no type hints
from aetcd import rpc as _rpc  # type: ignore[import-untyped]  # generated protobuf code

from sixpn.model.errors import InvalidInput, Unavailable

rpc: Any = _rpc  # etcd's request messages and enums (etcdserverpb, mvccpb)
EOF: object = grpc.aio.EOF  # what a stream's read() returns once the server has ended it
RpcError: type[Exception] = grpc.aio.AioRpcError  # a call or stream failed (see details())

_RETRY_PAUSE_S = 0.1  # after every endpoint failed once, before trying them again
_NOT_SENT = ("failed to connect", "no leader", "not capable", "too many requests")
# An attempt's deadline as etcd reports it when its copy of the deadline fires before the client's
# (etcd 3.4's gRPC sends Go's context error as UNKNOWN, not DEADLINE_EXCEEDED): a read moves on.
_SERVER_DEADLINE = "context deadline exceeded"
# etcd answers these when the credentials are wrong or missing: the store is misconfigured.
_AUTH_FAILED = ("user name is empty", "authentication failed")
_LEADER = (("hasleader", "true"),)  # etcd's "require leader" metadata (rpctypes.MetadataHasLeader)
_CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", -1),  # a large range or revision comes in one message
    ("grpc.keepalive_time_ms", 10_000),  # find a peer gone silent; etcd refuses pings < 5 s apart
    ("grpc.keepalive_timeout_ms", 5_000),
    # A member that comes back is used again within a second, not after gRPC's 2-minute backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
)


class KeyValue(Protocol):
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int


class Header(Protocol):
    revision: int


class Answer(Protocol):
    """The fields read from etcd's unary answers (each has those of its RPC)."""

    header: Header
    kvs: Sequence[KeyValue]  # Range
    succeeded: bool  # Txn
    token: str  # Authenticate


class WatchEvent(Protocol):
    type: int
    kv: KeyValue
    prev_kv: KeyValue


class WatchResponse(Protocol):
    canceled: bool
    compact_revision: int
    cancel_reason: str
    events: Sequence[WatchEvent]


class WatchCall(Protocol):
    async def write(self, request: object) -> None: ...
    async def read(self) -> Any: ...  # a WatchResponse, or EOF
    def cancel(self) -> bool: ...


@dataclass(slots=True)
class _Endpoint:
    target: str
    channel: Any  # grpc.aio.Channel
    kv: Any  # rpc.KVStub
    watch: Any  # rpc.WatchStub
    auth: Any  # rpc.AuthStub


class Connection:
    """Channels to every endpoint of one cluster, and calls with failover under one deadline."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        name: str,
        timeout: float,
        ca_file: str | Path | None,
        cert_file: str | Path | None,
        key_file: str | Path | None,
        user: str | None,
        password: str | None,
    ) -> None:
        if not endpoints:
            raise InvalidInput(f"{name}: no endpoint given")
        if (cert_file is None) != (key_file is None) or (user is None) != (password is None):
            raise InvalidInput(f"{name}: a client certificate needs its key, a user a password")
        tls = _tls(name, ca_file, cert_file, key_file)
        self._endpoints = [_endpoint(name, e, tls) for e in endpoints]
        self.name = f"{name} on {','.join(e.target for e in self._endpoints)}"
        self.timeout = timeout
        self._current = 0  # the endpoint tried first; moves on when it fails
        self._credentials = (user, password) if user is not None and password is not None else None
        self._metadata: tuple[tuple[str, str], ...] = _LEADER
        self.closed = False

    def check_open(self, doing: str) -> None:
        if self.closed:
            raise Unavailable(f"{self.name}: {doing}: the store is closed")

    async def range(self, doing: str, request: object) -> Answer:
        return await self.call(doing, lambda e: e.kv.Range, request, retry_any=True)

    async def txn(self, doing: str, request: object) -> Answer:
        return await self.call(doing, lambda e: e.kv.Txn, request, retry_any=False)

    async def compact(self, doing: str, request: object) -> None:
        await self.call(doing, lambda e: e.kv.Compact, request, retry_any=True)

    async def call(
        self,
        doing: str,
        method: Callable[[_Endpoint], Any],
        request: object,
        *,
        retry_any: bool,
        authenticating: bool = False,
    ) -> Answer:
        """``method(endpoint)(request)`` on the current endpoint, then the next ones, until one
        answers or the deadline passes. ``retry_any``: the request is safe to repeat."""
        self.check_open(doing)
        deadline = time.monotonic() + self.timeout
        failures, last, reauthenticated = 0, "no endpoint was tried", False
        # A read may be stuck on a member whose leader just died (its ReadIndex waits for the
        # old leader): it tries another endpoint after a part of the deadline. A write cannot,
        # since its fate would be unknown: it has the whole deadline.
        attempt = max(self.timeout / 3, 0.5) if retry_any else self.timeout
        while (remaining := deadline - time.monotonic()) > 0:
            index = self._current
            # Authenticate without the token: etcd refuses even that with an expired one.
            metadata = _LEADER if authenticating else self._metadata
            try:
                answer: Answer = await method(self._endpoints[index])(
                    request, timeout=min(remaining, attempt), metadata=metadata
                )
                return answer
            except grpc.aio.AioRpcError as e:
                self.check_open(doing)
                code, last = e.code(), e.details() or str(e.code())
                if any(s in last for s in _AUTH_FAILED):
                    raise Unavailable(f"{self.name}: {doing}: {last} (check user, password)") from e
                if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
                    raise InvalidInput(f"{self.name}: {doing}: {last}") from e
                if code == grpc.StatusCode.UNAUTHENTICATED and self._credentials:
                    if reauthenticated:
                        raise Unavailable(f"{self.name}: {doing}: {last}") from e
                    await self.authenticate()  # the token expired (etcd's --auth-token-ttl)
                    reauthenticated = True
                    continue
                unsure = not retry_any and not any(s in last for s in _NOT_SENT)
                late = retry_any and (
                    code == grpc.StatusCode.DEADLINE_EXCEEDED or last == _SERVER_DEADLINE
                )
                if (code != grpc.StatusCode.UNAVAILABLE and not late) or unsure:
                    applied = " (it may or may not have been applied)" if unsure else ""
                    raise Unavailable(f"{self.name}: {doing}{applied}: {last}") from e
            self.failed(index)
            failures += 1
            if failures % len(self._endpoints) == 0:
                await asyncio.sleep(min(_RETRY_PAUSE_S, max(deadline - time.monotonic(), 0)))
        raise Unavailable(
            f"{self.name}: {doing}: no member with a leader answered within "
            f"{self.timeout:g} s (last: {last})"
        )

    def failed(self, index: int) -> None:
        """Endpoint ``index`` failed: try the next one first from now on."""
        if self._current == index:
            self._current = (index + 1) % len(self._endpoints)

    async def authenticate(self) -> None:
        """Get a token for the user, if one is configured (at open, and when it expires)."""
        if self._credentials is None:
            return
        user, password = self._credentials
        request = rpc.AuthenticateRequest(name=user, password=password)
        answer = await self.call(
            f"authenticating as {user!r}",
            lambda e: e.auth.Authenticate,
            request,
            retry_any=True,
            authenticating=True,
        )
        self._metadata = (*_LEADER, ("token", str(answer.token)))

    @property
    def authenticated(self) -> bool:
        return self._credentials is not None

    def open_watch(self) -> tuple[int, str, WatchCall]:
        """A new watch stream on the current endpoint: its index, its address and the call."""
        index = self._current
        endpoint = self._endpoints[index]
        call: WatchCall = endpoint.watch.Watch(metadata=self._metadata)
        return index, endpoint.target, call

    @property
    def size(self) -> int:
        return len(self._endpoints)

    async def close(self) -> None:
        self.closed = True
        await asyncio.gather(*(e.channel.close() for e in self._endpoints))


def details(e: Exception) -> str:
    """What went wrong in a :data:`RpcError`, in etcd's or gRPC's words."""
    assert isinstance(e, grpc.aio.AioRpcError)
    return str(e.details() or e.code())


def _tls(name: str, ca: str | Path | None, cert: str | Path | None, key: str | Path | None) -> Any:
    """Channel credentials for TLS, or None when no TLS option is given."""
    if ca is None and cert is None:
        return None

    def read(path: str | Path | None) -> bytes | None:
        return None if path is None else Path(path).read_bytes()

    try:
        return grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
    except OSError as e:
        raise InvalidInput(f"{name}: reading TLS files: {e}") from e


def _endpoint(name: str, address: str, tls: Any) -> _Endpoint:
    """A channel to ``[http[s]://]host:port``: TLS for https, or without a scheme when TLS files
    are given."""
    scheme, sep, target = address.partition("://")
    if not sep:
        scheme, target = ("https" if tls else "http"), address
    if scheme not in ("http", "https") or not target:
        raise InvalidInput(f"{name}: endpoint {address!r} is not [http[s]://]host:port")
    if scheme == "https":
        tls = tls or grpc.ssl_channel_credentials()  # the system's CAs
        channel = grpc.aio.secure_channel(target, tls, options=_CHANNEL_OPTIONS)
    elif tls is not None:
        raise InvalidInput(f"{name}: endpoint {address!r} is http but TLS files are given")
    else:
        channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
    stubs = rpc.KVStub(channel), rpc.WatchStub(channel), rpc.AuthStub(channel)
    return _Endpoint(target, channel, *stubs)


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key starting with ``prefix`` (etcd's range_end for a prefix)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\x00"  # etcd: "every key >= key"
    return stripped[:-1] + bytes([stripped[-1] + 1])
