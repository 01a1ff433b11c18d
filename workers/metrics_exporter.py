"""The worker side of the metrics: what the send path observes, and the exporter a worker serves them from.

Scraping a prefork worker: its tasks run in child processes, each with its own memory, and a child may be
replaced at any time. We use prometheus_client's multiprocess mode: with `--metrics-port`, the worker's main
process, before it forks, points prometheus_client at a directory (PROMETHEUS_MULTIPROC_DIR if set, else a
fresh temporary one), where every process keeps its values in memory-mapped files, and serves them summed
across processes on that port. A replaced child's counts stay in its files, so counters never step back. One
port per worker whatever its concurrency, the same for threads and prefork (docs/operations.md says why not
a port per child). Without `--metrics-port` nothing changes: values stay in process memory, nobody reads them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog
from prometheus_client import CollectorRegistry, multiprocess, start_http_server, values

from channels.base import ContactDeferred, PermanentDeliveryError, RateLimited, TransientDeliveryError
from dispatcher.state.metrics import ALL, PROVIDER_ERRORS, PROVIDER_LATENCY, RATE_LIMIT_WAIT_SECONDS, RATE_LIMIT_WAITS

log = structlog.get_logger("workers.metrics")
T = TypeVar("T")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable


def timed_send(channel: str, provider: str, send: Callable[[Any], T], message: Any) -> T:
    """One provider request, timed whatever its end (by channel and provider), and its error counted by kind."""
    started = time.perf_counter()
    try:
        receipt = send(message)
    except RateLimited:
        raise  # our own limiter said not yet (at the adapter's last step): no request left, nothing to time
    except TransientDeliveryError as exc:
        PROVIDER_ERRORS.labels(channel, provider, "ambiguous" if exc.ambiguous else "transient").inc()
        PROVIDER_LATENCY.labels(channel, provider).observe(time.perf_counter() - started)
        raise
    except ContactDeferred:  # the provider refused this recipient for now: answered, not failing
        PROVIDER_ERRORS.labels(channel, provider, "deferred").inc()
        PROVIDER_LATENCY.labels(channel, provider).observe(time.perf_counter() - started)
        raise
    except PermanentDeliveryError:
        PROVIDER_ERRORS.labels(channel, provider, "permanent").inc()
        PROVIDER_LATENCY.labels(channel, provider).observe(time.perf_counter() - started)
        raise
    PROVIDER_LATENCY.labels(channel, provider).observe(time.perf_counter() - started)
    return receipt


def waited(channel: str, provider: str, wait: float) -> None:
    """The rate limit of a channel's provider asked a send to wait `wait` seconds."""
    RATE_LIMIT_WAITS.labels(channel, provider).inc()
    RATE_LIMIT_WAIT_SECONDS.labels(channel, provider).inc(wait)


@dataclass
class Exporter:
    port: int
    directory: Path
    server: Any


def start_exporter(port: int, host: str = "0.0.0.0", directory: Path | None = None) -> Exporter:
    """Switch this process (and the children it forks later) to multiprocess mode and serve the sum of every
    process's values on `port`. Call it in the worker's main process before the pool starts."""
    if any(sample for metric in ALL for family in metric.collect() for sample in family.samples):
        # A value created before the switch lives in this process's memory and would never be exported.
        raise RuntimeError("metrics were observed before the exporter started; start it before any task runs")
    given = os.environ.get(MULTIPROC_ENV)
    if directory is None and given:
        directory = Path(given)
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="dispatcher-metrics-"))
        _remove_at_exit(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()  # a previous run's files would be summed in (prometheus_client requires a clean directory)
    os.environ[MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.get_value_class()  # read at each labelled value's creation, in every process
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    server, _ = start_http_server(port, addr=host, registry=registry)
    log.info("metrics.serving", port=server.server_port, directory=str(directory))
    return Exporter(server.server_port, directory, server)


def _remove_at_exit(directory: Path) -> None:
    owner = os.getpid()  # forked children inherit the hook; only the process that made the directory removes it

    def remove() -> None:
        if os.getpid() == owner:
            shutil.rmtree(directory, ignore_errors=True)

    atexit.register(remove)
