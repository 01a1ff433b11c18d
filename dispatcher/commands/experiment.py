"""`dispatcher experiment show|publish` (the active variant set in Redis) and `dispatcher report variants`
(results per variant from the record). Their own module so dispatcher/commands/cli.py only adds them."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from config.settings import load_settings
from dispatcher.core.experiments.arms import VariantSet, differences, dropped_steps
from dispatcher.core.experiments.loading import load_experiment
from dispatcher.core.experiments.results import price_list, variant_report
from dispatcher.state.active_set import ActiveSet
from dispatcher.wiring import open_runtime, variants_from

experiment_app = typer.Typer(
    help="The active set of strategy variants in Redis: what every process must plan with.", no_args_is_help=True
)
report_app = typer.Typer(help="Reports read from the record (PostgreSQL).", no_args_is_help=True)
console = Console(width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, soft_wrap=True)


def _set_table(title: str, published: dict[str, Any]) -> Table:
    table = Table(title=f"{title}: salt {published['salt']!r}, holdout {published['holdout']}")
    for column in ("variant", "weight", "strategy sha256", "steps"):
        table.add_column(column)
    for variant in published["variants"]:
        table.add_row(variant["name"], str(variant["weight"]), variant["strategy_sha256"], str(len(variant["steps"])))
    return table


@experiment_app.command("show")
def show() -> None:
    """This process's variant set (DISPATCHER_EXPERIMENT, or DISPATCHER_STRATEGY_PATH as the champion) and the
    active one in Redis; exit 1 when they differ (a process with these settings would refuse to plan)."""
    settings = load_settings()
    with open_runtime(settings) as runtime:
        active = ActiveSet(runtime.store.redis, runtime.variants)
        current = active.read()
    console.print(_set_table("this process", active.published))
    if current is None:
        console.print("no active set yet: the first process to plan publishes its own")
        return
    console.print(_set_table("active in Redis", current["set"]))
    lines = differences(active.published, current["set"])
    if current["digest"] == active.digest:
        console.print("they agree")
        return
    for line in lines or ["the sets differ"]:
        errors.print(f"  {line}", markup=False, highlight=False)
    raise typer.Exit(1)


@experiment_app.command("publish")
def publish(
    file: Annotated[
        Path | None, typer.Argument(help="The experiment file; default DISPATCHER_EXPERIMENT, else the strategy alone.")
    ] = None,
    drop_steps: Annotated[
        bool, typer.Option("--drop-steps", help="Publish even though a variant's new version lacks steps it had.")
    ] = False,
) -> None:
    """Validate the set and make it the active one. Processes still on the old set stop planning (within a
    second) until they restart with the new files. Refused, the old set staying, when a variant's new version
    lacks steps the active one had (a renamed step's contacts would be made again) unless --drop-steps."""
    settings = load_settings()
    variants: VariantSet = load_experiment(file) if file is not None else variants_from(settings)
    with open_runtime(settings, variants=variants) as runtime:
        active = ActiveSet(runtime.store.redis, variants)
        current = active.read()
        if current is not None and current["digest"] == active.digest:
            console.print("already the active set; nothing changed")
            return
        gone = {} if current is None else dropped_steps(current["set"], active.published)
        for name, steps in gone.items():
            errors.print(f"  variant {name!r}: the new version lacks {', '.join(steps)}", markup=False)
        if gone and not drop_steps:
            errors.print("refused: the active set is unchanged (check renames with `dispatcher strategy check NEW "
                         "--against OLD`; --drop-steps publishes anyway)")  # fmt: skip
            raise typer.Exit(2)
        for line in [] if current is None else differences(active.published, current["set"]):
            console.print(f"  {line}", markup=False, highlight=False)
        active.replace()
    console.print(_set_table("published", active.published))


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "—"
    return f"{value:.1%}" if metric.endswith("_rate") else f"{value:,.2f}"


def variant_tables(report: dict[str, Any]) -> list[Table]:
    horizon = report["horizon"]
    metrics = Table(title=f"results per variant, {horizon['from'] or '—'} to {horizon['to']}")
    metrics.add_column("metric")
    for variant in report["variants"]:
        metrics.add_column(f"{variant['name']} ({variant['accounts']})")
    names = list(report["variants"][0]["metrics"]) if report["variants"] else []
    for metric in names:
        cells = []
        for variant in report["variants"]:
            one = variant["metrics"][metric]
            low, high = _fmt(one["low"], metric), _fmt(one["high"], metric)
            cells.append(f"{_fmt(one['value'], metric)} [{low}, {high}]")
        metrics.add_row(metric, *cells)
    compared = Table(title=f"against the champion ({report['champion']})")
    for column in ("variant", "metric", "difference [interval]", "needed per arm", "smallest arm", "verdict"):
        compared.add_column(column)
    for row in report["differences"]:
        low, high = _fmt(row["low"], row["metric"]), _fmt(row["high"], row["metric"])
        span = f"{_fmt(row['value'], row['metric'])} [{low}, {high}]"
        needed = "—" if row["needed_per_arm"] is None else f"{row['needed_per_arm']:,.0f}"
        compared.add_row(row["variant"], row["metric"], span, needed, str(row["smallest_arm"]), row["verdict"])
    return [metrics, compared]


@report_app.command("variants")
def report_variants(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    until: Annotated[
        datetime | None, typer.Option(help="The horizon: read what happened up to then (ISO 8601); default now.")
    ] = None,
) -> None:
    """Results per variant from the record: resolution, cure and roll rates, amounts recovered, days to
    resolution, contacts and cost per resolution and per unit collected, promises kept, opt-outs, disputes;
    each with its interval, and each variant against the champion with the sample it needs and a verdict."""
    from dispatcher.record.db import open_record
    from dispatcher.record.pg_server import record_for_command
    from dispatcher.record.results import archived_facts

    settings = load_settings()
    variants = variants_from(settings)
    try:
        horizon = (until or datetime.now(UTC)).astimezone(UTC)  # without an offset: this machine's local time
    except OverflowError:
        errors.print(f"--until: {until} lies outside the times a UTC clock can show")
        raise typer.Exit(2) from None
    champion, order = variants.champion.name, [arm.name for arm in variants.arms]
    costs = price_list(variants.champion.strategy)
    with record_for_command(settings.database_url, settings.state_dir) as url:
        if url is None:  # as the API answers: nothing was ever archived, so no arm has an account yet
            errors.print("no record (PostgreSQL) in this deployment yet: nothing archived to report on")
            report = variant_report([], champion, order, costs, horizon)
        else:
            with open_record(url, max_size=1) as pool:
                report = variant_report(archived_facts(pool, horizon), champion, order, costs, horizon)
    if as_json:
        console.print_json(json.dumps(report))
        return
    for table in variant_tables(report):
        console.print(table)
