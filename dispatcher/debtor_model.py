"""How debtors behave, for `dispatcher simulate` and `make demo` alike (pure: no clock, no I/O).

Each debtor gets a seeded profile — what they will do once a contact moves them (pay in full, pay the
minimum, promise, agree an instalment plan, dispute, reply STOP, never answer), whether they keep what they
promise, whether their number reaches someone else — and reacts to each contact that reached them, by
channel and stage; whether a call is picked up depends on the debtor's local hour.

Every draw comes from a stream of its own per debtor and purpose, seeded by (seed, account id, purpose)
through BLAKE2b (never Python's `hash()`, which changes between processes): the same debtor behaves the
same in every run and under every strategy, as far as the contacts they get are the same (common random
numbers for comparing strategies). The parameters live in config/debtors.yaml (docs/strategy.md#the-debtor-model).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from config.errors import ConfigurationError
from config.settings_fields import CONFIG_DIR
from dispatcher.core.models import Channel

DEFAULT_DEBTORS = CONFIG_DIR / "debtors.yaml"
Intent = Literal["pay_in_full", "pay_minimum", "promise", "plan", "dispute", "stop", "never_answer"]
INTENTS: tuple[Intent, ...] = ("pay_in_full", "pay_minimum", "promise", "plan", "dispute", "stop", "never_answer")
CallAnswer = Literal["answered", "no_answer", "busy", "voicemail", "wrong_party"]
Share = Annotated[float, Field(ge=0, le=1)]
CENT = Decimal("0.01")
# What a contact is called in `act_after`: a call counts only as a conversation; the rest once delivered.
REACH_KEYS = {Channel.VOICE: "call", Channel.SMS: "sms", Channel.EMAIL: "email", Channel.LETTER: "letter"}


DEFAULT_INTENTS: dict[Intent, float] = {
    "pay_in_full": 0.42, "pay_minimum": 0.11, "promise": 0.15, "plan": 0.12,
    "dispute": 0.03, "stop": 0.04, "never_answer": 0.13,
}  # fmt: skip
DEFAULT_UNANSWERED: dict[Literal["no_answer", "busy", "voicemail"], float] = {
    "no_answer": 0.65, "busy": 0.1, "voicemail": 0.25,
}  # fmt: skip
DEFAULT_ACT_AFTER: dict[Literal["call", "sms", "email", "letter", "wechat"], float] = {
    "call": 0.6, "sms": 0.15, "email": 0.06, "letter": 0.2, "wechat": 0.12,
}  # fmt: skip


class DebtorModelError(ConfigurationError, ValueError):
    """The debtor model's file is unreadable or invalid; `errors` holds one `path: message` line each."""

    def __init__(self, source: str, errors: list[str]):
        super().__init__(f"{source}: {len(errors)} error(s)\n" + "\n".join(errors))
        self.source = source
        self.errors = errors


class DebtorParameters(BaseModel):
    """config/debtors.yaml, field by field; every field has the default documented in docs/strategy.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    intents: dict[Intent, Share] = Field(
        default_factory=lambda: dict(DEFAULT_INTENTS),
        description="Shares of debtors by what a contact that moves them makes them do; they sum to 1.",
    )
    promise_kept: Share = Field(default=0.6, description="Chance a promise-to-pay debtor pays by the promised day.")
    plan_kept: Share = Field(default=0.55, description="Chance a plan debtor pays every instalment.")
    wrong_number: Share = Field(default=0.05, description="Share of phone numbers that reach someone else.")
    answer_by_local_hour: dict[Annotated[int, Field(ge=0, le=23)], Share] = Field(
        default_factory=lambda: {
            8: 0.10,
            9: 0.12,
            10: 0.13,
            11: 0.14,
            12: 0.18,
            13: 0.15,
            14: 0.12,
            15: 0.12,
            16: 0.14,
            17: 0.20,
            18: 0.25,
            19: 0.27,
            20: 0.22,
        },  # fmt: skip
        description="Chance a call at this local hour is picked up by the debtor; hours left out: 0.05.",
    )
    unanswered: dict[Literal["no_answer", "busy", "voicemail"], Share] = Field(
        default_factory=lambda: dict(DEFAULT_UNANSWERED),
        description="How a call the debtor does not pick up ends; weights.",
    )
    act_after: dict[Literal["call", "sms", "email", "letter", "wechat"], Share] = Field(
        default_factory=lambda: dict(DEFAULT_ACT_AFTER),
        description="Chance one contact that reached the debtor (a call only when answered) moves them to act.",
    )
    stage_pressure: dict[str, Annotated[float, Field(ge=0, le=10)]] = Field(
        default_factory=lambda: {"reminder": 1.0, "second_notice": 1.0, "early": 1.1, "continuous": 1.2, "letter": 1.5},
        description="Multiplier of act_after by the stage the contact belongs to; stages left out: 1.",
    )
    self_service: Share = Field(
        default=0.3,
        description="Chance a promise or plan debtor moved by a written contact acts online, without a call.",
    )
    plan_offers: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: {"instalment_3": 0.5, "instalment_6": 0.35, "instalment_12": 0.15},
        description="The continuous stage's instalment offers a plan debtor picks from (offer id → weight); "
        "the id ends in the number of monthly instalments.",
    )
    promise_days: tuple[Annotated[int, Field(ge=0, le=30)], Annotated[int, Field(ge=0, le=30)]] = (3, 14)
    response_hours: tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)]] = (1.0, 72.0)
    max_promises: Annotated[int, Field(ge=1, le=20)] = 3
    minimum_every_days: Annotated[int, Field(ge=1, le=365)] = 30

    @model_validator(mode="after")
    def _consistent(self) -> DebtorParameters:
        total = sum(self.intents.values())
        if abs(total - 1) > 1e-6:
            raise ValueError(f"intents: the shares must sum to 1, not {total:g}")
        if sum(self.unanswered.values()) <= 0:
            raise ValueError("unanswered: give at least one weight above 0")
        for name in ("promise_days", "response_hours"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: [{low}, {high}] must be [shortest, longest]")
        for offer in self.plan_offers:
            if _months(offer) is None:
                raise ValueError(f"plan_offers.{offer}: the offer id must end in its months, e.g. instalment_6")
        return self


def _day_of(today: date, after: timedelta) -> date:
    """The local day an action `after` the contact falls on, at the latest: dates it names start there."""
    return today + timedelta(days=-(-after // timedelta(days=1)))


def _months(offer: str) -> int | None:
    tail = offer.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() and 1 <= int(tail) <= 60 else None


def parse_debtor_parameters(text: str, source: str = "<debtors>") -> DebtorParameters:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DebtorModelError(source, [f"(yaml): {exc}"]) from None
    if data is not None and not isinstance(data, dict):
        raise DebtorModelError(source, ["(top level): expected a mapping of parameters"])
    try:
        return DebtorParameters.model_validate(data or {})
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {message}" if where else message)
        raise DebtorModelError(source, lines) from None


def load_debtor_parameters(path: Path) -> DebtorParameters:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DebtorModelError(str(path), [f"(file): {exc.strerror}"]) from None
    return parse_debtor_parameters(text, str(path))


def stream(seed: int, account_id: str, purpose: str) -> random.Random:
    """The random stream of one debtor for one purpose: the same in every process and run."""
    digest = hashlib.blake2b(f"{seed}\x1f{account_id}\x1f{purpose}".encode(), digest_size=16).digest()
    return random.Random(int.from_bytes(digest, "big"))


@dataclass(frozen=True)
class Instalment:
    due: date
    amount: Decimal


@dataclass(frozen=True)
class Action:
    """Something the debtor does `after` the contact that moved them.

    kind: pay (amount None: whatever is owed then), promise, plan (offer, instalments, paid: how many of them
    the debtor will pay), dispute, stop (an SMS reply), wrong_party (who answered says so)."""

    after: timedelta
    kind: Literal["pay", "promise", "plan", "dispute", "stop", "wrong_party"]
    amount: Decimal | None = None
    due: date | None = None
    offer: str | None = None
    instalments: tuple[Instalment, ...] = ()
    paid: int = 0


@dataclass
class Debtor:
    """One debtor's profile and what they have done so far."""

    account_id: str
    intent: Intent
    keeps: bool
    wrong_number: bool
    params: DebtorParameters
    streams: dict[str, random.Random]
    promises: int = 0
    acted: bool = False  # a plan, a dispute, a STOP or a payment in full happens once
    quiet_until: date | None = None  # a promise or a minimum payment: no new action before this day

    def call(self, local_hour: int) -> CallAnswer:
        """How a call at this local hour ends, on the debtor's side."""
        draw = self.streams["answer"].random()
        picked_up = draw < self.params.answer_by_local_hour.get(local_hour, 0.05)
        if picked_up and self.wrong_number:
            return "wrong_party"
        if picked_up and self.intent != "never_answer":
            return "answered"
        ends = self.params.unanswered
        return self.streams["answer"].choices(list(ends), weights=list(ends.values()))[0]

    def react(
        self, channel: Channel, stage: str, today: date, owed: Decimal, minimum: Decimal, conversation: bool
    ) -> list[Action]:
        """What the debtor does after a contact that reached them (`conversation`: an answered call).

        `today` is the debtor's local date, `owed` what is still unpaid, `minimum` the account's minimum."""
        rng = self.streams["react"]
        if channel is Channel.VOICE and self.wrong_number:
            return [Action(timedelta(minutes=1), "wrong_party")] if conversation else []
        if owed <= 0 or self.acted or (self.quiet_until is not None and today < self.quiet_until):
            return []
        if self.intent == "stop":
            return self._stop(channel)
        chance = self.params.act_after.get(REACH_KEYS.get(channel, channel.value), 0.0)  # type: ignore[call-overload]
        chance *= self.params.stage_pressure.get(stage, 1.0)
        if self.intent in ("promise", "plan") and not conversation:
            chance *= self.params.self_service
        if self.intent == "never_answer" or rng.random() >= min(chance, 1.0):
            return []
        soon = timedelta(minutes=rng.uniform(1, 15)) if conversation else self._delay(rng)
        if self.intent == "pay_in_full":
            self.acted = True
            return [Action(self._delay(rng), "pay")]
        if self.intent == "pay_minimum":
            self.quiet_until = today + timedelta(days=self.params.minimum_every_days)
            return [Action(self._delay(rng), "pay", amount=min(minimum, owed) if minimum > 0 else owed)]
        if self.intent == "dispute":
            self.acted = True
            return [Action(soon, "dispute")]
        if self.intent == "promise":
            return self._promise(rng, soon, today, owed)
        return self._plan(rng, soon, today, owed)

    def _stop(self, channel: Channel) -> list[Action]:
        if channel is not Channel.SMS:
            return []
        self.acted = True
        return [Action(timedelta(minutes=self.streams["react"].uniform(1, 30)), "stop")]

    def _delay(self, rng: random.Random) -> timedelta:
        return timedelta(hours=rng.uniform(*self.params.response_hours))

    def _promise(self, rng: random.Random, soon: timedelta, today: date, owed: Decimal) -> list[Action]:
        if self.promises >= self.params.max_promises:
            return []
        self.promises += 1
        days = rng.randint(*self.params.promise_days)
        due = _day_of(today, soon) + timedelta(days=days)
        self.quiet_until = due + timedelta(days=3)
        actions = [Action(soon, "promise", amount=owed, due=due)]
        if self.keeps:  # paid on a day up to the promised one, the promised amount
            actions.append(Action(soon + timedelta(days=rng.uniform(0.2, days + 0.5)), "pay", amount=owed))
        return actions

    def _plan(self, rng: random.Random, soon: timedelta, today: date, owed: Decimal) -> list[Action]:
        self.acted = True
        offers = self.params.plan_offers
        offer = rng.choices(list(offers), weights=list(offers.values()))[0]
        months = _months(offer) or 1
        share = (owed / months).quantize(CENT, rounding=ROUND_DOWN)
        first = _day_of(today, soon) + timedelta(days=rng.randint(*self.params.promise_days))
        instalments = tuple(
            Instalment(first + timedelta(days=30 * index), share if index < months - 1 else owed - share * index)
            for index in range(months)
        )
        paid = months if self.keeps else rng.randrange(months)  # a broken plan stops at one instalment
        actions = [Action(soon, "plan", offer=offer, instalments=instalments, paid=paid)]
        for index, instalment in enumerate(instalments[:paid]):
            early = timedelta(days=rng.uniform(0, 3))
            pay_at = soon + timedelta(days=(instalment.due - today).days) - early
            actions.append(Action(max(pay_at, soon), "pay", amount=instalment.amount, offer=offer, paid=index + 1))
        return actions


class DebtorModel:
    """Every debtor of one run, made on first use from (seed, account id)."""

    def __init__(self, params: DebtorParameters, seed: int) -> None:
        self.params = params
        self.seed = seed
        self._debtors: dict[str, Debtor] = {}

    def debtor(self, account_id: str) -> Debtor:
        found = self._debtors.get(account_id)
        if found is None:
            found = self._debtors[account_id] = self._profile(account_id)
        return found

    def _profile(self, account_id: str) -> Debtor:
        rng = stream(self.seed, account_id, "profile")
        intents = self.params.intents
        intent = rng.choices(list(intents), weights=list(intents.values()))[0]
        kept = {"promise": self.params.promise_kept, "plan": self.params.plan_kept}.get(intent, 1.0)
        keeps = rng.random() < kept
        wrong_number = rng.random() < self.params.wrong_number
        streams = {purpose: stream(self.seed, account_id, purpose) for purpose in ("answer", "react")}
        return Debtor(account_id, intent, keeps, wrong_number, self.params, streams)
