"""The providers' health weights on the real Redis, with an injected clock: a burst of failures moves a
provider's weight by 10 (and its companions' the other way) at most once per 5 minutes, every worker reads
the same weights, and after 15 quiet minutes they tend back to rest by 10 every 5 minutes; the pick follows
the weights and never takes a provider whose weight is 0 while another has some."""

from __future__ import annotations

import pytest
import redis

from config.settings import load_settings
from dispatcher.state.provider_health import MOVE_GAP_SECONDS, QUIET_SECONDS, TEND_SECONDS, ProviderHealth
from workers.routing import Router

pytestmark = pytest.mark.integration

PAIR = ("twilio", "backup")


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _burst(health: ProviderHealth, provider: str = "twilio") -> list[bool]:
    return [health.failed("sms", provider, PAIR) for _ in range(health.burst)]


def test_a_burst_moves_a_weight_ten_at_most_once_per_five_minutes_and_it_tends_back(redis_url: str) -> None:
    clock = _Clock()
    health = ProviderHealth(redis.Redis.from_url(redis_url), burst=3, now=clock)
    assert health.weights("sms", PAIR) == {"twilio": 50, "backup": 50}  # resting, nothing stored
    assert _burst(health) == [False, False, True]
    assert health.weights("sms", PAIR) == {"twilio": 40, "backup": 60}
    assert _burst(health) == [False, False, False]  # another burst in the same minute: moved already
    clock.now += MOVE_GAP_SECONDS - 1
    assert not any(_burst(health)) and health.weights("sms", PAIR) == {"twilio": 40, "backup": 60}
    clock.now += 1  # five minutes since the move: the next burst moves them again
    assert _burst(health)[-1] and health.weights("sms", PAIR) == {"twilio": 30, "backup": 70}
    other_worker = ProviderHealth(redis.Redis.from_url(redis_url), burst=3, now=clock)
    assert other_worker.weights("sms", PAIR) == {"twilio": 30, "backup": 70}  # one state, in Redis
    clock.now += QUIET_SECONDS - 1
    assert health.weights("sms", PAIR) == {"twilio": 30, "backup": 70}  # quiet, not yet long enough
    clock.now += 1
    assert health.weights("sms", PAIR) == {"twilio": 40, "backup": 60}  # tending back: a step of 10
    clock.now += TEND_SECONDS
    assert health.weights("sms", PAIR) == {"twilio": 50, "backup": 50}
    clock.now += 10 * TEND_SECONDS
    assert other_worker.weights("sms", PAIR) == {"twilio": 50, "backup": 50}  # at rest, and stays there


def test_weights_stay_within_0_and_100_and_rest_where_configured(redis_url: str) -> None:
    clock = _Clock()
    resting = {"sms": {"twilio": 100, "backup": 0}}
    health = ProviderHealth(redis.Redis.from_url(redis_url), resting, burst=1, now=clock)
    assert health.weights("sms", PAIR) == {"twilio": 100, "backup": 0}
    for _ in range(10):  # an outage of most of an hour: a move every five minutes
        clock.now += MOVE_GAP_SECONDS
        assert health.failed("sms", "twilio", PAIR)
    assert health.weights("sms", PAIR) == {"twilio": 0, "backup": 100}
    assert not health.failed("sms", "twilio", PAIR)  # at 0: nothing left to take
    clock.now += QUIET_SECONDS + 9 * TEND_SECONDS
    assert health.weights("sms", PAIR) == {"twilio": 100, "backup": 0}  # ten steps back, to where it rests


def test_two_workers_meeting_one_burst_move_the_weights_once(redis_url: str) -> None:
    clock = _Clock()
    workers = [ProviderHealth(redis.Redis.from_url(redis_url), burst=2, now=clock) for _ in range(2)]
    moved = [worker.failed("sms", "twilio", PAIR) for worker in workers * 3]  # six failures, three bursts
    assert moved.count(True) == 1
    assert workers[1].weights("sms", PAIR) == {"twilio": 40, "backup": 60}


def test_the_pick_follows_the_weights_and_never_takes_a_weight_of_0(redis_url: str) -> None:
    settings = load_settings(redis_url=redis_url)
    router = Router(settings, ProviderHealth(redis.Redis.from_url(redis_url)))
    draws = [index / 100 for index in range(100)]
    picks = [
        Router(settings, router.health, draw=lambda d=d: d).pick(PAIR, {"twilio": 30, "backup": 70}) for d in draws
    ]
    assert (picks.count("twilio"), picks.count("backup")) == (30, 70)
    assert {
        Router(settings, router.health, draw=lambda d=d: d).pick(PAIR, {"twilio": 0, "backup": 5}) for d in draws
    } == {"backup"}
    assert router.pick(PAIR, {"twilio": 0, "backup": 0}) == "twilio"  # none weighs anything: the route's order
