"""The client with several control-plane URLs (replicas of one store): it moves to the next one
when its replica cannot be reached, never sends a create twice, and its change-stream follower
resumes from its last revision wherever it reconnects.

Replicas of one store need the etcd store; here the "other replica" is a URL where nothing
listens, or the same server restarted, which is what a client sees when a replica dies.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from sixpn.client import Client
from sixpn.client.api import _may_resend, split_urls
from sixpn.model.errors import InvalidInput, Unavailable
from tests.component.test_follow import Recorder, changes
from tests.harness import ServerProcess, free_port

pytestmark = pytest.mark.component


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


async def test_requests_move_to_the_next_replica_when_theirs_cannot_be_reached(
    server: ServerProcess,
) -> None:
    dead = dead_url()
    async with Client(f"{dead}, {server.url}", server.admin_token) as c:
        assert c.urls == [dead, server.url]
        org = await c.create_org("acme")  # a write, never received by the dead one: moved on
        assert org.name == "acme"
        assert c.url == server.url
        assert [o.name for o in await c.list_orgs()] == ["acme"]
    async with Client(f"{dead},{dead_url()}", server.admin_token) as c:
        with pytest.raises(Unavailable) as info:
            await c.list_orgs()
        assert "cannot reach the control plane" in info.value.message


def test_bad_urls_are_named() -> None:
    with pytest.raises(InvalidInput) as info:
        split_urls("http://a:7180,ftp://b")
    assert "ftp://b" in info.value.message
    with pytest.raises(InvalidInput):
        split_urls("")


def test_only_a_read_or_a_request_that_never_left_is_sent_again() -> None:
    """A create whose answer was lost may have been applied: it is not sent to another replica."""
    request = httpx.Request("POST", "http://a/v1/orgs")

    def failure(cause: Exception) -> Unavailable:
        exc = Unavailable("lost")
        exc.__cause__ = cause
        return exc

    assert _may_resend("POST", failure(httpx.ConnectError("refused", request=request)))
    assert _may_resend("POST", failure(httpx.ConnectTimeout("slow", request=request)))
    assert not _may_resend("POST", failure(httpx.ReadTimeout("lost", request=request)))
    assert not _may_resend("POST", failure(httpx.RemoteProtocolError("cut", request=request)))
    assert _may_resend("GET", failure(httpx.ReadTimeout("lost", request=request)))


async def test_the_follower_resumes_from_its_revision_after_moving_between_urls(
    server: ServerProcess,
) -> None:
    async with (
        Client(f"{server.url},{dead_url()}", server.admin_token) as writer,
        Client(f"{server.url},{dead_url()}", server.admin_token) as reader,
    ):
        await writer.create_org("one")
        start = (await reader.snapshot()).revision
        rec = Recorder(reader.follow(start, min_backoff=0.05, max_backoff=0.2))
        await writer.create_org("two")
        await rec.until(lambda b: len(changes(b)) >= 1, "the first change")
        server.kill()  # the replica dies: the follower moves to the dead URL, then back
        await asyncio.sleep(0.5)
        server.start()
        async with Client(server.url, server.admin_token) as again:
            await again.create_org("three")
            await again.create_org("four")
        await rec.until(lambda b: len(changes(b)) >= 3, "the changes after the restart")
        await rec.stop()
    revisions = [b.revision for b in changes(rec.batches)]
    assert revisions == sorted(set(revisions))  # in order, none twice
    names = [e.entity.name for b in changes(rec.batches) for e in b.events if e.kind == "org"]
    assert names == ["two", "three", "four"]
