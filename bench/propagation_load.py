"""The propagation benchmark's background load: "other clients" changing machines at a steady rate.

Run as ``python propagation_load.py`` with one JSON object on its first stdin line::

    {"socket": PATH, "token": T, "org": ORG, "rate": 190, "connections": 8, "seed": 1,
     "apps": [...], "hosts": [...], "lab_hosts": [...], "lab_share": 0.0,
     "started": [machine IDs]}

It answers ``ready``, then waits for a line ``go`` and changes machines through the HTTP API
(its own connections, :mod:`propagation_http`) until stdin says ``stop`` or ends, then prints
one JSON summary line. Open loop: change k is due at ``t0 + k / rate`` whatever happened to the
ones before (a slow control plane shows as lateness and a lower achieved rate, both reported),
``connections`` requests in flight at most. The changes cycle create, stop, destroy (so the
population stays the same): a create puts a started machine of a random app in ``apps`` on a
random host of ``hosts`` (with probability ``lab_share`` on one of ``lab_hosts`` instead), a
stop picks a random started machine (the ones given in ``started`` to begin with), a destroy the
longest-stopped one. Errors are counted, not fatal.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import Counter, deque
from typing import Any

from propagation_http import AsyncConn


class Load:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.get("seed", 1))
        self.started: list[str] = list(cfg.get("started", []))
        self.stopped: deque[str] = deque()
        self.base = f"/v1/orgs/{cfg['org']}/machines"
        self.done: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.error_samples: list[str] = []
        self.per_second: Counter[int] = Counter()
        self.latency_ms: list[float] = []
        self.late_ms: list[float] = []
        self.stopping = False
        self.t0 = 0.0
        self.next = 0

    def _kind(self, k: int) -> str:
        kind = ("create", "stop", "destroy")[k % 3]
        if kind == "destroy" and not self.stopped:
            kind = "stop"
        if kind == "stop" and not self.started:
            kind = "create"
        return kind

    async def one(self, conn: AsyncConn, kind: str) -> None:
        cfg = self.cfg
        if kind == "create":
            lab = cfg.get("lab_hosts") or []
            on_lab = lab and self.rng.random() < cfg.get("lab_share", 0.0)
            host = self.rng.choice(lab if on_lab else cfg["hosts"])
            body = {"app": self.rng.choice(cfg["apps"]), "host": host}
            status, value = await conn.call("POST", self.base, body)
            if status == 201:
                self.started.append(value["id"])
        elif kind == "stop":
            mid = self.started.pop(self.rng.randrange(len(self.started)))
            status, value = await conn.call("POST", f"{self.base}/{mid}/stop")
            if status == 200:
                self.stopped.append(mid)
        else:
            mid = self.stopped.popleft()
            status, value = await conn.call("DELETE", f"{self.base}/{mid}")
        if not 200 <= status < 300:
            self.errors[f"{kind} {status}"] += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(f"{kind}: {status} {json.dumps(value)[:200]}")
            return
        self.done[kind] += 1

    async def worker(self, conn: AsyncConn) -> None:
        rate = float(self.cfg["rate"])
        while not self.stopping:
            k = self.next
            self.next += 1
            due = self.t0 + k / rate
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            if self.stopping:
                return
            start = time.monotonic()
            self.late_ms.append(max(0.0, start - due) * 1000)
            try:
                await self.one(conn, self._kind(k))
            except Exception as exc:  # counted; the connection is made again
                self.errors[type(exc).__name__] += 1
                if len(self.error_samples) < 5:
                    self.error_samples.append(repr(exc)[:200])
                await conn.close()
                continue
            end = time.monotonic()
            self.latency_ms.append((end - start) * 1000)
            self.per_second[int(end - self.t0)] += 1

    async def run(self, lines: asyncio.StreamReader) -> dict[str, Any]:
        conns = [
            AsyncConn(self.cfg["socket"], self.cfg["token"])
            for _ in range(int(self.cfg.get("connections", 8)))
        ]
        self.t0 = time.monotonic()
        workers = [asyncio.create_task(self.worker(c)) for c in conns]
        while True:
            line = await lines.readline()
            if not line or line.strip() == b"stop":
                break
        stopped_at = time.monotonic()
        self.stopping = True
        await asyncio.gather(*workers, return_exceptions=True)
        for c in conns:
            await c.close()
        elapsed = stopped_at - self.t0
        lat = sorted(self.latency_ms)
        late = sorted(self.late_ms)

        def pct(values: list[float], p: float) -> float | None:
            return values[min(len(values) - 1, int(len(values) * p / 100))] if values else None

        return {
            "t0": self.t0,
            "seconds": elapsed,
            "done": dict(self.done),
            "total": sum(self.done.values()),
            "rate": sum(self.done.values()) / elapsed if elapsed > 0 else 0.0,
            "errors": dict(self.errors),
            "error_samples": self.error_samples,
            "latency_ms": {
                "p50": pct(lat, 50),
                "p99": pct(lat, 99),
                "max": lat[-1] if lat else None,
            },
            "late_ms": {
                "p50": pct(late, 50),
                "p99": pct(late, 99),
                "max": late[-1] if late else None,
            },
            "per_second": [self.per_second.get(s, 0) for s in range(int(elapsed) + 1)],
            "started_left": len(self.started),
            "stopped_left": len(self.stopped),
        }


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    cfg = json.loads(await reader.readline())
    load = Load(cfg)
    print("ready", flush=True)
    if (await reader.readline()).strip() != b"go":
        return
    summary = await load.run(reader)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
