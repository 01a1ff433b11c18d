"""Liveness and readiness, unauthenticated, for load balancers and orchestrators."""

from __future__ import annotations

from typing import Literal

import redis
from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel

from dispatcher.api.accounts import engine_of
from dispatcher.engine import Engine

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}


@router.get("/healthz", response_model=Health, summary="The process is up", operation_id="getLiveness")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health, "description": "Redis unreachable or no strategy loaded"}},
    summary="Ready to serve: Redis answers and a strategy is loaded",
    operation_id="getReadiness",
)
def readyz(response: Response, engine: Engine = Depends(engine_of)) -> Health:
    checks = {"redis": "ok", "strategy": "ok"}
    try:
        engine.store.redis.ping()
    except redis.RedisError as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    if not engine.strategy.stages:
        checks["strategy"] = "no stages loaded"
    ready = all(value == "ok" for value in checks.values())
    response.status_code = 200 if ready else 503
    return Health(status="ok" if ready else "unavailable", checks=checks)
