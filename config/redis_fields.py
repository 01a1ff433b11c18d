"""The DISPATCHER_* variables of the two Redis roles (docs/operations.md, "Redis Cluster and Sentinel"): where the
state is (a single Redis, Sentinel, or a cluster) and its key layout, how many replicas a claim waits for, and
where the broker is (a single Redis or Sentinel; never a cluster). config/settings_fields.py's SettingsFields
is built on these, so every process reads them with the rest."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings


class RedisRoleFields(BaseSettings):
    """Field `x` is read from DISPATCHER_X (the prefix is SettingsFields')."""

    redis_cluster: bool = Field(
        default=False,
        description="DISPATCHER_REDIS_URL names one seed node of a Redis Cluster; the others are discovered.",
    )
    redis_master_name: str | None = Field(
        default=None, description="With a sentinel:// DISPATCHER_REDIS_URL: the master the sentinels are asked for."
    )
    redis_sentinel_password: SecretStr | None = Field(
        default=None, description="The sentinels' own password (the master's goes in the URL)."
    )
    redis_key_layout: Literal["account", "shard"] | None = Field(
        default=None,
        description="account: each account's keys carry its own hash tag; shard: its shard's, so every script "
        "stays in one Cluster slot. Unset: shard on a cluster, else account. `dispatcher migrate-keys` "
        "moves a Redis from one to the other.",
    )
    claim_replicas: int | None = Field(
        default=None,
        ge=0,
        le=5,
        description="Replicas that must hold a claim before its provider call (WAIT). Unset: 1 on a cluster, else 0.",
    )
    claim_replica_timeout_ms: int = Field(
        default=200, ge=1, le=10_000, description="How long the claim waits for those replicas, milliseconds."
    )
    broker_url: str | None = Field(
        default=None,
        description="The Celery broker: redis://... or sentinel://HOST:PORT;sentinel://HOST:PORT. Unset: the "
        "state's Redis.",
    )
    broker_master_name: str | None = Field(
        default=None,
        validate_default=True,
        description="With a sentinel:// DISPATCHER_BROKER_URL: the master the sentinels are asked for.",
    )
    broker_sentinel_password: SecretStr | None = Field(
        default=None, description="The broker's sentinels' own password (the master's goes in the URL)."
    )

    @field_validator("redis_key_layout")
    @classmethod
    def _cluster_layout(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value == "account" and info.data.get("redis_cluster"):
            raise ValueError("a Redis Cluster needs the shard layout (each script's keys in one slot): shard or unset")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str | None) -> str | None:
        if value is not None and value.partition("://")[0] not in ("redis", "rediss", "sentinel"):
            raise ValueError("give redis://HOST:PORT/DB, rediss://... or sentinel://HOST:PORT;sentinel://HOST:PORT")
        return value

    @field_validator("broker_master_name")
    @classmethod
    def _broker_master(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and str(info.data.get("broker_url") or "").startswith("sentinel://"):
            raise ValueError("a sentinel:// DISPATCHER_BROKER_URL needs the name of the master to ask for")
        return value
