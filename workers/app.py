"""The Celery app: queues, routes, reliability settings and the beat schedule (docs/operations.md says why).

The app object exists at import so `celery -A workers.app` and the task decorators can see it; it is
configured from settings by `configure()` before a worker or beat starts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

import celery.apps.worker
import click
import redis
import structlog
from celery import Celery, signals
from celery.utils.log import mlevel
from kombu import Queue

from channels import REGISTRY, provider_key, provider_keys
from channels.agencies import agency_providers
from config.errors import exit_on_configuration_error
from config.settings import Settings, SettingsError, load_settings
from dispatcher.logging import configure_logging
from workers.broker import transport_for
from workers.circuit import probe_open_circuits
from workers.metrics_exporter import start_exporter


def queues() -> tuple[str, ...]:
    """The planning queue, then one queue per channel in the registry: a slow provider holds up only its own."""
    return ("plan", *(spec.queue for spec in REGISTRY.values()))


QUEUES = queues()

# task_cls: every task gives its message back on a Redis/broker error and dead-letters arguments that do
# not fit (workers/task_base.py).
app = Celery("dispatcher", include=["workers.tasks"], task_cls="workers.task_base:DispatcherTask")


def broker_url_of(settings: Settings) -> str:
    """DISPATCHER_BROKER_URL, else the state's Redis; never a cluster (kombu cannot use one)."""
    if settings.broker_url:
        return settings.broker_url
    if settings.redis_cluster:
        raise SettingsError(
            "configuration error:\n  DISPATCHER_BROKER_URL: the state is a Redis Cluster, which Celery's broker "
            "cannot be; name a single Redis (redis://...) or a Sentinel set (sentinel://HOST:PORT;...) for the broker"
        )
    return settings.redis_url or ""


def sentinel_options(settings: Settings) -> dict[str, object]:
    """kombu's Sentinel transport options: the master to ask for and the sentinels' own password."""
    if not broker_url_of(settings).startswith("sentinel://"):
        return {}
    options: dict[str, object] = {"master_name": settings.broker_master_name}
    if settings.broker_sentinel_password is not None:
        options["sentinel_kwargs"] = {"password": settings.broker_sentinel_password.get_secret_value()}
    return options


def configure(settings: Settings) -> Celery:
    """Point the app at the shared Redis and set the options every deployment relies on."""
    if not settings.redis_url:
        raise SettingsError(
            "configuration error:\n  DISPATCHER_REDIS_URL: workers and beat need the shared Redis URL; run "
            "`dispatcher redis` (the embedded one) and set the DISPATCHER_REDIS_URL it prints, or start the whole "
            "cluster with `dispatcher up`"
        )
    broker_url = broker_url_of(settings)
    app.conf.update(
        broker_url=broker_url,
        # kombu's Redis transport with the restore-after-connection-loss crash and the poison list item
        # handled (workers/broker.py).
        broker_transport=transport_for(broker_url),
        broker_connection_retry_on_startup=True,
        # A worker outlives any Redis outage: it keeps reconnecting (2 s, 4 s, ... at most 30 s apart) and
        # resumes consuming; it never gives up and exits while its supervisor thinks it is fine.
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        # Messages the worker cannot decode or does not know go to the dead-letter stream.
        worker_consumer="workers.dead_lettering:Consumer",
        # Redis redelivers an unacked message after this; it must exceed the longest task.
        broker_transport_options={
            "visibility_timeout": settings.broker_visibility_timeout,
            **sentinel_options(settings),
        },
        # Ack after the task ran, and give the message back if the worker process dies under it.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_time_limit=settings.task_time_limit,
        task_soft_time_limit=max(1, settings.task_time_limit - 10),
        # Nobody reads send results: the store and the audit trail are the record.
        task_ignore_result=True,
        # Flower sees every task from the start, not only once it has asked the workers to send events.
        worker_send_task_events=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue="plan",
        task_queues=[Queue(name) for name in queues()],
        task_routes={
            "dispatcher.plan": {"queue": "plan"},
            "dispatcher.pump": {"queue": "plan"},
            "dispatcher.housekeeping": {"queue": "plan"},
            "dispatcher.ingest_event": {"queue": "plan"},
            "dispatcher.upsert_account": {"queue": "plan"},
            "dispatcher.callbacks": {"queue": "plan"},
        },
        # The pump runs inside beat (workers/scheduler.py): it sends plan tasks only for due accounts.
        beat_scheduler="workers.scheduler:DispatcherScheduler",
        beat_schedule={
            "housekeeping": {"task": "dispatcher.housekeeping", "schedule": 60.0, "options": {"expires": 50}},
            # A run not started within 5/6 of the interval is dropped: the next one is about to be sent.
            "archive": {
                "task": "dispatcher.archive",
                "schedule": settings.archive_interval_seconds,
                "options": {"expires": settings.archive_interval_seconds * 5 / 6},
            },
        },
        worker_hijack_root_logger=False,
    )
    return app


# Logs and metrics of the worker and beat processes (docs/operations.md, "Metrics and logs").
app.user_options["worker"].add(
    click.Option(["--metrics-port"], type=int, default=None, help="Serve this worker's Prometheus metrics here.")
)


def _own_logging(loglevel: int | str | None) -> None:
    """Celery's loggers go through ours (one JSON object a line with DISPATCHER_LOG_FORMAT=json), at the more
    verbose of --loglevel and DISPATCHER_LOG_LEVEL. A host that already has handlers (a test runner embedding
    a worker) keeps them, as Celery itself would."""
    if not logging.getLogger().handlers:
        settings = load_settings()
        configure_logging(settings, level=min(mlevel(loglevel or logging.WARNING), mlevel(settings.log_level)))
        logging.captureWarnings(True)  # Celery's warnings (its SecurityWarning as root) become lines too


@signals.setup_logging.connect
@exit_on_configuration_error()  # Celery would log the error and start anyway
def _setup_logging(loglevel: int | None = None, **_: Any) -> None:
    _own_logging(loglevel)  # a receiver here means Celery adds no handler of its own


@signals.celeryd_init.connect
@exit_on_configuration_error()
def _worker_starting(instance: Any, options: dict[str, Any], **_: Any) -> None:
    """In the worker's main process, before the pool forks (and before Celery's first warning): our logging,
    no text banner in JSON mode, the metrics exporter."""
    _own_logging(options.get("loglevel"))
    if load_settings().log_format == "json":
        instance.quiet = True  # Celery prints its banner straight to the terminal, past every logger
        celery.apps.worker.safe_say = _say_json  # and its shutdown notices, from its signal handlers
    if options.get("metrics_port") is not None:
        start_exporter(options["metrics_port"])


@signals.worker_ready.connect
def _probe_open_circuits(**_: Any) -> None:
    """Once the worker consumes: a provider circuit opened by a setting the restart may have fixed probes now
    (workers/circuit.py), and the contacts it held go at once if the provider answers."""
    try:
        settings = load_settings()
        agencies = [provider_key(channel, name) for channel, name in agency_providers(settings)]  # `agency.NAME`
        probe_open_circuits(settings, [*provider_keys(), *agencies])  # every provider's circuit
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:  # held wake when opening ends
        structlog.get_logger("workers.app").warning("circuit.probe_at_start_failed", error=str(exc))


def _say_json(msg: str, f: Any = sys.__stderr__) -> None:
    """Celery's notices from signal handlers ("worker: Warm shutdown") as JSON lines: still one raw write, as
    Celery does it, since a signal handler must not wait for the logging locks."""
    when = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    line = {"event": msg, "level": "warning", "logger": "celery.apps.worker", "timestamp": when}
    with contextlib.suppress(OSError, ValueError):
        os.write(f.fileno(), (json.dumps(line) + "\n").encode())


@signals.task_prerun.connect
def _bind_task(task_id: str, task: Any, **_: Any) -> None:
    structlog.contextvars.clear_contextvars()  # a pool thread or process may carry the last task's ids
    structlog.contextvars.bind_contextvars(task_id=task_id, task_name=task.name)


@signals.task_postrun.connect
def _unbind_task(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()
