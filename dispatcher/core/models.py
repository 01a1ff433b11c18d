"""The domain's values: accounts, their state, history entries, contacts and plans.

Time is timezone-aware UTC everywhere; money is Decimal. Accounts and state are pydantic models because
they cross the boundary (API, imports, Redis); plan results are plain frozen dataclasses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

# Amounts live in their own module (the arrangement's terms need them below the models); re-exported here.
from dispatcher.core.arrangements.terms import Arrangement

# The channels live in their registry; re-exported here, where the rest of the domain's values are.
from dispatcher.core.channel_registry import ADDRESS_OF_CHANNEL as ADDRESS_OF_CHANNEL
from dispatcher.core.channel_registry import DEFAULT_CONSENT as DEFAULT_CONSENT
from dispatcher.core.channel_registry import AddressKind as AddressKind
from dispatcher.core.channel_registry import Channel as Channel
from dispatcher.core.money import Money as Money
from dispatcher.core.money import PositiveMoney as PositiveMoney


class OutcomeKind(StrEnum):
    """What a provider or a person reports about one contact."""

    SENT = "sent"  # accepted by the provider; nothing known yet about delivery
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    ANSWERED = "answered"  # a conversation with the debtor (starts the quiet period for calls)
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    VOICEMAIL = "voicemail"
    BOUNCED = "bounced"
    RETURNED = "returned"  # letter returned to sender
    OPTED_OUT = "opted_out"  # provider refuses: the recipient opted out (Twilio 21610)
    INVALID_ADDRESS = "invalid_address"  # invalid or unroutable number, bad mailbox
    WRONG_PARTY = "wrong_party"
    REFUSED = "refused"
    HANDED_OFF = "handed_off"  # agency accepted the case file


class ClaimStatus(StrEnum):
    """Where a contact id stands in the claim ledger (the state machine drawn in dispatcher/state/claims.py,
    which keeps it in Redis). Here, apart from the ledger, so the pure rules can read a claim's status
    without Redis; the ledger's Lua scripts spell the same values, inside Redis, where the enum cannot reach."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"


# The request may have left: only the provider's word ends these (workers/reconcile.py asks it).
IN_DOUBT = frozenset({ClaimStatus.SENDING, ClaimStatus.UNKNOWN})

# Pydantic checks `pattern=` with Rust's regex, where `$` is the end of the text; in Python's `re` it also
# matches before a final newline, so "A1\n" would pass a re.match. Python code checks ids with ACCOUNT_ID
# and CONTACT_ID, anchored with \Z (which Rust's regex does not know, hence two spellings of each).
ACCOUNT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
# account/stage/step/occurrence, then /fb for an outcome's fallback (planner.ContactRef); an ad-hoc
# contact's step is the caller's key.
CONTACT_ID_PATTERN = ACCOUNT_ID_PATTERN[:-1] + r"/[a-z][a-z0-9_]{0,39}/[A-Za-z0-9_\-]{1,64}/[0-9]{1,6}(/fb)?$"
ACCOUNT_ID = re.compile(ACCOUNT_ID_PATTERN[:-1] + r"\Z")
CONTACT_ID = re.compile(CONTACT_ID_PATTERN[:-1] + r"\Z")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+\Z")  # \Z: a final newline would reach the mail headers


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """A cached ZoneInfo; constructing one per call is measurably slow in the planner."""
    return ZoneInfo(name)


def _valid_zone(name: str) -> str:
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {name!r}, e.g. 'Asia/Shanghai'") from None
    return name


_E164 = re.compile(r"\+([1-9]\d{6,14})\Z")  # \Z: "$" would also match before a final newline


@lru_cache(maxsize=4096)
def _possible_length(country_code: int, national_length: int) -> bool:
    """phonenumbers' "possible" test depends only on the country code and the national number's length."""
    example = phonenumbers.PhoneNumber(country_code=country_code, national_number=int("1" * national_length))
    return bool(phonenumbers.is_possible_number(example))


@lru_cache(maxsize=512)
def _prefix_pattern(country_code: int) -> re.Pattern[str] | None:
    region = COUNTRY_CODE_TO_REGION_CODE[country_code][0]
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    pattern = metadata.national_prefix_for_parsing if metadata is not None else None
    return re.compile(pattern) if pattern else None


def _may_carry_prefix(country_code: int, national: str) -> bool:
    """Numbers phonenumbers would strip a national or carrier prefix from go the slow, exact way."""
    pattern = _prefix_pattern(country_code)
    return national.startswith("0") or (pattern is not None and pattern.match(national) is not None)


def _canonical_e164(number: str) -> str | None:
    """The number itself when it is already canonical E.164 and possible; None to take the slow path."""
    match = _E164.match(number)
    if match is None:
        return None
    digits = match.group(1)
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code in COUNTRY_CODE_TO_REGION_CODE:
            national = digits[size:]
            if _may_carry_prefix(code, national) or not _possible_length(code, len(national)):
                return None
            return number
    return None


# What a written number may hold besides its digits. phonenumbers also reads an extension ("x123", "ext. 5",
# ";ext=5", "#5") and letters ("+1 800 FLOWERS") and formats the number without them: taken silently, the
# number would reach someone else's desk or a switchboard. An SMS cannot reach an extension and the calls
# are automated, so a number with one is refused rather than cut short.
_DIALLABLE = re.compile(r"\+[0-9 ().\-]+\Z")
_EXTENSION = re.compile(r"[xX#;]")  # x123, ext. 5, ;ext=5, #5


def _valid_phone(number: str) -> str:
    fast = _canonical_e164(number)
    if fast is not None:
        return fast  # parsing costs ~50 µs a number, a third of ingesting an account
    if not _DIALLABLE.match(number):
        if number.startswith("+") and _EXTENSION.search(number):
            raise ValueError(
                "phone has an extension, which neither an SMS nor an automated call can reach: give the "
                "number alone in E.164 form, e.g. +8613800138000"
            )
        raise ValueError(
            "phone must be in E.164 form, e.g. +8613800138000: a '+', then digits (spaces, '-', '.' and "
            "parentheses between them are ignored)"
        )
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        raise ValueError("phone must be in E.164 form, e.g. +8613800138000") from None
    if not phonenumbers.is_possible_number(parsed):
        raise ValueError("phone is not a possible number for its country code")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _valid_email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("email must look like name@domain.tld")
    return value


TimeZoneName = Annotated[str, AfterValidator(_valid_zone)]
PhoneNumber = Annotated[str, AfterValidator(_valid_phone)]
EmailAddress = Annotated[str, AfterValidator(_valid_email)]
# An openid is what one official account calls one follower: 28 characters of letters, digits, - and _ as
# WeChat issues them today; the bounds leave room without letting a phone number or an email through.
WechatOpenId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{16,64}$")]


class PostalAddress(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    line1: str = Field(min_length=1, max_length=200)
    line2: str | None = Field(default=None, max_length=200)
    city: str = Field(min_length=1, max_length=100)
    region: str | None = Field(default=None, max_length=100)
    postal_code: str = Field(min_length=1, max_length=20)
    country: str = Field(pattern=r"^[A-Z]{2}$")


class Account(BaseModel):
    """A delinquent account as the bank describes it; upserts replace it whole."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=ACCOUNT_ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    locale: Literal["zh-CN", "en"] = "en"
    timezone: TimeZoneName = "UTC"
    extra_timezones: tuple[TimeZoneName, ...] = Field(
        default=(), description="Other plausible zones (area code vs address); windows hold in all of them."
    )
    country: str = Field(default="CN", pattern=r"^[A-Z]{2}$")
    phone: PhoneNumber | None = None
    email: EmailAddress | None = None
    address: PostalAddress | None = None
    wechat_openid: WechatOpenId | None = Field(
        default=None,
        description="The debtor's openid at the bank's WeChat official account (the wechat channel's address; "
        "the channel also needs `wechat` in consent).",
    )
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    balance: Money
    minimum_payment: Money = Decimal("0")
    due_date: date = Field(description="The missed due date; days past due count from it.")
    consent: frozenset[Channel] = Field(
        default=DEFAULT_CONSENT, description="Channels with the debtor's prior consent to automated contact."
    )

    def address_for(self, channel: Channel) -> str | PostalAddress | None:
        kind = channel.address
        if kind is AddressKind.PHONE:
            return self.phone
        if kind is AddressKind.EMAIL:
            return self.email
        if kind is AddressKind.POSTAL:
            return self.address
        if kind is AddressKind.WECHAT:
            return self.wechat_openid
        return "agency"


class Promise(BaseModel):
    model_config = ConfigDict(frozen=True)

    amount: Money
    due: date
    made_at: datetime
    paid_at_promise: Money = Decimal("0")


AccountStatus = Literal["active", "resolved", "handed_off"]


class AccountState(BaseModel):
    """What events have made of the account; only `dispatcher.events.apply_event` changes it."""

    model_config = ConfigDict(frozen=True)

    status: AccountStatus = "active"
    paid: Money = Decimal("0")
    do_not_contact: bool = False
    holds: dict[str, date | None] = Field(default_factory=dict, description="hold reason → until (None: open)")
    opted_out: frozenset[Channel] = frozenset()
    invalid_addresses: frozenset[AddressKind] = frozenset()
    promise: Promise | None = None
    stage_floor: int = 0
    floor_since: date | None = None
    arrangements: tuple[Arrangement, ...] = Field(default=(), description="Payment plans agreed, oldest first.")

    @field_validator("holds")
    @classmethod
    def _hold_reasons(cls, value: dict[str, date | None]) -> dict[str, date | None]:
        return dict(sorted(value.items()))


class AccountRecord(BaseModel):
    """One account as stored: the bank's description, its state, the last plan's summary, and what its
    history held of the attempts that left it for the record (dispatcher.record.lookback.marked)."""

    model_config = ConfigDict(frozen=True)

    account: Account
    state: AccountState = Field(default_factory=AccountState)
    stage: str | None = None
    next_wakeup: datetime | None = None
    # stage -> step -> (highest occurrence attempted, attempts, *occurrences whose fallback was attempted):
    # every occurrence up to the highest counts as attempted; the fallbacks, few, are named exactly.
    trimmed: dict[str, dict[str, tuple[int, ...]]] = Field(default_factory=dict)
    # The strategy variant the account is worked under and the SHA-256 of that strategy's version, set at its
    # first plan (dispatcher.core.experiments.arms); None on an account stored before variants were recorded.
    variant: str | None = None
    strategy_sha256: str | None = None


HistoryKind = Literal["attempt", "outcome", "event"]


class HistoryEntry(BaseModel):
    """One fact in an account's history: an attempt claimed, an outcome, or a business event."""

    model_config = ConfigDict(frozen=True)

    kind: HistoryKind
    at: datetime
    contact_id: str | None = None
    channel: Channel | None = None
    outcome: OutcomeKind | None = None
    event: str | None = None
    detail: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Contact:
    """A contact the planner wants made now; `id` is the same however often the account is re-planned."""

    id: str
    account_id: str
    channel: Channel
    template: str
    stage: str
    step: str
    due_at: datetime


Verdict = Literal["send", "defer", "deny"]


@dataclass(frozen=True, slots=True)
class Decision:
    """The compliance verdict on one candidate contact, written to the audit trail."""

    contact_id: str
    channel: Channel
    verdict: Verdict
    rule: str | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    account_id: str
    stage: str | None
    contacts: tuple[Contact, ...] = ()
    decisions: tuple[Decision, ...] = ()
    next_wakeup: datetime | None = None
    note: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


FALLBACK_SUFFIX = "fb"


@dataclass(frozen=True, slots=True)
class ContactRef:
    """The parts of a contact id: account/stage/step/occurrence, plus /fb for an outcome's fallback."""

    account_id: str
    stage: str
    step: str
    occurrence: int
    fallback: bool = False

    def __str__(self) -> str:
        base = f"{self.account_id}/{self.stage}/{self.step}/{self.occurrence}"
        return f"{base}/{FALLBACK_SUFFIX}" if self.fallback else base

    @classmethod
    def parse(cls, contact_id: str) -> ContactRef | None:
        parts = contact_id.split("/")
        if len(parts) not in (4, 5) or not parts[3].isdigit():
            return None
        if len(parts) == 5 and parts[4] != FALLBACK_SUFFIX:
            return None
        return cls(parts[0], parts[1], parts[2], int(parts[3]), len(parts) == 5)


def account_of(contact_id: str) -> str:
    """The account a contact id belongs to: its first segment (CONTACT_ID is the whole format). The one
    place that reads it, so the ledger, the tasks and the webhooks agree on whose contact it is."""
    return contact_id.split("/", 1)[0]
