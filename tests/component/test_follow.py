"""The client's change-feed follower against a real server, across a SIGKILL and a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from sixpn.client import ChangeBatch, Client, generate_keypair
from sixpn.model.entities import Machine, MachineState
from sixpn.model.errors import Gone
from tests.harness import ServerProcess

pytestmark = pytest.mark.component

DEADLINE = 20.0


class Recorder:
    """Consumes a follower in a task; tests wait on what it has seen, with a deadline."""

    def __init__(self, stream: AsyncIterator[ChangeBatch]) -> None:
        self.batches: list[ChangeBatch] = []
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run(stream))
        self.task.add_done_callback(lambda _: self._changed.set())

    async def _run(self, stream: AsyncIterator[ChangeBatch]) -> None:
        async for batch in stream:
            self.batches.append(batch)
            self._changed.set()

    async def until(self, done: Callable[[list[ChangeBatch]], bool], what: str) -> None:
        async def wait() -> None:
            while not done(self.batches):
                if self.task.done():
                    self.task.result()  # raises what the follower raised
                    raise AssertionError(f"the follower ended before {what}")
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(wait(), DEADLINE)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; saw {self.batches}") from None

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


def changes(batches: list[ChangeBatch]) -> list[ChangeBatch]:
    return [b for b in batches if not b.is_heartbeat]


def machine_events(batches: list[ChangeBatch]) -> list[tuple[str, MachineState]]:
    return [
        (e.entity.id, e.entity.state)
        for b in batches
        for e in b.events
        if isinstance(e.entity, Machine)
    ]


async def test_follow_resumes_after_the_server_is_killed(server: ServerProcess) -> None:
    async with Client(server.url, server.admin_token) as admin:
        await admin.create_org("acme")
        await admin.create_app("acme", "web")
        async with Client(server.url, server.join_token) as joiner:
            await joiner.join_host("h1", "fra", "192.0.2.1:51820", generate_keypair().public_key)
        start = (await admin.snapshot()).revision

        follower = Client(server.url, server.admin_token)
        recorder = Recorder(follower.follow(start))
        try:
            before = [(await admin.create_machine("acme", "web", host="h1")).id for _ in range(3)]
            started = [(m, MachineState.STARTED) for m in before]
            await recorder.until(lambda b: machine_events(b) == started, "the first machines")

            await asyncio.to_thread(server.kill)  # SIGKILL: no goodbye on the stream
            await asyncio.to_thread(server.start)  # same db, same port

            after = [(await admin.create_machine("acme", "web", host="h1")).id for _ in range(2)]
            await admin.destroy_machine("acme", before[0])
            expected = [
                *started,
                *[(m, MachineState.STARTED) for m in after],
                (before[0], MachineState.DESTROYED),
            ]
            await recorder.until(
                lambda b: len(machine_events(b)) >= len(expected), "the changes after the restart"
            )
            assert machine_events(recorder.batches) == expected  # in order, none twice

            # Nothing missed: a fresh reading of the stream from the same revision has exactly
            # the changes the follower saw across the restart.
            last = (await admin.health())["revision"]
            replay: list[ChangeBatch] = []
            async with Client(server.url, server.admin_token) as reader:

                async def read() -> None:
                    async for batch in reader.watch(start):
                        replay.append(batch)
                        if batch.revision >= last:
                            return

                await asyncio.wait_for(read(), DEADLINE)
            assert changes(recorder.batches) == changes(replay)
            revisions = [b.revision for b in changes(recorder.batches)]
            assert revisions == sorted(set(revisions))
            positions = [b.revision for b in recorder.batches]
            assert positions == sorted(positions)  # heartbeats never go back
        finally:
            await recorder.stop()
            await follower.aclose()


async def test_follow_raises_gone_for_a_revision_the_server_does_not_have(
    server: ServerProcess,
) -> None:
    async with Client(server.url, server.admin_token) as c:
        ahead = (await c.health())["revision"] + 1000
        with pytest.raises(Gone) as err:
            await asyncio.wait_for(anext(c.follow(ahead)), DEADLINE)
    assert "snapshot" in err.value.message
