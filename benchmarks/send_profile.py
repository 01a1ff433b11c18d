"""Where a worker's CPU goes on the send path: the send pipeline (workers/delivery.py) run in this process
over batches of 50 SMS to the Twilio sandbox on a private Redis, timed on this thread's own CPU clock (the
sandbox answers from another thread; the machine's other load does not count).

    python benchmarks/send_profile.py --contacts 2000            # CPU per contact, and per step
    python benchmarks/send_profile.py --contacts 1000 --cprofile # and cProfile's view (slower: inflates calls)

Per step: the pipeline's own steps and its record step, each timed around its call. Compare runs back to
back on the same machine; dispatch_throughput.py measures the same path inside real Celery workers.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dispatch_throughput as bench  # noqa: E402
from _machine import speed_reference  # noqa: E402

from channels.sandbox import start_sandboxes  # noqa: E402
from config.settings import load_settings  # noqa: E402
from dispatcher.api.app import ServerThread  # noqa: E402
from dispatcher.state.redis_server import EmbeddedRedis  # noqa: E402
from workers import delivery  # noqa: E402
from workers.app import configure  # noqa: E402
from workers.process_runtime import build_runtime  # noqa: E402

BATCH = 50


def _timed(name: str, step: Callable[..., Any], spent: Counter[str]) -> Callable[..., Any]:
    def timed(*args: Any) -> Any:
        began = time.thread_time()
        try:
            return step(*args)
        finally:
            spent[name] += time.thread_time() - began

    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=2000, help="contacts timed (default 2000)")
    parser.add_argument("--cprofile", action="store_true", help="also print cProfile's 40 costliest calls")
    args = parser.parse_args()
    print(speed_reference())
    state = Path(tempfile.mkdtemp())
    with EmbeddedRedis(state / "redis", appendonly=False) as server, ServerThread(bench._Ok()) as sink:
        sandboxes = start_sandboxes(state / "sandboxes", callback_base_url=sink.url)
        sandboxes.twilio.state.schedule_callbacks = lambda url, updates: None  # the provider's cost elsewhere
        settings = load_settings(
            redis_url=server.url, rate_limits={"sms": 100000.0}, send_batch=BATCH, clock_start=bench.NOW,
            clock_factor=0.000001, public_base_url=sink.url, state_dir=state, log_level="WARNING",
            **sandboxes.settings_overrides(),
        )  # fmt: skip
        configure(settings)
        runtime = build_runtime(settings, lambda contacts, batch: None)
        runtime.deliverer.deliver_many(bench.queue_contacts(server.url, "W", BATCH))  # warm
        contacts = bench.queue_contacts(server.url, "B", args.contacts)
        spent: Counter[str] = Counter()
        deliverer = runtime.deliverer
        deliverer.steps = tuple(_timed(step.__name__, step, spent) for step in delivery.STEPS)
        deliverer.record = _timed("record", deliverer.record, spent)  # type: ignore[method-assign]
        profile = cProfile.Profile(time.thread_time) if args.cprofile else None
        began = time.thread_time()
        if profile is not None:
            profile.enable()
        for start in range(0, len(contacts), BATCH):
            deliverer.deliver_many(contacts[start : start + BATCH])
        if profile is not None:
            profile.disable()
        total = time.thread_time() - began
        sandboxes.stop()
    per_contact = total / args.contacts * 1000
    print(f"{args.contacts} SMS in batches of {BATCH}: this thread's CPU {per_contact:.2f} ms per contact")
    for name, seconds in spent.most_common():
        print(f"  {name:10} {seconds / args.contacts * 1e6:6.0f} us per contact")
    if profile is not None:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
