"""`dispatcher report agencies [--json]`: liquidation per agency and placement month, read from the record
(dispatcher/record/liquidation.py); registered on the `report` group by commands/cli.py."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from config.settings import load_settings

console = Console(width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, soft_wrap=True)


def liquidation_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"liquidation per agency and placement month, to {report['horizon']}")
    for column in ("agency", "month", "currency", "cases", "placed balance", "recovered", "liquidation"):
        table.add_column(column, justify="left" if column in ("agency", "month", "currency") else "right")
    for row in report["placements"]:
        rate = row["liquidation_rate"]
        unknown = row["cases_without_balance"]
        cases = f"{row['cases']}" + (f" ({unknown} without balance)" if unknown else "")
        table.add_row(row["agency"], row["month"], row["currency"], cases, row["placed_balance"], row["recovered"],
                      "—" if rate is None else f"{rate:.1%}")  # fmt: skip
    return table


def report_agencies(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    until: Annotated[
        datetime | None, typer.Option(help="The horizon: read what happened up to then (ISO 8601); default now.")
    ] = None,
) -> None:
    """Liquidation per agency and placement month from the record: each account's first hand-off places it with
    the agency its attempt names; the payments recorded after it are that agency's recoveries."""
    from dispatcher.record.db import open_record
    from dispatcher.record.liquidation import liquidation, read_liquidation
    from dispatcher.record.pg_server import record_for_command

    settings = load_settings()
    try:
        horizon = (until or datetime.now(UTC)).astimezone(UTC)  # without an offset: this machine's local time
    except OverflowError:
        errors.print(f"--until: {until} lies outside the times a UTC clock can show")
        raise typer.Exit(2) from None
    with record_for_command(settings.database_url, settings.state_dir) as url:
        if url is None:
            errors.print("no record (PostgreSQL) in this deployment yet: nothing archived to report on")
            report = liquidation([], horizon)
        else:
            with open_record(url, max_size=1) as pool:
                report = read_liquidation(pool, horizon)
    if as_json:
        console.print_json(json.dumps(report))
        return
    console.print(liquidation_table(report))
