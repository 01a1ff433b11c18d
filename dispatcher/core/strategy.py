"""The strategy: the escalation ladder, the compliance policy and the event rules, loaded from YAML.

Everything here is validated by pydantic at load; a bad file yields one line per error in the form
`path.to.field: what is wrong`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from config.errors import ConfigurationError
from dispatcher.core.arrangements.offers import OFFER_ID_PATTERN, ArrangementRules, Offer, offer_problems
from dispatcher.core.models import Channel, OutcomeKind


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Fallback(_Strict):
    channel: Channel
    template: str = Field(min_length=1)


class OutcomeAction(_Strict):
    """What the ladder does when a contact of a step ends with a given outcome."""

    fallback: Fallback | None = None
    invalidate: bool = Field(default=False, description="Mark the address the contact used as invalid.")
    escalate: bool = Field(default=False, description="Move the account to the next stage now.")


class Cadence(_Strict):
    """When a step's occurrences fall, in days after the account entered the stage."""

    days: tuple[int, ...] | None = Field(default=None, description="Explicit day offsets, e.g. [0, 3].")
    every: int | None = Field(default=None, ge=1, description="Every N days, starting at `start`.")
    start: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _one_form(self) -> Cadence:
        if (self.days is None) == (self.every is None):
            raise ValueError("give exactly one of `days` (a list of offsets) or `every` (N days)")
        days = self.days
        if days is not None and (not days or min(days) < 0 or list(days) != sorted(set(days))):
            raise ValueError("`days` must be distinct non-negative offsets in increasing order")
        return self


class Step(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    channel: Channel
    template: str = Field(min_length=1)
    cadence: Cadence
    max_attempts: int | None = Field(default=None, ge=1, description="Default: the number of `days`.")
    hour: int = Field(default=10, ge=0, le=23, description="Preferred local hour in the debtor's zone.")
    outcomes: dict[OutcomeKind, OutcomeAction] = Field(
        default_factory=dict, description="What to do when a contact of this step ends with an outcome."
    )

    @property
    def attempt_limit(self) -> int | None:
        if self.max_attempts is not None:
            return self.max_attempts
        return len(self.cadence.days) if self.cadence.days is not None else None


class Stage(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    title: str = ""
    days_past_due: tuple[int, int | None] = Field(description="[first, last] days past due; last null = open.")
    steps: tuple[Step, ...] = ()
    offers: tuple[str, ...] = Field(default=(), description="Ids of the offers (`offers`) this stage presents.")

    @property
    def first_day(self) -> int:
        return self.days_past_due[0]

    @property
    def last_day(self) -> int | None:
        return self.days_past_due[1]

    @model_validator(mode="after")
    def _coherent(self) -> Stage:
        first, last = self.days_past_due
        if first < 1:
            raise ValueError("days_past_due starts at 1 or later")
        if last is not None and last < first:
            raise ValueError("days_past_due: the last day comes before the first")
        names = [s.name for s in self.steps]
        if len(names) != len(set(names)):
            raise ValueError("step names must be unique within a stage")
        return self


class Window(_Strict):
    start: time = time(8, 0)
    end: time = time(21, 0)

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.end <= self.start:
            raise ValueError("a window's end must come after its start on the same day")
        return self


class Cap(_Strict):
    max: int = Field(ge=0, description="At most this many contacts ...")
    days: int = Field(ge=1, le=365, description="... in any rolling window of this many days.")


class QuietPeriod(_Strict):
    channel: Channel = Channel.VOICE
    days: int = Field(default=7, ge=1, description="Calendar days, the conversation's day counting as day 1.")


class HolidayRule(_Strict):
    """Rest days by the account's country (dispatcher.core.calendar): public holidays, the official schedule's
    whole rest periods, and plain weekends for the channels listed in `weekends`."""

    enabled: bool = Field(default=True, description="Public holidays, where the calendar knows the country.")
    channels: tuple[Channel, ...] = (Channel.VOICE, Channel.SMS, Channel.EMAIL)
    rest_periods: bool = Field(
        default=True, description="Weekend days inside an official rest period rest too (Golden Week)."
    )
    weekends: tuple[Channel, ...] = Field(
        default=(), description="Channels that also rest on every weekend day, adjusted working days excepted."
    )

    def rests(self, channel: Channel) -> bool:
        return (self.enabled and channel in self.channels) or channel in self.weekends


class Pressure(_Strict):
    """Contact pressure across channels: spacing, totals, and spreading of contacts that waited."""

    channels: tuple[Channel, ...] = Field(
        default=(Channel.SMS, Channel.VOICE, Channel.EMAIL, Channel.LETTER),
        description="The outbound channels spacing and totals count.",
    )
    not_counted: tuple[Channel, ...] = Field(
        default=(Channel.AGENCY,),
        description="The channels spacing and totals leave out, said so (no contact with the debtor: the agency); "
        "one also in `channels` is counted.",
    )
    spacing_minutes: int = Field(default=120, ge=0, le=1440, description="Minimum time between two contacts.")
    spacing_exempt_templates: tuple[str, ...] = Field(
        default=(), description="Templates (e.g. missed_call_sms) that neither wait for spacing nor hold others."
    )
    totals: tuple[Cap, ...] = Field(
        default=(Cap(max=3, days=1), Cap(max=12, days=7)), description="Rolling totals across `channels`."
    )
    spread_hours: int = Field(
        default=6, ge=0, le=12, description="Contacts that waited (a hold, a rest day, the night, an import) "
        "spread over this many hours after the moment they may go, by a hash of the account id.",
    )  # fmt: skip
    adhoc_max_deferral_hours: int = Field(
        default=72, ge=1, le=720, description="An ad-hoc contact not made within this long lapses."
    )


class BestTime(_Strict):
    """Calls at the local hour the debtor answered before, when that hour lies inside the window."""

    enabled: bool = False
    min_answers: int = Field(default=2, ge=1, le=50, description="Answered calls needed before the hour is used.")


def _default_windows() -> dict[Channel, Window | None]:
    return {
        Channel.SMS: Window(), Channel.VOICE: Window(), Channel.EMAIL: Window(), Channel.LETTER: None,
        Channel.AGENCY: None,
    }  # fmt: skip


def _default_caps() -> dict[Channel, tuple[Cap, ...]]:
    return {
        Channel.VOICE: (Cap(max=7, days=7),), Channel.SMS: (Cap(max=2, days=1),), Channel.EMAIL: (),
        Channel.LETTER: (), Channel.AGENCY: (),
    }  # fmt: skip


class CompliancePolicy(_Strict):
    windows: dict[Channel, Window | None] = Field(default_factory=_default_windows)
    holidays: HolidayRule = HolidayRule()
    caps: dict[Channel, tuple[Cap, ...]] = Field(default_factory=_default_caps)
    quiet_after_conversation: QuietPeriod | None = QuietPeriod()
    consent_not_required: tuple[Channel, ...] = Field(
        default=(Channel.EMAIL, Channel.LETTER, Channel.AGENCY),
        description="The channels that may reach an account without its consent; every other one needs it.",
    )
    pressure: Pressure = Pressure()

    @model_validator(mode="before")
    @classmethod
    def _no_require_consent(cls, data: object) -> object:
        # The old list of channels that need consent let every channel it did not name through, a new one too.
        if isinstance(data, dict) and "require_consent" in data:
            raise ValueError(
                "require_consent is replaced by consent_not_required: list the channels that need no consent "
                "(e.g. [email, letter, agency]); every other channel needs the account's consent"
            )
        return data

    def configured(self, channel: Channel) -> bool:
        """Whether the policy says how this channel may be used: a window (null: any time), caps (may be
        empty) and a pressure entry (counted or not). A channel it says nothing of is denied, not let through."""
        pressure = self.pressure
        return (
            channel in self.windows
            and channel in self.caps
            and (channel in pressure.channels or channel in pressure.not_counted)
        )

    def needs_consent(self, channel: Channel) -> bool:
        return channel not in self.consent_not_required


class PromiseRule(_Strict):
    grace_days: int = Field(default=2, ge=0, le=30)
    max_days_ahead: int = Field(default=30, ge=1, le=365)
    on_broken: Literal["escalate", "resume"] = "escalate"


class EventRules(_Strict):
    """How business events move an account; the defaults are the ones DESIGN.md describes."""

    promise_to_pay: PromiseRule = PromiseRule()
    hardship_hold_days: int = Field(default=30, ge=1, le=365)
    dispute: Literal["hold"] = "hold"
    payment_in_full: Literal["resolve"] = "resolve"


class Strategy(_Strict):
    version: Literal[1] = 1
    name: str = "default"
    costs: dict[Channel, Decimal] = Field(default_factory=dict, description="Estimated cost per contact.")
    compliance: CompliancePolicy = CompliancePolicy()
    events: EventRules = EventRules()
    best_time: BestTime = BestTime()
    offers: dict[Annotated[str, Field(pattern=OFFER_ID_PATTERN)], Offer] = Field(default_factory=dict)
    arrangements: ArrangementRules = ArrangementRules()
    stages: tuple[Stage, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _ladder(self) -> Strategy:
        problems = self._ladder_problems()
        if problems:
            # One line per problem, each already `path: message`; parse_strategy splits them again.
            raise ValueError("\n".join(problems))
        return self

    def _ladder_problems(self) -> list[str]:
        stages = [
            LadderStage(stage.name, stage.first_day, stage.last_day, [(t.name, t.channel, t.hour) for t in stage.steps])
            for stage in self.stages
        ]
        problems = ladder_problems(stages, self.compliance.windows)
        names = [(index, stage.name) for index, stage in enumerate(self.stages)]
        problems += offer_problems(names, self.arrangements, self.compliance.windows)
        return problems + policy_gaps(self.channels_used(), self.compliance)

    def channels_used(self) -> list[tuple[str, Channel]]:
        """(path, channel) of each step and fallback of the ladder."""
        used = []
        for s_index, stage in enumerate(self.stages):
            for t_index, step in enumerate(stage.steps):
                used.append((f"stages.{s_index}.steps.{t_index}.channel", step.channel))
                for kind, action in step.outcomes.items():
                    if action.fallback is not None:
                        path = f"stages.{s_index}.steps.{t_index}.outcomes.{kind}.fallback.channel"
                        used.append((path, action.fallback.channel))
        if self.arrangements.reminder is not None:
            used.append(("arrangements.reminder.channel", self.arrangements.reminder.channel))
        return used

    def stage_index(self, days_past_due: int) -> int | None:
        """The stage a number of days past due falls in, or None before the first."""
        for index in range(len(self.stages) - 1, -1, -1):
            if days_past_due >= self.stages[index].first_day:
                return index
        return None

    def step(self, stage: str, step: str) -> Step | None:
        for candidate in self.stages:
            if candidate.name == stage:
                return next((s for s in candidate.steps if s.name == step), None)
        return None


@dataclass(frozen=True)
class LadderStage:
    """What the ladder checks read of a stage: from the model, or from raw YAML that failed elsewhere."""

    name: str | None
    first_day: int | None
    last_day: int | None
    steps: list[tuple[str, Channel, int]]


def ladder_problems(stages: Sequence[LadderStage], windows: Mapping[Channel, Window | None]) -> list[str]:
    """The checks across stages: unique names, contiguous days past due, step hours inside the windows."""
    problems = []
    names = [s.name for s in stages]
    for index, name in enumerate(names):
        if name is not None and name in names[:index]:
            problems.append(f"stages.{index}.name: stage names must be unique; {name!r} is used twice")
    for index, (before, after) in enumerate(zip(stages, stages[1:], strict=False), start=1):
        if before.first_day is None or after.first_day is None:
            continue  # its own error is reported where it lies
        if before.last_day is None:
            problems.append(
                f"stages.{index - 1}.days_past_due: stage {before.name!r} is open-ended but is not the last stage"
            )
        elif after.first_day != before.last_day + 1:
            problems.append(
                f"stages.{index}.days_past_due: stage {after.name!r} must start the day after {before.name!r} "
                f"ends (day {before.last_day + 1}), not day {after.first_day}"
            )
    for s_index, stage in enumerate(stages):
        for t_index, (step, channel, hour) in enumerate(stage.steps):
            window = windows.get(channel)
            if window is not None and not window.start <= time(hour) < window.end:
                problems.append(
                    f"stages.{s_index}.steps.{t_index}.hour: stage {stage.name!r} step {step!r}: hour "
                    f"{hour} lies outside the {channel} window {window.start:%H:%M}-{window.end:%H:%M}"
                )
    return problems


def policy_gaps(used: Sequence[tuple[str, Channel]], policy: CompliancePolicy) -> list[str]:
    """A channel the ladder uses but the compliance policy does not describe, one line per missing entry:
    a new channel fails closed until the strategy gives it a window, caps and a pressure entry."""
    problems, seen = [], set()
    for path, channel in used:
        if channel in seen:
            continue
        seen.add(channel)
        pressure = policy.pressure
        missing = [
            (key, hint) for key, hint, present in (
                ("compliance.windows", "{start, end}, or null for any time", channel in policy.windows),
                ("compliance.caps", "a list of {max, days}, or [] for none", channel in policy.caps),
                ("compliance.pressure", "list it in `channels` (counted) or `not_counted`",
                 channel in pressure.channels or channel in pressure.not_counted),
            ) if not present
        ]  # fmt: skip
        problems += [f"{key}: channel {channel.value!r} ({path}) has no entry: give {hint}" for key, hint in missing]
    return problems


class StrategyError(ConfigurationError, ValueError):
    """The strategy file is unreadable or invalid; `errors` holds one `path: message` line each."""

    def __init__(self, source: str, errors: list[str]):
        super().__init__(f"{source}: {len(errors)} error(s)\n" + "\n".join(errors))
        self.source = source
        self.errors = errors


def _error_lines(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"] and error["type"] == "value_error":
            lines.extend(message.split("\n"))  # ladder problems carry their own paths
        else:
            lines.append(f"{path}: {message}")
    return lines


def parse_strategy(text: str, source: str = "<strategy>") -> Strategy:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StrategyError(source, [f"(yaml): {exc}"]) from None
    if not isinstance(data, dict):
        raise StrategyError(source, ["(top level): expected a mapping with `stages`"])
    try:
        return Strategy.model_validate(data)
    except ValidationError as exc:
        raise StrategyError(source, _error_lines(exc)) from None


def load_strategy(path: Path) -> Strategy:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StrategyError(str(path), [f"(file): {exc.strerror}"]) from None
    return parse_strategy(text, str(path))
