"""Prometheus metrics of the control plane, served at ``/metrics``.

One registry per application instance (several servers can live in one test process).
Requests are labelled by route template, never by raw path, so label sets stay bounded.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sixpn.store import Store


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sixpn_http_requests",
            "HTTP requests answered, by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sixpn_http_request_seconds",
            "Time to the response head, by route",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.revision = Gauge(
            "sixpn_store_revision", "The store's current revision", registry=self.registry
        )
        self.watchers = Gauge("sixpn_watch_streams", "Open change streams", registry=self.registry)

    async def render(self, store: Store) -> tuple[bytes, str]:
        self.revision.set(await store.revision())
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts every HTTP request once its response head is sent (streams count at start)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        is_watch = scope["path"] == "/v1/watch"

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                template = getattr(route, "path", "unmatched")
                self.metrics.requests.labels(
                    scope["method"], template, str(message["status"])
                ).inc()
                self.metrics.latency.labels(template).observe(time.perf_counter() - started)
            await send(message)

        if is_watch:
            self.metrics.watchers.inc()
        try:
            await self.app(scope, receive, sending)
        finally:
            if is_watch:
                self.metrics.watchers.dec()
