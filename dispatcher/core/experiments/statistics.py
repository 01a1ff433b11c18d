"""How sure a comparison of two variants is: Wilson intervals for rates, Newcombe's interval for a difference
of rates, seeded bootstrap intervals for amounts and ratios, and the sample each arm would need before a
difference of the size seen can be told from chance.

Wilson rather than the textbook normal interval because collections rates sit near 0 or 1 (opt-outs,
disputes) and arms are often small (a 10 % challenger), where the normal interval leaves [0, 1] and covers
far less than it says. Bootstrap for amounts because recoveries are heavily skewed (most accounts pay
nothing, a few pay everything): no normal assumption holds. The bootstrap draws from a generator seeded by
the caller, so a report read twice says the same thing.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

CONFIDENCE = 0.95
POWER = 0.80
RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(successes: int, trials: int, confidence: float = CONFIDENCE) -> Interval:
    """The share of successes with its Wilson score interval; no trials gives the whole of [0, 1]."""
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be within 0..trials, got {successes} of {trials}")
    if trials == 0:
        return Interval(0.0, 0.0, 1.0)
    z, p = _z(confidence), successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    # At 0 or `trials` successes the bound is exactly the observed share; rounding must not move it past.
    low = 0.0 if successes == 0 else max(0.0, min(p, centre - half))
    high = 1.0 if successes == trials else min(1.0, max(p, centre + half))
    return Interval(p, low, high)


def rate_difference(
    base_successes: int, base_trials: int, other_successes: int, other_trials: int, confidence: float = CONFIDENCE
) -> Interval:
    """other − base with Newcombe's hybrid score interval (built from the two Wilson intervals)."""
    base = wilson(base_successes, base_trials, confidence)
    other = wilson(other_successes, other_trials, confidence)
    difference = other.value - base.value
    below = math.sqrt((other.value - other.low) ** 2 + (base.high - base.value) ** 2)
    above = math.sqrt((other.high - other.value) ** 2 + (base.value - base.low) ** 2)
    return Interval(difference, max(-1.0, difference - below), min(1.0, difference + above))


def _percentiles(draws: list[float], confidence: float) -> tuple[float, float]:
    draws.sort()
    tail = (1 - confidence) / 2
    last = len(draws) - 1
    return draws[round(tail * last)], draws[round((1 - tail) * last)]


def mean_interval(
    values: Sequence[float], seed: int = 0, resamples: int = RESAMPLES, confidence: float = CONFIDENCE
) -> Interval:
    """The mean with a percentile bootstrap interval; an empty sample gives NaN bounds (nothing to say)."""
    if not values:
        return Interval(math.nan, math.nan, math.nan)
    draw, size = random.Random(seed), len(values)
    means = [math.fsum(draw.choices(values, k=size)) / size for _ in range(resamples)]
    low, high = _percentiles(means, confidence)
    return Interval(math.fsum(values) / size, low, high)


def ratio_interval(
    numerators: Sequence[float],
    denominators: Sequence[float],
    seed: int = 0,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
) -> Interval:
    """sum(numerators) / sum(denominators) over accounts (contacts per resolution, cost per unit collected),
    resampling accounts whole; NaN where the denominators sum to nothing."""
    if len(numerators) != len(denominators):
        raise ValueError("numerators and denominators must be per account, of one length")
    total = math.fsum(denominators)
    if not numerators or total == 0:
        return Interval(math.nan, math.nan, math.nan)
    pairs, draw, ratios = list(zip(numerators, denominators, strict=True)), random.Random(seed), []
    for _ in range(resamples):
        sample = draw.choices(pairs, k=len(pairs))
        below = math.fsum(d for _, d in sample)
        if below:
            ratios.append(math.fsum(n for n, _ in sample) / below)
    low, high = _percentiles(ratios, confidence) if ratios else (math.nan, math.nan)
    return Interval(math.fsum(numerators) / total, low, high)


def mean_difference(
    base: Sequence[float], other: Sequence[float], seed: int = 0, resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
) -> Interval:  # fmt: skip
    """mean(other) − mean(base) with a bootstrap interval, each arm resampled on its own."""
    if not base or not other:
        return Interval(math.nan, math.nan, math.nan)
    draw, differences = random.Random(seed), []
    for _ in range(resamples):
        a = math.fsum(draw.choices(base, k=len(base))) / len(base)
        b = math.fsum(draw.choices(other, k=len(other))) / len(other)
        differences.append(b - a)
    low, high = _percentiles(differences, confidence)
    return Interval(math.fsum(other) / len(other) - math.fsum(base) / len(base), low, high)


def rate_sample_needed(
    base_rate: float, other_rate: float, confidence: float = CONFIDENCE, power: float = POWER
) -> float:
    """Accounts per arm to tell these two rates apart (two-sided test of proportions); inf when they are equal."""
    if base_rate == other_rate:
        return math.inf
    z_alpha, z_beta = _z(confidence), NormalDist().inv_cdf(power)
    pooled = (base_rate + other_rate) / 2
    spread = z_alpha * math.sqrt(2 * pooled * (1 - pooled)) + z_beta * math.sqrt(
        base_rate * (1 - base_rate) + other_rate * (1 - other_rate)
    )
    return math.ceil(spread**2 / (base_rate - other_rate) ** 2)


def mean_sample_needed(
    base: Sequence[float], other: Sequence[float], confidence: float = CONFIDENCE, power: float = POWER
) -> float:
    """Accounts per arm to tell these two means apart, from their pooled variance; inf when they are equal."""
    if len(base) < 2 or len(other) < 2:
        return math.inf
    mean_a, mean_b = math.fsum(base) / len(base), math.fsum(other) / len(other)
    if mean_a == mean_b:
        return math.inf
    variance = (math.fsum((x - mean_a) ** 2 for x in base) + math.fsum((x - mean_b) ** 2 for x in other)) / (
        len(base) + len(other) - 2
    )
    z_alpha, z_beta = _z(confidence), NormalDist().inv_cdf(power)
    return math.ceil(2 * (z_alpha + z_beta) ** 2 * variance / (mean_b - mean_a) ** 2)


def verdict(difference: Interval, smallest_arm: int, needed: float) -> str:
    """`insufficient` while an arm is below the sample it needs; then `higher`, `lower` or `no difference`
    as the interval lies above zero, below it, or across it."""
    if math.isnan(difference.value) or smallest_arm < needed:
        return "insufficient"
    if difference.low > 0:
        return "higher"
    if difference.high < 0:
        return "lower"
    return "no difference"


def ratio_difference(
    base_numerators: Sequence[float], base_denominators: Sequence[float],
    other_numerators: Sequence[float], other_denominators: Sequence[float],
    seed: int = 0, resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
) -> Interval:  # fmt: skip
    """ratio(other) − ratio(base), each a sum over accounts divided by a sum, with a bootstrap interval that
    resamples each arm's accounts whole; NaN where either arm's denominators sum to nothing."""
    base_total, other_total = math.fsum(base_denominators), math.fsum(other_denominators)
    if not base_total or not other_total:
        return Interval(math.nan, math.nan, math.nan)
    base = list(zip(base_numerators, base_denominators, strict=True))
    other = list(zip(other_numerators, other_denominators, strict=True))
    draw, differences = random.Random(seed), []
    for _ in range(resamples):
        a, b = draw.choices(base, k=len(base)), draw.choices(other, k=len(other))
        a_below, b_below = math.fsum(d for _, d in a), math.fsum(d for _, d in b)
        if a_below and b_below:
            differences.append(math.fsum(n for n, _ in b) / b_below - math.fsum(n for n, _ in a) / a_below)
    value = math.fsum(other_numerators) / other_total - math.fsum(base_numerators) / base_total
    low, high = _percentiles(differences, confidence) if differences else (math.nan, math.nan)
    return Interval(value, low, high)


def ratio_sample_needed(
    base_numerators: Sequence[float], base_denominators: Sequence[float],
    other_numerators: Sequence[float], other_denominators: Sequence[float],
    confidence: float = CONFIDENCE, power: float = POWER,
) -> float:  # fmt: skip
    """Accounts per arm to tell two ratios of sums apart: the delta method's variance of a ratio (per account,
    (numerator − ratio × denominator) / mean denominator), pooled over the arms; inf when they are equal."""
    variances, ratios = [], []
    for numerators, denominators in ((base_numerators, base_denominators), (other_numerators, other_denominators)):
        total = math.fsum(denominators)
        if len(numerators) < 2 or not total:
            return math.inf
        ratio, mean_below = math.fsum(numerators) / total, total / len(denominators)
        linear = [(n - ratio * d) / mean_below for n, d in zip(numerators, denominators, strict=True)]
        variances.append(math.fsum(x * x for x in linear) / (len(linear) - 1))
        ratios.append(ratio)
    if ratios[0] == ratios[1]:
        return math.inf
    z_alpha, z_beta = _z(confidence), NormalDist().inv_cdf(power)
    return math.ceil((z_alpha + z_beta) ** 2 * (variances[0] + variances[1]) / (ratios[1] - ratios[0]) ** 2)
