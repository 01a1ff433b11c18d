"""`celery -A benchmarks._noop_app worker ...`: the dispatcher's own Celery app, configured from the same
DISPATCHER_* settings as `dispatcher worker`, with the baseline no-op task registered on it."""

from __future__ import annotations

from benchmarks import _noop_tasks  # noqa: F401  (registers bench.noop)
from config.settings import load_settings
from workers.app import app, configure

configure(load_settings())

__all__ = ["app"]
