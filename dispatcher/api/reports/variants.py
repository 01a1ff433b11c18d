"""`GET /v1/reports/variants`: results per strategy variant, read from the record (PostgreSQL), as
`dispatcher report variants --json` prints them. `accounts:read` scope (or admin)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from dispatcher.api.accounts import engine_of, read_record
from dispatcher.api.auth import ACCOUNTS_READ, Principal, require
from dispatcher.api.errors import ApiError, FieldError, responses
from dispatcher.core.experiments.results import AccountFacts, price_list, variant_report
from dispatcher.engine import Engine
from dispatcher.record.results import archived_facts

router = APIRouter(prefix="/v1/reports", tags=["reports"])
Reader = Annotated[Principal, Depends(require(ACCOUNTS_READ))]


UNTIL = "The horizon, ISO 8601 with an offset (2026-06-01T00:00:00+00:00); default now."


def horizon_of(until: str | None, now: datetime) -> datetime:
    """`until` as a UTC time; a 422 naming the field for anything else (a number is not a time here)."""
    if until is None:
        return now.astimezone(UTC)
    try:
        moment = datetime.fromisoformat(until)
        if moment.tzinfo is None:
            raise ValueError("it needs a UTC offset, e.g. 2026-06-01T00:00:00+00:00")
        return moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:  # OverflowError: year 1 at +01:00 has no UTC time
        message = f"not an ISO 8601 time with an offset: {exc}"
        raise ApiError(422, "validation", f"until: {message}", [FieldError(field="until", message=message)]) from None


@router.get("/variants", responses=responses(401, 403, 422, 503), summary="Results per strategy variant",
            operation_id="reportVariants")  # fmt: skip
def report_variants(
    request: Request,
    _: Reader,
    engine: Engine = Depends(engine_of),
    until: Annotated[str | None, Query(description=UNTIL, json_schema_extra={"format": "date-time"})] = None,
) -> dict[str, Any]:
    """Each variant's (and the holdout's) figures with their intervals, and each against the champion: the
    difference with its interval, the accounts per arm it needs and the verdict (`insufficient` below it).
    Shape: docs/api.md."""
    horizon = horizon_of(until, engine.clock.now())
    variants = engine.variants
    order, costs = [arm.name for arm in variants.arms], price_list(variants.champion.strategy)
    champion = variants.champion.name

    def report(facts: list[AccountFacts]) -> dict[str, Any]:
        return variant_report(facts, champion, order, costs, horizon)

    # A deployment without a record has archived nothing: every arm has no account yet.
    return read_record(request, lambda reader: report(archived_facts(reader.pool, horizon)), lambda: report([]))
