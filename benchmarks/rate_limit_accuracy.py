"""Rate-limit accuracy: how closely the shared Redis limiter (workers.limiter.RateLimiter, a moving window
log in one Lua script on Redis's clock) holds a cluster-wide rate when several worker processes contend.

    python benchmarks/rate_limit_accuracy.py --rate 50 --seconds 30 --processes 4

Each process loops on `acquire("sms", sender)`: a grant is recorded with its time; a refusal's wait is
slept (standing in for the broker countdown a throttled send task gets) and then it asks again. The
figures: the observed rate over the window against the configured rate (goal within 5%), and the most
grants seen in any one-second sliding window (goal <= rate + burst). The run's own baseline is the
configured rate itself; a diagnosis line says how late, on average, a freed token was taken, which is
what a shortfall is made of (each late take pushes that token's next turn back by the same amount).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dispatcher.state.redis_server import EmbeddedRedis  # noqa: E402
from workers.limiter import Limit, RateLimiter  # noqa: E402

KEY, SENDER = "sms", "+15005550006"
START_DELAY = 1.0  # seconds for every process to fork and connect before the common start


Stamps = tuple[list[float], list[float], list[float], int]


def contender(url: str, rate: float, burst: int, start: float, seconds: float) -> Stamps:
    """Acquire until the window ends; returns the limiter's own stamp of each grant, the time.time() just
    before the call and just after it returned, and the number of refusals slept on."""
    limiter = RateLimiter(url, {KEY: Limit(rate, burst)})
    own: list[float] = []
    before: list[float] = []
    after: list[float] = []
    refusals = 0
    end = start + seconds
    time.sleep(max(0.0, start - time.time()))
    while True:
        asked = time.time()
        if asked >= end:
            break
        wait, decided_at = limiter.acquire_at(KEY, SENDER)
        if wait == 0.0:
            own.append(decided_at)
            before.append(asked)
            after.append(time.time())
        else:
            refusals += 1
            time.sleep(min(wait, max(0.0, end - time.time())))
    return own, before, after, refusals


def max_in_window(stamps: list[float], width: float = 1.0) -> tuple[int, float]:
    """Most stamps in any half-open window [t, t + width) starting at a stamp, and where it starts."""
    best, where, low = 0, stamps[0] if stamps else 0.0, 0
    for high, moment in enumerate(stamps):
        while stamps[low] <= moment - width:
            low += 1
        if high - low + 1 > best:
            best, where = high - low + 1, stamps[low]
    return best, where


def lateness(stamps: list[float], capacity: int) -> list[float]:
    """How long after its token freed (the grant `capacity` places earlier, plus 1 s) each grant came."""
    return [stamps[i] - (stamps[i - capacity] + 1.0) for i in range(capacity, len(stamps))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="sends per second allowed (default 50)")
    parser.add_argument("--burst", type=int, default=0, help="extra sends allowed in any one second (default 0)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the measured window (default 30)")
    parser.add_argument("--processes", type=int, default=4, help="contending worker processes (default 4)")
    args = parser.parse_args()
    if args.seconds <= 0 or args.rate <= 0 or args.processes < 1:
        parser.error("--seconds, --rate and --processes must be positive")
    with tempfile.TemporaryDirectory() as state, EmbeddedRedis(Path(state), appendonly=False) as server:
        start = time.time() + START_DELAY
        jobs = [(server.url, args.rate, args.burst, start, args.seconds)] * args.processes
        with multiprocessing.get_context("fork").Pool(args.processes) as pool:
            results = pool.starmap(contender, jobs)
    own, before, after = (sorted(stamp for result in results for stamp in result[k]) for k in range(3))  # type: ignore[union-attr]
    refusals = sum(result[3] for result in results)
    per_process = [len(result[0]) for result in results]
    call_ms = [(b - a) * 1000 for result in results for a, b in zip(result[1], result[2], strict=True)]
    capacity = max(1, int(args.rate) + args.burst)
    allowed = args.rate + args.burst

    observed = len(own) / args.seconds
    deviation = (observed - args.rate) / args.rate * 100
    # Steady state: leave out the first second (the initial burst) and count the whole seconds after it.
    steady = [stamp for stamp in own if start + 1.0 <= stamp < start + args.seconds]
    steady_rate = len(steady) / (args.seconds - 1.0) if args.seconds > 1.0 else float("nan")
    peaks = {name: max_in_window(stamps) for name, stamps in (("own", own), ("before", before), ("after", after))}
    late = lateness(own, capacity) if args.burst == 0 else []  # the model assumes the one 1-s window

    print(f"limit: {args.rate:g}/s, burst {args.burst}, shared by {args.processes} processes for {args.seconds:g} s")
    print(f"grants: {len(own)} (per process {per_process}), refusals slept on: {refusals}")
    print(f"observed rate: {observed:.2f}/s, deviation {deviation:+.2f}% (goal within ±5%)")
    print(f"steady rate after the first second: {steady_rate:.2f}/s")
    peak, peak_at = peaks["own"]
    print(
        f"max grants in any 1-s sliding window, by the limiter's own timestamps: {peak} at +{peak_at - start:.3f} s "
        f"(goal <= {allowed:g}: {'met' if peak <= allowed else 'NOT met'})"
    )
    print(
        f"  the same by time.time() taken just before acquire(): {peaks['before'][0]}, "
        f"just after it returned: {peaks['after'][0]} (these add the call's own jitter)"
    )
    if late:
        print(
            f"token lateness (grant - moment its token freed): mean {statistics.mean(late) * 1000:.2f} ms, "
            f"median {statistics.median(late) * 1000:.2f} ms, max {max(late) * 1000:.2f} ms; "
            f"long-run rate it implies (rate / (1 + lateness)): {args.rate / (1 + statistics.mean(late)):.2f}/s"
        )
    if call_ms:
        print(f"acquire() duration when granted: median {statistics.median(call_ms):.2f} ms, max {max(call_ms):.2f} ms")
    print(f"goal within 5%: {'met' if abs(deviation) <= 5 else 'NOT met'}")


if __name__ == "__main__":
    main()
