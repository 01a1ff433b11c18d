"""The library's commands of `dispatcher`: import, account, simulate, api, api-key, dead-letters, config.
Commands are thin: parse, call the library, render.

They need neither Celery nor the channels; the full command, with the cluster's commands beside these,
is workers/cli.py (the console script), which includes this app.
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
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from typer.core import TyperGroup

from config.errors import exit_on_configuration_error
from config.settings import Settings, load_settings
from dispatcher.commands import compare as comparing
from dispatcher.commands import reports
from dispatcher.commands.agencies import report_agencies
from dispatcher.commands.callbacks import app as callbacks_app
from dispatcher.commands.config import app as config_app
from dispatcher.commands.dead_letters import app as dead_letters_app
from dispatcher.commands.experiment import experiment_app, report_app
from dispatcher.core.clock import ManualClock
from dispatcher.core.models import Account
from dispatcher.core.planner import offers_now
from dispatcher.core.timeline import account_json
from dispatcher.debtor_model import DEFAULT_DEBTORS, DebtorParameters, load_debtor_parameters
from dispatcher.importer import import_accounts
from dispatcher.simulate import OutcomeModel, Simulation, load_model
from dispatcher.synthetic import synthetic_accounts
from dispatcher.wiring import open_runtime

HELP = "Plan, send and re-plan collection contacts under the contact rules of debt collection."


class CommandGroup(TyperGroup):
    """Every command: a bad setting or strategy file ends it with the message and exit status 1."""

    def invoke(self, ctx: Any) -> Any:  # typer's own copy of click.Context
        with exit_on_configuration_error():
            return super().invoke(ctx)


# No callback: the full command (workers/cli.py) includes this app's commands as its own, which typer allows
# only without one; it uses the same CommandGroup, so a configuration error ends any command the same way.
app = typer.Typer(cls=CommandGroup, help=HELP, no_args_is_help=True, add_completion=False)
account_app = typer.Typer(help="Look at one account.", no_args_is_help=True)
app.add_typer(account_app, name="account")
app.add_typer(dead_letters_app, name="dead-letters")
app.add_typer(callbacks_app, name="callbacks")
app.add_typer(config_app, name="config")
app.add_typer(experiment_app, name="experiment")
app.add_typer(report_app, name="report")
report_app.command("agencies")(report_agencies)
console = Console(width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, soft_wrap=True)  # error lines stay whole, for people and for grep


def _settings() -> Settings:
    return load_settings()


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
    from dispatcher.record.db import open_record
    from dispatcher.record.pg_server import record_for_command
    from dispatcher.record.readers import RecordReader, read_account

    settings = _settings()
    # The archived part, where there is one; an embedded record nobody runs is started for this command.
    with open_runtime(settings) as runtime, record_for_command(settings.database_url, settings.state_dir) as url:
        reader = None if url is None else RecordReader(open_record(url, max_size=1))
        found = read_account(runtime.store, reader, account_id)
        if found is None:
            errors.print(f"[red]no account {account_id!r}[/]; import or upsert it first")
            raise typer.Exit(1)
    view = (found.record, found.history, found.claims, found.next_wakeup)
    if as_json:
        offers = offers_now(found.record, runtime.strategy, runtime.engine.clock.now()) if not found.archived else {}
        doc = {**account_json(*view, offers), "archived": found.archived}
        console.print_json(json.dumps(doc, default=str))
        return
    for renderable in reports.account_tables(*view):
        console.print(renderable)


@app.command()
def simulate(
    accounts: Annotated[int, typer.Option(min=1, help="Synthetic accounts to generate.")] = 1000,
    days: Annotated[int, typer.Option(min=1, max=730, help="Simulated days.")] = 120,
    seed: Annotated[int, typer.Option(help="Seed for accounts and outcomes; same seed, same run.")] = 1,
    csv: Annotated[Path | None, typer.Option(help="Accounts from a CSV/NDJSON file instead.")] = None,
    model: Annotated[Path | None, typer.Option(help="YAML overriding the providers' outcome rates.")] = None,
    debtors: Annotated[
        Path, typer.Option(help="How the debtors behave (docs/strategy.md#the-debtor-model).")
    ] = DEFAULT_DEBTORS,
    start: Annotated[str, typer.Option(help="Simulated start, ISO 8601 UTC.")] = "2026-03-02T00:00:00+00:00",
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Write every account's timeline here; with --compare, the comparison."),
    ] = None,
    compare: Annotated[
        tuple[Path, Path] | None,
        typer.Option(
            "--compare",
            metavar="A.yaml B.yaml",
            help="Run two strategies on one portfolio with common random numbers and compare them.",
        ),
    ] = None,
) -> None:
    """Run the real planner and store over an accelerated clock and report funnel, channels and compliance.

    It always runs on a fresh embedded Redis under the state directory, never on a configured one. With
    --compare A.yaml B.yaml, each strategy runs on one of its own over the same accounts and draws, and the
    table shows each metric under both with its interval, B − A and its verdict (docs/strategy.md).
    """
    settings = _settings()
    debtor_parameters = load_debtor_parameters(debtors)  # a bad file stops here, naming each field
    contenders = None
    if compare is not None:
        contenders, problems = comparing.load_contenders(compare)
        for problem in problems:
            errors.print(problem, markup=False, highlight=False)
        if problems:
            raise typer.Exit(2)
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
    if contenders is not None:
        _compare(sim_settings, contenders, population, days, seed, clock.now(), load_model(model), debtor_parameters,
                 json_out)  # fmt: skip
        return
    with open_runtime(sim_settings, clock=clock, history_cache=len(population) + 1) as runtime, _progress() as progress:
        task = progress.add_task(f"simulating {len(population)} accounts over {days} days", total=1000)
        routes, weights = sim_settings.routes, sim_settings.provider_weights  # providers drawn by route
        simulation = Simulation(
            runtime.engine, clock, load_model(model), seed, routes, weights, debtors=debtor_parameters
        )
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


def _compare(
    settings: Settings, contenders: list[comparing.Contender], population: list[Account], days: int, seed: int,
    start: datetime, model: OutcomeModel, debtors: DebtorParameters, json_out: Path | None,
) -> None:  # fmt: skip
    facts = []
    with _progress() as progress:
        for side, contender in zip("AB", contenders, strict=True):
            what = f"{side}: {contender.path} on {len(population)} accounts over {days} days"
            task = progress.add_task(what, total=1000)
            tick = _ticker(progress, task)
            facts.append(comparing.run_one(settings, contender, population, days, seed, start, model, debtors, tick))
            progress.update(task, completed=1000)
    doc = comparing.comparison(contenders, facts, comparing.horizon_of(start, days), seed)
    for renderable in comparing.comparison_tables(doc):
        console.print(renderable)
    if json_out is not None:
        comparing.write_json(doc, json_out)
        console.print(f"comparison written to {json_out}")


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


@app.command("migrate-keys")
def migrate_keys(
    shards: Annotated[
        int,
        typer.Option(
            "--shards",
            help="The new DISPATCHER_SCHEDULE_SHARDS: a multiple of the current one, e.g. 256 for a cluster (1-1024).",
            min=1,
            max=1024,
        ),
    ],
) -> None:
    """Move the state from the per-account key layout to the shard layout (every process stopped first), on the
    single Redis that holds it; then set DISPATCHER_REDIS_KEY_LAYOUT=shard and DISPATCHER_SCHEDULE_SHARDS, or
    import the keys into a cluster (docs/operations.md). Run again after a crash, it finishes the job."""
    import redis

    from dispatcher.state.redis_server import redis_url
    from dispatcher.state.topology.key_migration import MigrationRefused, migrate_to_shard_layout

    settings = _settings()
    if settings.redis_cluster or settings.redis_key_layout == "shard":
        errors.print("[red]DISPATCHER_REDIS_KEY_LAYOUT[/]: already the shard layout; migrate the single Redis first")
        raise typer.Exit(2)
    with redis_url(settings.redis_url, settings.state_dir) as url:
        client = redis.Redis.from_url(url, decode_responses=True)
        try:
            done = migrate_to_shard_layout(client, settings.schedule_shards, shards)
        except MigrationRefused as exc:
            errors.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from None
    console.print(f"moved {done.accounts} accounts and {done.members} index entries to {shards} shards")
    console.print(f"now run every process with DISPATCHER_REDIS_KEY_LAYOUT=shard DISPATCHER_SCHEDULE_SHARDS={shards}")


def _ticker(progress: Progress, task: TaskID) -> Callable[[float], None]:
    return lambda done: progress.update(task, completed=int(done * 1000))


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
        console=errors, transient=False,
    )  # fmt: skip
