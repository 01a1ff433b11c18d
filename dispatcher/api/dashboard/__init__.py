"""The operations dashboard at /v1/admin/dashboard: one page whose assets ship with the project (no CDN, so it
works on a bank's closed network), drawn from one JSON document at /v1/admin/dashboard/data (admin scope).

The page itself holds no data and no secret, so it is served without a key; the browser passes the admin
key to the data route as a Bearer token, read once from the page address's fragment (`#key=...`, which
never reaches the server or its logs) or typed into the page, and kept for the tab only (sessionStorage).

The figures: the stage funnel over time, attempts by channel, provider and ending, provider outcomes,
deferrals and denials by rule (all from the record, dispatcher/record/dashboard.py), provider health from
the breakers in Redis, and the variants' table (GET /v1/reports/variants, when an experiment runs).
"""

from __future__ import annotations

import time
from datetime import timedelta
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

import channels
from channels.agencies import agency_providers
from dispatcher.api.accounts import engine_of, read_record
from dispatcher.api.auth import ADMIN, Principal, require
from dispatcher.api.errors import ApiError, responses
from dispatcher.engine import Engine
from dispatcher.record.dashboard import dashboard_figures
from dispatcher.state.provider_health import ProviderHealth as ProviderWeights
from dispatcher.state.provider_state import read_breaker

router = APIRouter(prefix="/v1/admin/dashboard", tags=["admin"])
Admin = Annotated[Principal, Depends(require(ADMIN))]
ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}


class ProviderHealth(BaseModel):
    key: str = Field(description="The breaker's key: the channel for its own provider, else CHANNEL.PROVIDER.")
    channel: str
    provider: str
    state: str = Field(description="closed, open or half-open (the opening is over, a probe may go).")
    open_until: float | None = Field(None, description="Unix time the opening ends, while open.")
    setting: str = Field("", description="The setting the provider refused, when it opened on misconfiguration.")
    reason: str = ""
    trips: int = 0
    weight: float = Field(description="The health weight (0–100) a provider is chosen by among its route's.")


class Dashboard(BaseModel):
    since: str
    until: str
    stages: list[str] = Field(description="The strategy's stages in ladder order, the funnel's series.")
    funnel: list[dict[str, Any]] = Field(
        description="Rows of day, stage, accounts: accounts reached per stage and day."
    )
    attempts: list[dict[str, Any]] = Field(description="Rows of channel, provider, status, count: attempts that ended.")
    outcomes: list[dict[str, Any]] = Field(description="Rows of channel, outcome, count: what the providers reported.")
    rules: list[dict[str, Any]] = Field(
        description="Rows of verdict, rule, where (decision or last_look), count: deferrals and denials."
    )
    providers: list[ProviderHealth]


def _page(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()


@router.get("", response_class=HTMLResponse, operation_id="getDashboard",
            summary="The operations dashboard (a page; its data needs an admin key)")  # fmt: skip
def dashboard_page() -> HTMLResponse:
    return HTMLResponse(_page("dashboard.html"), headers={"Cache-Control": "no-store"})


@router.get("/assets/{name}", include_in_schema=False)
def dashboard_asset(name: str) -> Response:
    if name not in ASSETS:
        raise ApiError(404, "not_found", f"no dashboard asset {name!r}")
    return Response(_page(name), media_type=ASSETS[name], headers={"Cache-Control": "max-age=300"})


@router.get("/data", response_model=Dashboard, responses=responses(401, 403, 422, 503), operation_id="getDashboardData",
            summary="The dashboard's figures over the last `days` days")  # fmt: skip
def dashboard_data(
    request: Request,
    _: Admin,
    days: Annotated[int, Query(ge=1, le=366, description="The window, in days up to now.")] = 30,
    engine: Engine = Depends(engine_of),
) -> Dashboard:
    until = engine.clock.now()
    since = until - timedelta(days=days)
    figures = read_record(request, lambda reader: dashboard_figures(reader.pool, since, until), lambda: None)
    return Dashboard(
        since=since.isoformat(),
        until=until.isoformat(),
        stages=[stage.name for stage in engine.strategy.stages],
        funnel=figures.funnel if figures else [],
        attempts=figures.attempts if figures else [],
        outcomes=figures.outcomes if figures else [],
        rules=figures.rules if figures else [],
        providers=_provider_health(
            engine, request.app.state.settings, time.time()
        ),  # the breakers keep wall-clock time
    )


def _provider_health(engine: Engine, settings: Any, now: float) -> list[ProviderHealth]:
    """Each provider's breaker (its key: the channel for the channel's own provider, CHANNEL.PROVIDER for
    another) and its health weight, as every worker reads them."""
    weights = ProviderWeights(engine.store.redis, settings.provider_weights, now=lambda: now)
    health = []
    agencies = {channels.provider_key(c, p): (c, p) for c, p in agency_providers(settings)}  # DISPATCHER_AGENCIES
    for key, (channel, provider) in sorted({**channels.provider_keys(), **agencies}.items()):
        fields = read_breaker(engine.store.redis, key)
        until = float(fields["until"]) if fields.get("until") else None
        state = "closed" if until is None else ("open" if until > now else "half-open")
        health.append(ProviderHealth(
            key=key, channel=channel, provider=provider, state=state, open_until=until if state == "open" else None,
            setting=fields.get("setting", ""), reason=fields.get("reason", ""), trips=int(fields.get("trips") or 0),
            weight=weights.weights(channel, [provider])[provider],
        ))  # fmt: skip
    return health
