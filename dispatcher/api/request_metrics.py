"""/metrics on the API, and requests counted by route template and status.

The route is the template FastAPI matched (`/v1/accounts/{account_id}`), never the raw path: one series per
route, not one per account id a caller (or a scanner) sends. Paths that match no route share one label.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from dispatcher.state.metrics import HTTP_DURATION, HTTP_REQUESTS, ClusterCollector

UNMATCHED = "<unmatched>"


class _ProcessMetrics:
    """This process's own metrics (the default registry) inside the app's registry."""

    def collect(self) -> Any:
        return REGISTRY.collect()


class RequestMetricsMiddleware:
    """ASGI middleware: count each HTTP request by method, route template and status, and time it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_seeing_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_seeing_status)
        finally:
            # The router writes the matched route into the scope it was handed, which is this one.
            route = getattr(scope.get("route"), "path", UNMATCHED)
            HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
            HTTP_DURATION.labels(scope["method"], route).observe(time.perf_counter() - started)


def install(app: FastAPI) -> None:
    """Serve /metrics (this process's metrics and the cluster's, read from Redis now) and count requests."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ProcessMetrics())
    registry.register(ClusterCollector(app.state.engine.store))

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestMetricsMiddleware)
