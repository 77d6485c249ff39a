"""The FastAPI application: routers, the error map, metrics and health."""

from __future__ import annotations

from fastapi import FastAPI, Response

import sixpn
from sixpn.control.api import (
    errors,
    routes_feed,
    routes_hosts,
    routes_machines,
    routes_orgs,
    routes_peers,
)
from sixpn.control.api.limits import MAX_BODY_BYTES, BodyLimit
from sixpn.control.api.metrics import Metrics, MetricsMiddleware
from sixpn.control.fanout import Fanout
from sixpn.control.service import Service


def create_app(
    service: Service, *, heartbeat_seconds: float = 10.0, max_body_bytes: int = MAX_BODY_BYTES
) -> FastAPI:
    app = FastAPI(
        title="sixpn control plane",
        version=sixpn.__version__,
        description="Private IPv6 networks (6PN) for every organization on a fleet of hosts.",
    )
    app.state.service = service
    app.state.heartbeat_seconds = heartbeat_seconds
    app.state.fanout = fanout = Fanout(service.ctx.store)  # one store read per change
    app.router.on_shutdown.append(fanout.close)
    metrics = Metrics()
    app.state.metrics = metrics
    errors.install(app)
    for module in (routes_orgs, routes_machines, routes_peers, routes_hosts, routes_feed):
        app.include_router(module.router)

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> dict[str, int | str]:
        return {"status": "ok", "revision": await service.ctx.store.revision()}

    @app.get("/metrics", tags=["meta"], include_in_schema=False)
    async def prometheus() -> Response:
        body, content_type = await metrics.render(service.ctx.store)
        return Response(body, media_type=content_type)

    app.add_middleware(BodyLimit, limit=max_body_bytes)  # inside metrics: a 413 is counted
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
