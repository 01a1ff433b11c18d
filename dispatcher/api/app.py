"""The HTTP API: the app factory, and `serve` for the `dispatcher api` command."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

import structlog
import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from channels.callbacks import WEBHOOK_PREFIX
from config.settings import Settings
from dispatcher.api import (
    accounts,
    admin,
    batch,
    dashboard,
    docs,
    errors,
    events,
    health,
    request_metrics,
    unsubscribe,
    webhooks,
)  # fmt: skip
from dispatcher.api import callbacks as outcome_callbacks
from dispatcher.api.auth import KeyRing
from dispatcher.api.idempotency import IdempotencyMiddleware
from dispatcher.api.limits import BodyGuardMiddleware, HttpLimits
from dispatcher.api.outage import StoreOutageMiddleware
from dispatcher.api.protocol import with_head_timeout
from dispatcher.api.reports import variants as variant_reports
from dispatcher.engine import Engine
from dispatcher.logging import RequestIdMiddleware, configure_logging
from dispatcher.wiring import open_runtime

_SHED = errors.responses(408, 413, 503)  # what any route may answer before it runs (limits.py, outage.py)
log = structlog.get_logger("dispatcher.api")

_DESCRIPTION = """Upsert delinquent accounts, post their events, ask for ad-hoc contacts and read their
timelines. Every route under /v1 except the provider webhooks takes `Authorization: Bearer <API key>`;
every POST takes an `Idempotency-Key`. Errors share one shape:
`{"error": "...", "message": "...", "fields": [{"field": "...", "message": "..."}]}`. See docs/api.md."""


def create_app(
    engine: Engine,
    settings: Settings,
    *,
    extra_routers: Iterable[APIRouter] = (),
    limits: HttpLimits | None = None,
) -> FastAPI:
    """The API over `engine` (its store, strategy and clock), the provider webhooks included; `extra_routers`
    are mounted next to its own routes (the throughput benchmark's no-op). `limits`: body sizes and read
    timeouts."""
    app = FastAPI(
        title="collections contact dispatcher", version="1", description=_DESCRIPTION,
        docs_url=None, redoc_url=None, openapi_url="/openapi.json",  # docs.install serves both pages offline
    )  # fmt: skip
    app.state.engine = engine
    app.state.settings = settings
    app.state.keys = KeyRing(settings.api_keys)
    app.state.limits = limits or HttpLimits()
    app.state.callbacks = webhooks.CallbackRecorder.for_settings(engine, settings)  # replays a spool left behind
    docs.install(app)
    errors.install(app)
    app.add_exception_handler(Exception, _unexpected)
    routers = (accounts.router, admin.router, dashboard.router, batch.router, events.router, health.router,
               unsubscribe.router, variant_reports.router)  # fmt: skip
    for router in routers:
        app.include_router(router, responses=_SHED if router is not health.router else None)
    for router in outcome_callbacks.ROUTERS:
        app.include_router(router, responses=_SHED)
    for router in (*webhooks.ROUTERS, *extra_routers):
        app.include_router(router, responses=_SHED)
    app.add_middleware(
        IdempotencyMiddleware, client=engine.store.redis, keys=app.state.keys,
        ttl=settings.idempotency_ttl_seconds, exempt=(WEBHOOK_PREFIX,),
    )  # fmt: skip
    app.add_middleware(StoreOutageMiddleware)  # the idempotency middleware's own Redis calls included
    # Before idempotency, authentication and any Redis call: an oversized or slow body costs nothing.
    app.add_middleware(BodyGuardMiddleware, limits=app.state.limits)
    app.add_middleware(RequestIdMiddleware)  # added last, so outermost: every line has the request id
    request_metrics.install(app)  # /metrics, and every request counted by route, the refused ones included
    return app


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("http.unexpected_error", path=request.url.path, exc_info=exc)
    return errors.error_response(500, "internal", "unexpected error; it is logged with this request's id")


def serve(settings: Settings) -> None:
    """Run the API with uvicorn on settings.api_host:api_port until interrupted (what `dispatcher api` does)."""
    configure_logging(settings)
    with open_runtime(settings) as runtime:
        app = create_app(runtime.engine, settings)
        log.info("api.starting", host=settings.api_host, port=settings.api_port)
        uvicorn.run(
            app, host=settings.api_host, port=settings.api_port, log_config=None, access_log=False,
            timeout_keep_alive=app.state.limits.keep_alive, http=with_head_timeout(app.state.limits.read_timeout),
        )  # fmt: skip


def bind_loopback() -> socket.socket:
    """A listening-ready socket on a free 127.0.0.1 port, bound now so the port is ours from the start."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class ServerThread:
    """uvicorn serving `app` in a background thread (the demo's API, the tests' server)."""

    def __init__(self, app: Any, sock: socket.socket | None = None, limits: HttpLimits | None = None) -> None:
        self.sock = sock or bind_loopback()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        limits = limits or HttpLimits()
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=2,
            timeout_keep_alive=limits.keep_alive, http=with_head_timeout(limits.read_timeout),
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.005)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(5)
        self.sock.close()
