"""DNS over TCP (RFC 7766): queries with a 2-byte length prefix, several per connection, answered
in order, under two bounds that hold whatever clients do (RFC 7766 section 10, SPEC 10).

- Time. A query must arrive whole within ``IDLE_SECONDS`` of the connection's start or of the
  previous answer: one deadline covers the length prefix and the body, so a client that sends
  one byte and stalls, or trickles the body a byte at a time (slowloris), is closed when that
  deadline runs out, not kept alive by each byte. Writing an answer has the same deadline (a
  client that never reads what it asked for). A connection closed for stalling, or to make
  room, is reset: the answers it has not read are dropped, not kept in the kernel behind a FIN
  that a client reading nothing would never receive.
- Number. At most ``MAX_CONNECTIONS`` are open. A new connection at the cap closes the one that
  has waited longest for its client: connections are kept least recently active first (a
  connection moves to the end when a query of it is read), and the first that is not being
  answered at that moment is closed, as RFC 7766 section 10 allows ("close existing (idle)
  connections or refuse new connections"). A flood of connections that send nothing thus cannot
  keep a legitimate client out: a query is read within a few event-loop turns of its connection
  being accepted, while the flood would need the whole cap of newer connections in between to
  push it out. If every open connection is being answered (forwarded upstream, at most the
  forwarder's deadline), the new one is closed at once.

Chosen over a cap per source address: on 6PN one abuser may hold many addresses (a machine's
/112, a gateway's peers), so a per-source cap would not bound the total, while the rule above
bounds it and costs honest clients only an idle connection they would have reopened anyway (RFC
7766 section 6.2.3: clients must expect a server to close idle connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable

IDLE_SECONDS = 10.0
MAX_CONNECTIONS = 512

Answer = Callable[[bytes, str], Awaitable[bytes | None]]  # (query, source address) -> reply


class _Connection:
    __slots__ = ("busy", "transport")

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport = transport
        self.busy = False  # a query of it is being answered: never closed for a newcomer


class Connections:
    """The open connections, least recently active first, and the rule at the cap."""

    def __init__(self, cap: int = MAX_CONNECTIONS, idle_seconds: float = IDLE_SECONDS) -> None:
        self.cap = cap
        self.idle_seconds = idle_seconds
        self.evicted = 0  # connections closed to make room for a new one
        self.refused = 0  # new connections closed at once: every open one was being answered
        self._open: dict[_Connection, None] = {}  # insertion order: least recently active first

    def __len__(self) -> int:
        return len(self._open)

    def _admit(self, transport: asyncio.WriteTransport) -> _Connection | None:
        if len(self._open) >= self.cap:
            oldest = next((c for c in self._open if not c.busy), None)
            if oldest is None:
                self.refused += 1
                return None
            del self._open[oldest]
            _reset(oldest.transport)  # its reader sees EOF and its handler ends
            self.evicted += 1
        conn = _Connection(transport)
        self._open[conn] = None
        return conn

    def _active(self, conn: _Connection) -> None:
        if conn in self._open:  # to the end: the most recently active
            del self._open[conn]
            self._open[conn] = None

    async def serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: Answer
    ) -> None:
        """One connection, until the client closes it, stalls past the deadline, sends what
        cannot be read, or is closed for a newcomer."""
        peer = writer.get_extra_info("peername")
        conn = self._admit(writer.transport) if peer else None
        try:
            if conn is None:
                return
            while True:
                async with asyncio.timeout(self.idle_seconds):
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    data = await reader.readexactly(size)
                self._active(conn)
                conn.busy = True
                out = await answer(data, peer[0])
                conn.busy = False
                if out is None:
                    return  # unreadable: close the connection (RFC 7766 section 6.2.3)
                async with asyncio.timeout(self.idle_seconds):
                    writer.write(len(out).to_bytes(2, "big") + out)
                    await writer.drain()
        except TimeoutError:
            _reset(writer.transport)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if conn is not None:
                self._open.pop(conn, None)
            writer.close()
            with contextlib.suppress(OSError):  # the connection's own error: it is over anyway
                try:
                    async with asyncio.timeout(self.idle_seconds):
                        await writer.wait_closed()
                except TimeoutError:  # the client half-closed and does not read what is left
                    _reset(writer.transport)


def _reset(transport: asyncio.WriteTransport) -> None:
    """Close a stalled connection with a reset, dropping what it has not read: a plain close
    queues a FIN behind the unsent answers, and a client that reads nothing (a zero window)
    would keep them in the kernel, and never learn the connection is over."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
