"""One clock for every component: real, manual (tests, simulation) or accelerated (the demo)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """Moves only when told to; what tests and `dispatcher simulate` use."""

    def __init__(self, start: datetime):
        if start.tzinfo is None:
            raise ValueError("a clock's start must be timezone-aware")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        if moment < self._now:
            raise ValueError("time does not run backwards")
        self._now = moment.astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        self.set(self._now + delta)


class AcceleratedClock:
    """Real time scaled by `factor` from `start`; every process given the same start and origin agrees."""

    def __init__(self, start: datetime, factor: float, origin: float | None = None):
        self.start = start.astimezone(UTC)
        self.factor = factor
        self.origin = time.time() if origin is None else origin

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.time() - self.origin) * self.factor)


def deployment_clock(start: datetime | None, factor: float = 1.0, origin: float | None = None) -> Clock:
    """The clock every process of one deployment shares: the system's, or the demo's accelerated one."""
    return SystemClock() if start is None else AcceleratedClock(start, factor, origin)
