"""Rest days by country, from the `holidays` package (python-holidays).

Three kinds of rest day, each a set of dates per (country, year), computed once and cached:

- **holidays**: the calendar's public holidays. For China these include the substituted days off of the
  State Council's yearly schedule (e.g. 2026-10-06 and 10-07, "Day off (substituted from ...)").
- **rest periods**: weekend days that lie inside a run of days off containing a holiday (the Sunday inside
  Golden Week, the weekend inside the Spring Festival break), unless the schedule makes them adjusted
  working days (调休上班, the package's `weekend_workdays`).
- **weekends**: every weekend day of the country's calendar, adjusted working days excepted.

A country the package does not know has no rest days (the account's windows still hold).
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache
from typing import Any

import holidays as holiday_calendars

_EMPTY: frozenset[date] = frozenset()


def is_holiday(country: str, day: date, rest_periods: bool = True) -> bool:
    """A public holiday, or (with rest_periods) a weekend day inside an official rest period."""
    days = _rest_period_days(country, day.year) if rest_periods else _holidays(country, day.year)
    return day in days


def is_weekend(country: str, day: date) -> bool:
    """A weekend day of the country that its schedule does not make a working day."""
    return day in _weekend_days(country, day.year)


def knows(country: str) -> bool:
    """Whether the calendar has this country at all."""
    return _calendar(country, 2026) is not None


@lru_cache(maxsize=256)
def _holidays(country: str, year: int) -> frozenset[date]:
    calendar = _calendar(country, year)
    return _EMPTY if calendar is None else frozenset(calendar.keys())


@lru_cache(maxsize=256)
def _weekend_days(country: str, year: int) -> frozenset[date]:
    calendar = _calendar(country, year)
    if calendar is None:
        return _EMPTY
    weekend, workdays = set(calendar.weekend), set(calendar.weekend_workdays)
    day, days = date(year, 1, 1), set()
    while day.year == year:
        if day.weekday() in weekend and day not in workdays:
            days.add(day)
        day += timedelta(days=1)
    return frozenset(days)


@lru_cache(maxsize=256)
def _rest_period_days(country: str, year: int) -> frozenset[date]:
    """Holidays plus the weekend days chained to one by other days off (a period may cross the year)."""
    off = _holidays(country, year - 1) | _holidays(country, year) | _holidays(country, year + 1)
    weekend = _weekend_days(country, year - 1) | _weekend_days(country, year) | _weekend_days(country, year + 1)
    found = set(_holidays(country, year))
    for holiday in off:
        for step in (timedelta(days=1), timedelta(days=-1)):
            day = holiday + step
            while day in weekend or day in off:
                if day.year == year and day in weekend:
                    found.add(day)
                day += step
    return frozenset(found)


@lru_cache(maxsize=256)
def _calendar(country: str, year: int) -> Any:
    try:
        return holiday_calendars.country_holidays(country, years=year)
    except NotImplementedError:
        return None
