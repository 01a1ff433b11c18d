"""`dispatcher demo`: the whole deployment on one machine, on an accelerated clock.

It starts the embedded Redis, the provider sandboxes, the API (provider webhooks come back through it),
real Celery worker processes and the pump; loads synthetic accounts (half at the start, the rest as they
fall overdue); lets their debtors act through the API and the sandboxes (workers/demo_debtors.py); shows a
live table, each account once by status, while about 120 simulated days pass in about two minutes; and ends
with the accounts by status, what was collected, and where everything landed.
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from channels.aliyun_sms import CHINA_FIRST_ROUTES
from channels.sandbox import Sandboxes, start_sandboxes
from config.settings import Settings
from dispatcher.api import create_app
from dispatcher.api.app import ServerThread, bind_loopback
from dispatcher.api.auth import new_api_key
from dispatcher.core.clock import AcceleratedClock
from dispatcher.core.models import Account
from dispatcher.core.timeline import attempt_provider
from dispatcher.debtor_model import DEFAULT_DEBTORS, DebtorModel, load_debtor_parameters
from dispatcher.logging import configure_logging
from dispatcher.state.redis_server import EmbeddedRedis
from dispatcher.state.store import Loaded, Store
from dispatcher.synthetic import synthetic_accounts
from workers.app import QUEUES, configure
from workers.demo_debtors import DemoDebtors, account_status, summary
from workers.process_runtime import WorkerRuntime, build_runtime
from workers.queueing import dispatch

DEMO_START = datetime(2026, 3, 2, tzinfo=UTC)
PUMP_EVERY = 0.05  # real seconds; an accelerated hour is 0.04 s, so windows are never stepped over
DEBTORS_EVERY = 0.2  # real seconds between the debtors' looks at what reached them (a few simulated hours)


@dataclass(frozen=True)
class DemoPlan:
    accounts: int = 200
    days: int = 120
    seconds: float = 120.0
    workers: int = 2
    debtors: Path = DEFAULT_DEBTORS
    seed: int = 7


@dataclass(frozen=True)
class DemoResult:
    root: Path  # everything the demo produced
    summary: dict[str, Any]  # workers.demo_debtors.summary: accounts by status, collected, contacts
    debtors: Counter[str]  # what the debtors did, by kind and how it was answered


def run_demo(settings: Settings, plan: DemoPlan, console: Console) -> DemoResult:
    """Run the demo to the end: where everything landed, and how the accounts ended."""
    parameters = load_debtor_parameters(plan.debtors)  # a bad file stops the demo before anything starts
    root = (settings.state_dir / "demo").resolve()
    _fresh(root)
    factor = plan.days * 86400 / plan.seconds
    api_socket = bind_loopback()  # the webhooks' address must be known before the sandboxes start
    public_url = f"http://127.0.0.1:{api_socket.getsockname()[1]}"
    settings = settings.model_copy(update={"public_base_url": public_url})
    # The bank's key: the debtors' payments, promises, plans and disputes come in through the API with it.
    api_key, entry = new_api_key(["events:write", "accounts:write"])
    keys = ",".join(part for part in (settings.api_keys, entry) if part)
    with EmbeddedRedis(root / "redis") as redis_server, _sandboxes(root, settings, factor) as sandboxes:
        origin = time.time()
        clock = AcceleratedClock(DEMO_START, factor, origin)
        env = _worker_env(settings, redis_server.url, sandboxes, factor, origin)
        update = _settings_update(redis_server.url, sandboxes, factor, origin)
        demo_settings = settings.model_copy(update={**update, "api_keys": keys})
        configure(demo_settings)
        runtime = build_runtime(demo_settings, dispatch, clock=clock)
        api = create_app(runtime.engine, demo_settings)
        book = _staggered(synthetic_accounts(plan.accounts, plan.seed, DEMO_START.date()), plan.days)
        debtors = DemoDebtors(DebtorModel(parameters, plan.seed), [account for _, account in book], clock,
                              public_url, api_key, sandboxes.twilio.url)  # fmt: skip
        sandboxes.twilio.state.callee = debtors.call  # the people behind the numbers pick up, or not
        with (root / "api.log").open("w", encoding="utf-8") as api_log, ServerThread(api, api_socket):
            configure_logging(demo_settings, stream=api_log)  # the live table owns the terminal
            with _workers(env, plan.workers, root):
                _pump_until(runtime, clock, plan, console, debtors, book)
            debtors.close()
        result = DemoResult(root, summary(_load_all(runtime, plan)), debtors.done)
        _export_audit(runtime.engine.store, root / "audit.ndjson")
    return result


def _load_all(runtime: WorkerRuntime, plan: DemoPlan) -> list[Loaded]:
    return runtime.engine.store.load_many([f"ACC{i:07d}" for i in range(plan.accounts)])


def _staggered(accounts: list[Account], days: int) -> list[tuple[datetime, Account]]:
    """(when the bank sends it, the account): half the book is overdue at the start; the rest falls overdue over
    the run (the last a tenth of it before the end), one to 30 days past due when it arrives (its due date
    moved by its arrival day), as a real book keeps coming in: at the end some accounts are still worked."""
    half = len(accounts) // 2
    spread = days * 0.9 / max(len(accounts) - half, 1)
    arrivals = [(DEMO_START, account) for account in accounts[:half]]
    for index, account in enumerate(accounts[half:], start=1):
        shift = timedelta(days=int(index * spread))
        arrivals.append((DEMO_START + shift, account.model_copy(update={"due_date": account.due_date + shift})))
    return arrivals


def _pump_until(
    runtime: WorkerRuntime, clock: AcceleratedClock, plan: DemoPlan, console: Console, debtors: DemoDebtors,
    book: list[tuple[datetime, Account]],
) -> None:  # fmt: skip
    ends = DEMO_START.timestamp() + plan.days * 86400
    waiting = sorted(book, key=lambda arrival: arrival[0], reverse=True)
    with Live(console=console, refresh_per_second=2) as live:
        last_draw = last_read = 0.0
        while clock.now().timestamp() < ends:
            arrived: list[Account] = []
            while waiting and waiting[-1][0] <= clock.now():
                arrived.append(waiting.pop()[1])
            if arrived:
                runtime.engine.upsert_many(arrived)
            dispatch(runtime.engine.pump(runtime.settings.pump_batch, runtime.settings.lease_seconds), 50)
            if time.monotonic() - last_read > DEBTORS_EVERY:
                loaded = _load_all(runtime, plan)
                debtors.step(loaded)
                last_read = time.monotonic()
                if last_read - last_draw > 1.0:
                    live.update(_live_table(loaded, clock, plan))
                    last_draw = last_read
            time.sleep(PUMP_EVERY)
        time.sleep(2.0)  # let the last sends and callbacks land
        live.update(_live_table(_load_all(runtime, plan), clock, plan))


def _live_table(loaded_accounts: Sequence[Loaded], clock: AcceleratedClock, plan: DemoPlan) -> Table:
    stages: Counter[str] = Counter()  # each account once: its status, and an active one's stage
    contacts: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for loaded in loaded_accounts:
        record = loaded.record
        if record is None:
            continue
        status = account_status(record.state)
        stages[status if status != "active" else f"active: {record.stage or 'not yet due'}"] += 1
        for entry in loaded.history:
            if entry.kind == "attempt" and entry.channel:  # by provider too: Aliyun and Twilio both send sms
                contacts[f"{entry.channel.value} ({attempt_provider(entry)})"] += 1
            elif entry.kind == "outcome" and entry.outcome:
                outcomes[entry.outcome.value] += 1
    day = min(plan.days, (clock.now() - DEMO_START).days)
    table = Table(title=f"day {day} of {plan.days} — {sum(stages.values())} of {plan.accounts} accounts overdue so far")
    table.add_column("status / stage")
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
