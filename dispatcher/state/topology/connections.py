"""The clients of the two Redis roles: the state (DISPATCHER_REDIS_URL) and the broker (DISPATCHER_BROKER_URL).

The state is a single Redis (`redis://`), a Redis behind Sentinel (`sentinel://HOST:PORT;sentinel://HOST:PORT`
with DISPATCHER_REDIS_MASTER_NAME: the client asks the sentinels for the master and follows a failover), or
a Redis Cluster (DISPATCHER_REDIS_CLUSTER=true: the URL names one seed node, the others are discovered). The
broker is never a cluster (kombu cannot use one): a single Redis, or Sentinel with
DISPATCHER_BROKER_MASTER_NAME. With no DISPATCHER_BROKER_URL the broker is the state's Redis.

What reads kombu's keys (the stranded sweep's oldest waiting message, the queue-depth gauges) and the
dead-letter stream use the broker's client; everything else the state's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel

from config.errors import ConfigurationError
from dispatcher.state.topology.cluster import DispatcherCluster

SENTINEL_SCHEME = "sentinel"


class RedisSettingError(ConfigurationError):
    """A Redis address or its companions (master name, cluster flag) that cannot work together."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where one Redis role is and how to reach it."""

    url: str
    cluster: bool = False
    master_name: str | None = None
    sentinel_password: str | None = None
    setting: str = "DISPATCHER_REDIS_URL"  # named in errors

    def client(self, decode_responses: bool = True, **options: Any) -> Any:
        if self.url.startswith(f"{SENTINEL_SCHEME}://"):
            return _sentinel_master(self, decode_responses, options)
        if self.cluster:
            return DispatcherCluster.from_url(self.url, decode_responses=decode_responses, **options)
        return redis.Redis.from_url(self.url, decode_responses=decode_responses, **options)


def sentinel_nodes(url: str) -> tuple[list[tuple[str, int]], str | None, int]:
    """kombu's form, `sentinel://[:PASSWORD@]HOST:PORT[/DB];sentinel://HOST:PORT...`: the sentinels, the master's
    password (the first one given) and the database."""
    nodes: list[tuple[str, int]] = []
    password, db = None, 0
    for part in url.split(";"):
        parsed = urlsplit(part.strip())
        if parsed.scheme != SENTINEL_SCHEME or not parsed.hostname:
            raise ValueError(f"{part!r} is not sentinel://HOST:PORT")
        nodes.append((parsed.hostname, parsed.port or 26379))
        password = password or (unquote(parsed.password) if parsed.password else None)
        if parsed.path.strip("/"):
            db = int(parsed.path.strip("/"))
    return nodes, password, db


def _sentinel_master(target: RedisTarget, decode_responses: bool, options: dict[str, Any]) -> redis.Redis:
    if not target.master_name:
        name = target.setting.replace("_URL", "_MASTER_NAME")
        raise RedisSettingError(f"{name}: a sentinel:// {target.setting} needs the name of the master to ask for")
    try:
        nodes, password, db = sentinel_nodes(target.url)
    except ValueError as exc:
        raise RedisSettingError(f"{target.setting}: {exc}") from None
    sentinel_kwargs = {"password": target.sentinel_password} if target.sentinel_password else {}
    sentinel = Sentinel(nodes, sentinel_kwargs=sentinel_kwargs, socket_timeout=options.get("socket_timeout", 5))
    return sentinel.master_for(
        target.master_name, db=db, password=password, decode_responses=decode_responses, **options
    )


def state_target(settings: Any, url: str | None = None) -> RedisTarget:
    """The state's Redis from the settings (`url`: the one actually in use, e.g. the embedded server's)."""
    chosen = url or settings.redis_url or ""
    password = settings.redis_sentinel_password
    return RedisTarget(
        chosen,
        cluster=settings.redis_cluster,
        master_name=settings.redis_master_name,
        sentinel_password=password.get_secret_value() if password is not None else None,
    )


def broker_target(settings: Any, url: str | None = None) -> RedisTarget:
    """The broker's Redis: DISPATCHER_BROKER_URL, else the state's (which then must not be a cluster)."""
    if settings.broker_url:
        password = settings.broker_sentinel_password
        return RedisTarget(
            settings.broker_url,
            master_name=settings.broker_master_name,
            sentinel_password=password.get_secret_value() if password is not None else None,
            setting="DISPATCHER_BROKER_URL",
        )
    state = state_target(settings, url)
    if state.cluster:
        raise RedisSettingError(
            "DISPATCHER_BROKER_URL: the state is a Redis Cluster, which Celery's broker cannot be; name a single "
            "Redis or a sentinel:// set for the broker"
        )
    return state


def layout_is_shard(settings: Any) -> bool:
    """Whether the account keys carry their shard's hash tag (DISPATCHER_REDIS_KEY_LAYOUT; a cluster's default)."""
    layout = settings.redis_key_layout
    return layout == "shard" or (layout is None and bool(settings.redis_cluster))
