"""`dispatcher api` on the run's shared clock, for the chaos runs.

Before 9365be7, `dispatcher api` built its engine on the system clock whatever DISPATCHER_CLOCK_* said, while
workers and beat honoured those settings (workers.process_runtime.clock_from); since then it follows them itself and
this wrapper changes nothing. On older commits (the baseline in docs/reliability.md) the API would re-plan
every account a provider callback touches at today's real date — months past due, the legal stage — and
queue contacts the workers' last look has to refuse; this runs the same command with the clock the settings
name, so that every process of a chaos run agrees on the time.

    python -m tests.chaos.api_proc          # the environment as for `dispatcher api`
"""

from __future__ import annotations

from typing import Any

from dispatcher.api import app as api_app
from workers.cli import app as cli


def _with_settings_clock(original: Any) -> Any:
    def open_runtime(settings: Any, clock: Any = None, *args: Any, **kwargs: Any) -> Any:
        if clock is None and getattr(settings, "clock_start", None) is not None:
            from dispatcher.wiring import clock_from

            clock = clock_from(settings)
        return original(settings, clock, *args, **kwargs)

    return open_runtime


def main() -> None:
    api_app.open_runtime = _with_settings_clock(api_app.open_runtime)  # type: ignore[attr-defined]
    cli(["api"])


if __name__ == "__main__":
    main()
