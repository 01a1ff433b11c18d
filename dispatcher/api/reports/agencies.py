"""`GET /v1/reports/agencies`: liquidation per agency and placement month, read from the record (PostgreSQL),
as `dispatcher report agencies --json` prints it. `accounts:read` scope (or admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from dispatcher.api.accounts import engine_of, read_record
from dispatcher.api.errors import responses
from dispatcher.api.reports.variants import UNTIL, Reader, horizon_of
from dispatcher.engine import Engine
from dispatcher.record.liquidation import liquidation, read_liquidation

router = APIRouter(prefix="/v1/reports", tags=["reports"])


@router.get("/agencies", responses=responses(401, 403, 422, 503), summary="Liquidation per agency",
            operation_id="reportAgencies")  # fmt: skip
def report_agencies(
    request: Request,
    _: Reader,
    engine: Engine = Depends(engine_of),
    until: Annotated[str | None, Query(description=UNTIL, json_schema_extra={"format": "date-time"})] = None,
) -> dict[str, Any]:
    """Per agency, placement month and currency: the cases placed, their placed balance, what was recovered
    after placement and the liquidation rate (recovered / placed balance). Shape: docs/api.md."""
    horizon = horizon_of(until, engine.clock.now())
    # Nothing archived yet (no record): no placement to report.
    return read_record(request, lambda reader: read_liquidation(reader.pool, horizon), lambda: liquidation([], horizon))
