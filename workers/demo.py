"""`dispatcher demo`: the whole deployment on one machine, on an accelerated clock.

It starts the embedded Redis, the provider sandboxes, the API (provider webhooks come back through it),
real Celery worker processes and the pump; loads synthetic accounts; shows a live table while about
120 simulated days pass in about two minutes; and ends by saying where everything landed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from channels.aliyun_sms import CHINA_FIRST_ROUTES
from channels.sandbox import Sandboxes, start_sandboxes
from config.settings import Settings
from dispatcher.api import create_app
from dispatcher.api.app import ServerThread, bind_loopback
from dispatcher.core.clock import AcceleratedClock
from dispatcher.core.timeline import attempt_provider
from dispatcher.logging import configure_logging
from dispatcher.state.redis_server import EmbeddedRedis
from dispatcher.state.store import Store
from dispatcher.synthetic import synthetic_accounts
from workers.app import QUEUES, configure
from workers.process_runtime import WorkerRuntime, build_runtime
from workers.queueing import dispatch

DEMO_START = datetime(2026, 3, 2, tzinfo=UTC)
PUMP_EVERY = 0.05  # real seconds; an accelerated hour is 0.04 s, so windows are never stepped over


@dataclass(frozen=True)
class DemoPlan:
    accounts: int = 200
    days: int = 120
    seconds: float = 120.0
    workers: int = 2


def run_demo(settings: Settings, plan: DemoPlan, console: Console) -> Path:
    """Run the demo to the end and return the directory holding everything it produced."""
    root = (settings.state_dir / "demo").resolve()
    _fresh(root)
    factor = plan.days * 86400 / plan.seconds
    api_socket = bind_loopback()  # the webhooks' address must be known before the sandboxes start
    public_url = f"http://127.0.0.1:{api_socket.getsockname()[1]}"
    settings = settings.model_copy(update={"public_base_url": public_url})
    with EmbeddedRedis(root / "redis") as redis_server, _sandboxes(root, settings, factor) as sandboxes:
        origin = time.time()
        clock = AcceleratedClock(DEMO_START, factor, origin)
        env = _worker_env(settings, redis_server.url, sandboxes, factor, origin)
        demo_settings = settings.model_copy(update=_settings_update(redis_server.url, sandboxes, factor, origin))
        configure(demo_settings)
        runtime = build_runtime(demo_settings, dispatch, clock=clock)
        api = create_app(runtime.engine, demo_settings)
        with (root / "api.log").open("w", encoding="utf-8") as api_log, ServerThread(api, api_socket):
            configure_logging(demo_settings, stream=api_log)  # the live table owns the terminal
            with _workers(env, plan.workers, root):
                runtime.engine.upsert_many(synthetic_accounts(plan.accounts, 7, DEMO_START.date()))
                _pump_until(runtime, clock, plan, console)
        _export_audit(runtime.engine.store, root / "audit.ndjson")
    return root


def _pump_until(runtime: WorkerRuntime, clock: AcceleratedClock, plan: DemoPlan, console: Console) -> None:
    ends = DEMO_START.timestamp() + plan.days * 86400
    with Live(console=console, refresh_per_second=2) as live:
        last_draw = 0.0
        while clock.now().timestamp() < ends:
            dispatch(runtime.engine.pump(runtime.settings.pump_batch, runtime.settings.lease_seconds), 50)
            if time.monotonic() - last_draw > 1.0:
                live.update(_live_table(runtime, clock, plan))
                last_draw = time.monotonic()
            time.sleep(PUMP_EVERY)
        time.sleep(2.0)  # let the last sends and callbacks land
        live.update(_live_table(runtime, clock, plan))


def _live_table(runtime: WorkerRuntime, clock: AcceleratedClock, plan: DemoPlan) -> Table:
    store = runtime.engine.store
    ids = [f"ACC{i:07d}" for i in range(plan.accounts)]
    stages: Counter[str] = Counter()
    contacts: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for loaded in store.load_many(ids):
        record = loaded.record
        if record is None:
            continue
        status = record.state.status
        stages[status if status != "active" else (record.stage or "not yet due")] += 1
        for entry in loaded.history:
            if entry.kind == "attempt" and entry.channel:  # by provider too: Aliyun and Twilio both send sms
                contacts[f"{entry.channel.value} ({attempt_provider(entry)})"] += 1
            elif entry.kind == "outcome" and entry.outcome:
                outcomes[entry.outcome.value] += 1
    day = min(plan.days, (clock.now() - DEMO_START).days)
    table = Table(title=f"day {day} of {plan.days} — {plan.accounts} accounts")
    table.add_column("stage / status")
    table.add_column("accounts", justify="right")
    table.add_column("channel")
    table.add_column("contacts", justify="right")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    rows = max(len(stages), len(contacts), len(outcomes))
    stage_rows, contact_rows, outcome_rows = (list(c.most_common()) for c in (stages, contacts, outcomes))
    for index in range(rows):
        cells: list[str] = []
        for source in (stage_rows, contact_rows, outcome_rows):
            cells += [source[index][0], str(source[index][1])] if index < len(source) else ["", ""]
        table.add_row(*cells)
    return table


@contextlib.contextmanager
def _sandboxes(root: Path, settings: Settings, factor: float) -> Iterator[Sandboxes]:
    # The clock factor compresses the providers' own waits (Aliyun pushes a report again after 1, 5, 10 minutes).
    running = start_sandboxes(root / "sandboxes", callback_base_url=settings.public_base_url, clock_factor=factor)
    try:
        yield running
    finally:
        running.stop()


def _settings_update(redis_url: str, sandboxes: Sandboxes, factor: float, origin: float) -> dict[str, object]:
    return {
        "redis_url": redis_url,
        "clock_start": DEMO_START,
        "clock_factor": factor,
        "clock_origin": origin,
        "rate_limits": {"sms": 200.0, "voice": 100.0, "email": 200.0, "letter": 50.0, "agency": 20.0},
        "routes": CHINA_FIRST_ROUTES,  # Chinese mobiles through the Aliyun sandbox first (the routing layer reads it)
        **sandboxes.settings_overrides(),
    }


def _worker_env(
    settings: Settings, redis_url: str, sandboxes: Sandboxes, factor: float, origin: float
) -> dict[str, str]:
    env = dict(os.environ, DISPATCHER_PUBLIC_BASE_URL=settings.public_base_url)
    for field, value in _settings_update(redis_url, sandboxes, factor, origin).items():
        text = (
            value.isoformat()
            if isinstance(value, datetime)
            else json.dumps(value)
            if isinstance(value, dict)
            else str(value)
        )
        env[f"DISPATCHER_{field.upper()}"] = text
    return env


@contextlib.contextmanager
def _workers(env: dict[str, str], count: int, root: Path) -> Iterator[None]:
    queues = ",".join(QUEUES)  # every channel's queue from the registry, and the planning queue
    processes = []
    for index in range(count):
        log = (root / f"worker-{index}.log").open("w")
        command = [sys.executable, "-m", "workers.cli", "worker", "--queues", queues, "--concurrency", "8",
                   "--pool", "threads", "--name", f"demo{index}@%h"]  # fmt: skip
        processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def _export_audit(store: Store, path: Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        for entry in store.audit():
            out.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")


def _fresh(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)


def where_to_look(root: Path) -> list[str]:
    sandboxes = root / "sandboxes"
    return [
        f"emails (.eml):            {sandboxes / 'smtp' / 'mail'}",
        f"letter PDFs:              {sandboxes / 'print_vendor'}",
        f"SMS and call log (NDJSON): {sandboxes / 'twilio' / 'twilio.ndjson'}",
        f"agency case files:        {sandboxes / 'agency' / 'cases'}",
        f"WeChat log (NDJSON):      {sandboxes / 'wechat' / 'wechat.ndjson'}",
        f"Aliyun SMS log (NDJSON):  {sandboxes / 'aliyun' / 'aliyun.ndjson'}",
        f"audit trail (NDJSON):     {root / 'audit.ndjson'}",
        f"worker and API logs:      {root}/worker-*.log, {root / 'api.log'}",
    ]
