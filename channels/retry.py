"""Short in-task retries of transient send failures, with tenacity; and the longer back-off between tasks.

Only TransientDeliveryError that is not ambiguous is retried here: an ambiguous failure (the request may
have reached the provider) must be reconciled from callbacks first, or the debtor could get two texts. A
misconfigured provider is not retried either: the same key or URL gives the same answer.
Longer waits (a Retry-After above `max_wait`) are not slept here; the error goes back to the caller,
which re-queues through the broker or the schedule, waiting `transient_backoff`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from channels.base import ProviderMisconfigured, RateLimited, TransientDeliveryError

T = TypeVar("T")


def _retryable(max_wait: float) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        if not isinstance(exc, TransientDeliveryError) or exc.ambiguous:
            return False
        if isinstance(exc, RateLimited | ProviderMisconfigured):  # waiting in the task fixes neither
            return False
        return exc.retry_after is None or exc.retry_after <= max_wait

    return check


def _wait(initial: float, max_wait: float) -> Callable[[RetryCallState], float]:
    backoff = wait_exponential(multiplier=initial, max=max_wait)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        return float(retry_after) if retry_after is not None else float(backoff(state))

    return wait


def retry_transient(call: Callable[[], T], *, attempts: int = 3, initial_wait: float = 0.5, max_wait: float = 5.0) -> T:
    """Run `call`, retrying non-ambiguous transient failures up to `attempts` times in all.

    The first try runs bare: nearly every send succeeds at once, and building the retry loop costs more
    than the call's own Python. Its failure is handed to the loop as the loop's first attempt."""
    retryable = _retryable(max_wait)
    try:
        return call()
    except BaseException as exc:
        if attempts <= 1 or not retryable(exc):
            raise
        first: list[BaseException] = [exc]

    def again() -> T:
        if first:
            raise first.pop()
        return call()

    retrying = Retrying(
        retry=retry_if_exception(retryable),
        wait=_wait(initial_wait, max_wait),
        stop=stop_after_attempt(attempts),
        reraise=True,
    )
    return retrying(again)


def transient_backoff(
    tries: int, *, first: float, cap: float, jitter: float, draw: Callable[[], float] = random.random
) -> float:
    """Seconds a contact waits after its `tries`-th transient failure in a row: `first`, then twice as long
    each time, never more than `cap`, less a random share of up to `jitter` of it (`draw()` in [0, 1)), so
    the contacts one outage failed together do not all come back in the same second. With first=30, cap=300,
    jitter=0.2: 24-30 s, 48-60, 96-120, 192-240, then 240-300."""
    if tries < 1:
        raise ValueError(f"tries counts failures and starts at 1, not {tries}")
    ceiling = min(cap, first * 2.0 ** min(tries - 1, 64))  # the exponent is bounded: 2**1024 overflows a float
    return ceiling * (1.0 - jitter * draw())
