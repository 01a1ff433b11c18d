"""Account imports from CSV or NDJSON: every good row lands, every bad row is reported with its line.

CSV columns are the Account fields; `extra_timezones` and `consent` take `;`-separated lists and the
postal address takes `address_line1`, `address_line2`, `address_city`, `address_region`,
`address_postal_code`, `address_country`. Importing the same file twice changes nothing.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dispatcher.core.models import Account
from dispatcher.engine import Engine

# Accounts per upsert_many: one read and one write round trip each; fresh accounts of one shape are
# planned once per batch: larger batches plan less. The plan benchmark uses the same value.
BATCH = 1000
_ADDRESS_PREFIX = "address_"
_LIST_COLUMNS = ("extra_timezones", "consent")


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return self.created + self.updated + self.unchanged


def rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, row) pairs; a row that cannot even be parsed comes back as its error text."""
    if path.suffix.lower() in (".ndjson", ".jsonl", ".json"):
        yield from _ndjson_rows(path)
    else:
        yield from _csv_rows(path)


def _ndjson_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, f"not valid JSON: {exc.msg} at column {exc.colno}"
                continue
            yield number, value if isinstance(value, dict) else "expected a JSON object"


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            yield reader.line_num, _from_csv(row)


def _from_csv(row: dict[str, str | None]) -> dict[str, Any]:
    account: dict[str, Any] = {}
    address: dict[str, str] = {}
    for column, raw in row.items():
        if column is None or raw is None or raw.strip() == "":
            continue
        value = raw.strip()
        if column.startswith(_ADDRESS_PREFIX):
            address[column.removeprefix(_ADDRESS_PREFIX)] = value
        elif column in _LIST_COLUMNS:
            account[column] = [item.strip() for item in value.split(";") if item.strip()]
        else:
            account[column] = value
    if address:
        account["address"] = address
    return account


def describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "row"
        parts.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def import_accounts(engine: Engine, path: Path, progress: Any = None) -> ImportReport:
    """Validate each row, upsert the good ones in batches; `progress(n)` is told of every row read."""
    report = ImportReport()
    batch: list[Account] = []
    for number, row in rows(path):
        if progress is not None:
            progress(1)
        if isinstance(row, str):
            report.errors.append((number, row))
            continue
        try:
            batch.append(Account.model_validate(row))
        except ValidationError as exc:
            report.errors.append((number, describe(exc)))
            continue
        if len(batch) >= BATCH:
            _flush(engine, batch, report)
    _flush(engine, batch, report)
    return report


def _flush(engine: Engine, batch: list[Account], report: ImportReport) -> None:
    for result in engine.upsert_many(batch):
        if result.status == "unchanged":
            report.unchanged += 1
        elif result.created:
            report.created += 1
        else:
            report.updated += 1
    batch.clear()


def load_accounts(path: Path) -> tuple[list[Account], list[tuple[int, str]]]:
    """Every valid account in the file, and (line, reason) for the rest; nothing is written."""
    accounts: list[Account] = []
    bad: list[tuple[int, str]] = []
    for number, row in rows(path):
        if isinstance(row, str):
            bad.append((number, row))
            continue
        try:
            accounts.append(Account.model_validate(row))
        except ValidationError as exc:
            bad.append((number, describe(exc)))
    return accounts, bad
