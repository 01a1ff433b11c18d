"""Structured logs: structlog configured once, a request id bound per HTTP request, personal data masked.

Every line (ours, and the standard library's, uvicorn's included) passes the same processors, the last
of which before rendering is `mask_pii`: phone numbers and email addresses are masked wherever they
appear, and the values of personal fields (dispatcher.core.privacy.personal_data.PERSONAL_FIELDS: name, address, phone,
email, to ...) are masked whatever they hold. JSON lines when `log_format` is json (production), aligned
colours in a terminal otherwise.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import Mapping
from typing import IO, Any

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from config.settings import Settings
from dispatcher.core.privacy.personal_data import PERSONAL_FIELDS, masked

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")
# Celery's per-message INFO lines: "Task ... received" and "... succeeded" for every task, "Sending due task"
# for every beat entry. Our own events say what each task did; at INFO these would be the bulk of the log and
# all of an idle cluster's. Shown again at DEBUG. (Names only: dispatcher does not import Celery.)
PER_MESSAGE_LINES = {"celery.worker.strategy": "", "celery.app.trace": "", "celery.beat": "Scheduler: Sending due"}


def mask_pii(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask personal data in every value of the event dict, nested ones included."""
    return {key: masked(value, key in PERSONAL_FIELDS) for key, value in event_dict.items()}


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,  # tracebacks become text, so the masking sees them too
        mask_pii,
    ]


class _PerMessageFilter(logging.Filter):
    """Drops Celery's per-message INFO lines (PER_MESSAGE_LINES); their warnings and errors pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        prefix = PER_MESSAGE_LINES.get(record.name)
        return prefix is None or record.levelno > logging.INFO or not str(record.msg).startswith(prefix)


def configure_logging(settings: Settings, stream: IO[str] | None = None, level: str | int | None = None) -> None:
    """Route structlog and the standard library (uvicorn and Celery included) through one masked renderer.

    `level` overrides settings.log_level (a worker's --loglevel)."""
    renderer: Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=stream is None and sys.stderr.isatty(),
                                           exception_formatter=structlog.dev.plain_traceback)
    )  # fmt: skip
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_shared_processors(),
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level or settings.log_level)
    if root.getEffectiveLevel() > logging.DEBUG:
        handler.addFilter(_PerMessageFilter())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # RequestIdMiddleware writes the access line
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


class RequestIdMiddleware:
    """ASGI middleware: bind a request id (the caller's X-Request-ID if sane, else a new one) to every log
    line of the request, echo it in the response, and write one access line per request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.log = structlog.get_logger("dispatcher.http")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex
        started, status = time.perf_counter(), 500

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                self.log.info(
                    "http.request", method=scope["method"], path=scope["path"], status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )  # fmt: skip


def _header(scope: Mapping[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None
