"""The active variant set in Redis: the one set of strategies every process must plan with.

The first process to start (or to plan) publishes its set with SET NX; every other process compares its own
with it before planning and refuses when they differ, naming the variant and both hashes. So a rolling
restart that brings a new strategy file to half the workers stops those workers planning instead of
working accounts under two versions at once; `dispatcher experiment publish` replaces the set deliberately,
after which the processes still on the old set refuse until they restart with the new files.

The comparison is one GET of a small string, made at most once a second per process (CHECK_EVERY): a
publish takes up to that long to stop the processes on the old set.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from redis import Redis

from config.errors import ConfigurationError
from dispatcher.core.experiments.arms import VariantSet, differences, published_digest
from dispatcher.state.redis_keys import ACTIVE_VARIANTS

CHECK_EVERY = 1.0  # seconds an agreeing check is trusted


class VariantSetMismatch(ConfigurationError, RuntimeError):
    """This process's variant set is not the active one: it refuses to plan until it is restarted with the
    active set's files, or the set is published (`dispatcher experiment publish`)."""

    def __init__(self, lines: list[str]):
        super().__init__(
            "refusing to plan: this process's strategy variants differ from the active set in Redis "
            "(restart it with the active set's files, or replace the set with `dispatcher experiment publish`):\n  "
            + "\n  ".join(lines)
        )
        self.lines = lines


def stored(published: dict[str, Any]) -> str:
    return json.dumps({"digest": published_digest(published), "set": published}, sort_keys=True)


class ActiveSet:
    def __init__(self, redis: Redis, variants: VariantSet, monotonic: Callable[[], float] = time.monotonic):
        self.redis = redis
        self.variants = variants
        self.published = variants.published()
        self.digest = published_digest(self.published)
        self._monotonic = monotonic
        self._agreed_until = -1.0

    def read(self) -> dict[str, Any] | None:
        """The active set as published, or None before any process published one."""
        raw = self.redis.get(ACTIVE_VARIANTS)
        return None if raw is None else json.loads(raw)

    def publish_if_absent(self) -> bool:
        """Publish this process's set unless one is active; whether this call published it."""
        return bool(self.redis.set(ACTIVE_VARIANTS, stored(self.published), nx=True))

    def replace(self) -> dict[str, Any] | None:
        """Make this process's set the active one; the set it replaced, if any."""
        before = self.redis.set(ACTIVE_VARIANTS, stored(self.published), get=True)
        self._agreed_until = -1.0
        return None if before is None else json.loads(before)["set"]

    def check(self) -> None:
        """Raise VariantSetMismatch unless this process's set is the active one (publishing it if none is)."""
        now = self._monotonic()
        if now < self._agreed_until:
            return
        active = self.read()
        if active is None:
            self.publish_if_absent()
            active = self.read()
        if active is not None and active["digest"] != self.digest:
            raise VariantSetMismatch(differences(self.published, active["set"]) or ["the sets differ"])
        self._agreed_until = now + CHECK_EVERY
