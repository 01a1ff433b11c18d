"""The state on a Redis Cluster: redis-py's cluster client with the two things the store needs that it lacks.

1. Scripts in a pipeline. The store runs its Lua scripts in pipelines (a batch's commits, claims, moves,
   leases in one round trip); redis-py's cluster pipeline refuses EVALSHA outright. Here a pipeline queues
   its commands; on `execute` they are grouped by the primary that serves their first key (every key of a
   script shares one slot: dispatcher.state.redis_keys' shard layout), scripts and plain commands alike,
   and sent as one plain pipeline per primary, the replies put back in order. A command that meets NOSCRIPT
   (the node's script cache is empty after a failover or a restart), MOVED or ASK (slots migrating) or
   TRYAGAIN runs again alone through the cluster client, which follows redirects (a script is loaded first
   where it was missing). A primary that cannot be reached refreshes the slot map and its commands run
   again alone; a script whose reply was lost may so run twice: every script is guarded by the state it
   expects (a version, a status), so the second run changes nothing and says so (a conflict, "already
   claimed"), which its caller already handles as such.
2. One SCAN cursor per primary (`scan_page`): the archiver's movers page through the account records one
   page a run, keeping their cursor in Redis; on a cluster that is a cursor per primary, kept together as
   JSON under the same key.

`client_is_cluster` tells a caller which kind it holds; everything else sees a redis.Redis-like client.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.commands.cluster import RedisClusterCommands
from redis.commands.core import Script
from redis.exceptions import AskError, MovedError, NoScriptError, ResponseError, TryAgainError

_SCRIPT_COMMANDS = ("EVALSHA", "EVAL")
# Replies of a per-node pipeline after which the script runs again alone through the cluster client.
_RUN_AGAIN = (NoScriptError, MovedError, AskError, TryAgainError)
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError)


class DispatcherCluster(RedisCluster):
    """RedisCluster whose pipelines run scripts (grouped by primary) and whose scripts are remembered by digest,
    so any node missing one can be given it again."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.known_scripts: dict[str, str] = {}
        self._loaded: dict[str, set[str]] = defaultdict(set)  # node name -> digests loaded there by this process

    def register_script(self, script: Any) -> Script:
        registered = Script(self, script)
        self.known_scripts[registered.sha] = registered.script
        return registered

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        if transaction:  # one slot's keys in MULTI/EXEC: redis-py's own
            return super().pipeline(transaction=transaction, shard_hint=shard_hint)
        return ScriptPipeline(self)

    def load_scripts_on(self, node: Any, digests: set[str]) -> None:
        """SCRIPT LOAD on `node` what this process has not loaded there yet (a new primary after a failover
        starts with an empty cache), so its pipeline meets no NOSCRIPT."""
        missing = digests - self._loaded[node.name]
        connection = self.get_redis_connection(node)
        for sha in missing:
            connection.script_load(self.known_scripts[sha])
        self._loaded[node.name] |= missing

    def run_script(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        """EVALSHA through the cluster client (redirects followed), loading the script where it is missing."""
        try:
            return self.execute_command("EVALSHA", sha, numkeys, *keys_and_args)
        except NoScriptError:  # on every primary: while a slot migrates, the node that runs it is not the map's
            self.script_load(self.known_scripts[sha])
            return self.execute_command("EVALSHA", sha, numkeys, *keys_and_args)


class ScriptPipeline(RedisClusterCommands):
    """A non-transactional pipeline on the cluster that accepts scripts (see the module's docstring)."""

    def __init__(self, cluster: DispatcherCluster) -> None:
        self.cluster = cluster
        self.scripts: set[Script] = set()  # what redis.client.Pipeline offers; the digests are the cluster's
        self._commands: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        # (replicas, timeout ms): WAIT at the end of each primary's script pipeline, on the connection that
        # wrote (dispatcher.state.claims); what each answered lands in replicas_acked.
        self.wait_replicas: tuple[int, int] | None = None
        self.replicas_acked: list[int] = []

    def __enter__(self) -> ScriptPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self._commands = []

    def __len__(self) -> int:
        return len(self._commands)

    def execute_command(self, *args: Any, **options: Any) -> ScriptPipeline:
        self._commands.append((args, options))
        return self

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        commands, self._commands = self._commands, []
        for script in self.scripts:
            self.cluster.known_scripts.setdefault(script.sha, script.script)
        replies: list[Any] = [None] * len(commands)
        for i, reply in self._run_by_primary(commands):
            replies[i] = reply
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies

    def _run_by_primary(self, commands: Sequence[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[tuple[int, Any]]:
        """Each command, scripts and plain ones alike, on one plain pipeline per primary (by its first key's
        slot; a command without a key on any primary): redis-py's own cluster pipeline costs tens of
        microseconds of Python per command, as much as a plan's share of Redis."""
        by_node: dict[str, list[int]] = defaultdict(list)
        nodes, replicated, scripted = {}, {}, set()
        manager = self.cluster.nodes_manager
        for i, (args, _) in enumerate(commands):
            key = _key_of(args)
            if key is None:
                node = self.cluster.get_random_node()
            else:
                slot = self.cluster.keyslot(key)
                node = manager.get_node_from_slot(slot)
                if node.name not in replicated:  # a replica to wait for (a promoted primary may have none yet)
                    replicated[node.name] = len(manager.slots_cache.get(slot, ())) > 1
            if str(args[0]).upper() in _SCRIPT_COMMANDS:
                scripted.add(node.name)
            by_node[node.name].append(i)
            nodes[node.name] = node
        done: list[tuple[int, Any]] = []
        for name, indexes in by_node.items():
            digests = {str(commands[i][0][1]) for i in indexes if str(commands[i][0][0]).upper() in _SCRIPT_COMMANDS}
            # Unreachable: the pipeline below meets the same and runs each command again alone.
            with contextlib.suppress(*_UNREACHABLE):
                self.cluster.load_scripts_on(nodes[name], digests)
            pipe = self.cluster.get_redis_connection(nodes[name]).pipeline(transaction=False)
            for i in indexes:
                args, options = commands[i]
                pipe.execute_command(*_evalsha(args), **options)
            wait = bool(self.wait_replicas) and name in scripted and replicated.get(name, False)
            if wait:
                pipe.execute_command("WAIT", *self.wait_replicas)  # type: ignore[misc]
            try:
                replies = pipe.execute(raise_on_error=False)
            except _UNREACHABLE:
                manager.initialize()  # the slot map after a failover
                replies = [MovedError("0 0.0.0.0:0")] * (len(indexes) + wait)
            if wait:
                acked = replies.pop()
                self.replicas_acked.append(acked if isinstance(acked, int) else 0)
            for i, reply in zip(indexes, replies, strict=True):
                if isinstance(reply, _RUN_AGAIN) or _is_redirect(reply):
                    reply = _or_error(lambda i=i: self._run_alone(*commands[i]))
                    if self.wait_replicas and name in scripted:
                        self.replicas_acked.append(0)  # run alone, on another connection: not waited for
                done.append((i, reply))
        return done

    def _run_alone(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        """Through the cluster client, which follows redirects (and a script is loaded where it is missing)."""
        if str(args[0]).upper() in _SCRIPT_COMMANDS:
            return self.cluster.run_script(*_evalsha(args)[1:])
        return self.cluster.execute_command(*args, **options)


_KEYLESS = frozenset({"TIME", "PING", "INFO", "DBSIZE", "ECHO"})


def _key_of(args: tuple[Any, ...]) -> Any:
    """A command's first key, which places it (None: it has none)."""
    name = str(args[0]).upper()
    if name in _SCRIPT_COMMANDS:
        return args[3] if int(args[2]) else None
    return None if name in _KEYLESS or len(args) < 2 else args[1]


def _evalsha(call: tuple[Any, ...]) -> tuple[Any, ...]:
    if str(call[0]).upper() == "EVAL":
        raise ValueError("EVAL in a cluster pipeline: register the script (EVALSHA) instead")
    return call


def _is_redirect(reply: Any) -> bool:
    return isinstance(reply, ResponseError) and str(reply).startswith(("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN"))


def _or_error(call: Any) -> Any:
    try:
        return call()
    except ResponseError as exc:
        return exc


def client_is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def primaries_of(client: Any) -> list[Any]:
    """The nodes holding data: the cluster's primaries, or the one server."""
    return list(client.get_primaries()) if client_is_cluster(client) else [None]


def scan_page(client: Any, cursor_key: str, pattern: str, count: int) -> tuple[list[str], bool]:
    """One page of the keys matching `pattern`, resuming the cursor kept at `cursor_key` (one per primary on a
    cluster, kept together as JSON); the keys and whether the scan came round (every cursor back to 0)."""
    if not client_is_cluster(client):
        cursor, keys = client.scan(int(client.get(cursor_key) or 0), match=pattern, count=count)
        client.set(cursor_key, cursor)
        return [_text(key) for key in keys], int(cursor) == 0
    stored = client.get(cursor_key)
    cursors: dict[str, int] = json.loads(stored) if stored and str(stored).startswith("{") else {}
    found: list[str] = []
    for node in client.get_primaries():
        # A primary new since the last page (a failover) starts from 0: a key seen twice is moved once.
        cursor, keys = client.get_redis_connection(node).scan(cursors.get(node.name, 0), match=pattern, count=count)
        cursors[node.name] = int(cursor)
        found += [_text(key) for key in keys]
    live = {node.name for node in client.get_primaries()}
    cursors = {name: cursor for name, cursor in cursors.items() if name in live}
    client.set(cursor_key, json.dumps(cursors))
    return found, not any(cursors.values())


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
