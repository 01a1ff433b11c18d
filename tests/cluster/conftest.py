"""The cluster fixtures: a real Redis Cluster of the embedded redis-server (three primaries, a replica each) on
loopback for the session, flushed per test; the state on it in the shard key layout (every script's keys in
one slot), the broker on the single embedded Redis (kombu cannot use a cluster). The per-test `store`,
`engine` and `worker_settings` replace the single-Redis ones, so a single-Redis test imported here runs on
the cluster unchanged."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from config.settings import Settings, load_settings
from dispatcher.state.redis_keys import use_shard_layout
from dispatcher.state.redis_server import LocalCluster
from dispatcher.state.store import Store
from dispatcher.wiring import open_store

CLUSTER_SHARDS = 64  # many more than a single Redis's 16, so the shards spread over the three primaries


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture
def cluster_url(local_cluster: LocalCluster) -> Iterator[str]:
    import redis

    local_cluster.wait_healthy()
    for node in local_cluster.primary_nodes():
        redis.Redis(port=node.port).flushall()
    yield local_cluster.url
    use_shard_layout(None)  # the single-Redis tests that follow build keys per account again


def cluster_environment(monkeypatch: pytest.MonkeyPatch, cluster_url: str, broker_url: str, shards: int) -> None:
    """The same settings in the environment: what a process reads on its own (the worker's start-up hooks
    call load_settings()) must be the deployment's, or it would build keys in another layout."""
    for name, value in {
        "DISPATCHER_REDIS_URL": cluster_url, "DISPATCHER_REDIS_CLUSTER": "true", "DISPATCHER_BROKER_URL": broker_url,
        "DISPATCHER_SCHEDULE_SHARDS": str(shards),
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)


@pytest.fixture
def cluster_settings(cluster_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The state on the cluster, the broker on the single embedded Redis."""
    cluster_environment(monkeypatch, cluster_url, redis_url, CLUSTER_SHARDS)
    return load_settings(
        redis_url=cluster_url, redis_cluster=True, broker_url=redis_url, schedule_shards=CLUSTER_SHARDS
    )


@pytest.fixture
def store(cluster_settings: Settings) -> Iterator[Store]:
    store = open_store(cluster_settings)
    yield store
    store.redis.close()


@pytest.fixture
def worker_settings(cluster_settings: Settings, worker_sandboxes: object) -> Settings:
    overrides = worker_sandboxes.settings_overrides()  # type: ignore[attr-defined]
    return cluster_settings.model_copy(update={"send_retries": 3, **overrides})


@pytest.fixture
def fresh_producers(celery_worker: object) -> Iterator[None]:
    """Celery keeps its producer pool for the process: a test whose broker is another than the last test's (a
    Sentinel set) takes the pool of its own broker (kombu keeps one per broker address), and the next test
    takes its own again."""
    from workers.app import app

    def forget() -> None:
        app._pool = None
        app.amqp._producer_pool = None

    forget()
    yield
    forget()
