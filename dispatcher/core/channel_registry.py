"""The channels the domain knows: a registry, not a closed list, so a channel is added without editing an enum.

A `Channel` is its name, a string (it compares, hashes and serialises as one), that the registry knows: the
six shipped ones are registered here, and `register_channel` adds another with the kind of address it
reaches. Everything that validates a channel (an account's consent, a strategy's step, a task's payload)
asks the registry at the moment it validates, so a channel registered later is known from then on.

What a channel is *allowed* to do is never implied by its being known. It fails closed everywhere else:
an account's consent names its channels (`DEFAULT_CONSENT` is the first five shipped ones: never wechat,
never a channel registered since), the strategy lists the channels that need no consent, and a channel without a window,
caps and pressure entry in the strategy is refused by `strategy check` and denied at the last look
(dispatcher/core/strategy.py, compliance.py). The channel's sending side (its adapter and queue) is
registered apart, in `channels.REGISTRY`, which the core may not import.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema


class AddressKind(StrEnum):
    PHONE = "phone"
    EMAIL = "email"
    POSTAL = "postal"
    WECHAT = "wechat"  # an official account's openid for the debtor: neither a phone nor an email


_REGISTERED: dict[str, Channel] = {}  # name -> the one Channel of that name, in registration order
_SCHEMA_REF = f"{__name__}.Channel:registry"  # one component, "Channel", in a JSON schema, as the enum had
_NAME = re.compile(r"[a-z][a-z0-9_]{0,19}\Z")  # also a Celery queue's name and a rate limit's key


class _Registered(type):
    """`Channel` iterates over the registered channels and answers `name in Channel`, as an enum did."""

    def __iter__(cls) -> Iterator[Channel]:
        return iter(tuple(_REGISTERED.values()))

    def __len__(cls) -> int:
        return len(_REGISTERED)

    def __contains__(cls, value: object) -> bool:
        return isinstance(value, str) and value in _REGISTERED


class Channel(str, metaclass=_Registered):
    """A registered channel's name. `Channel("sms")` is the registered one (the same object each time, so
    `is` compares as it did with the enum); an unknown name raises ValueError."""

    SMS: ClassVar[Channel]
    VOICE: ClassVar[Channel]
    EMAIL: ClassVar[Channel]
    LETTER: ClassVar[Channel]
    AGENCY: ClassVar[Channel]
    WECHAT: ClassVar[Channel]

    address: AddressKind | None  # the kind of address it reaches; None: no address of the debtor's (agency)

    def __new__(cls, value: object) -> Channel:
        if isinstance(value, str):
            known = _REGISTERED.get(value)
            if known is not None:
                return known
        raise ValueError(f"{value!r} is not a channel; known: {', '.join(_REGISTERED)}")

    @property
    def value(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"Channel({self.value!r})"

    def __str__(self) -> str:
        return str.__str__(self)

    def __reduce__(self) -> tuple[type[Channel], tuple[str]]:
        return Channel, (self.value,)

    def __copy__(self) -> Channel:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Channel:
        return self

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            _validate, core_schema.str_schema(), serialization=core_schema.to_string_ser_schema(), ref=_SCHEMA_REF
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # The same schema the enum gave, listing the channels registered when the schema is drawn.
        return {"enum": [channel.value for channel in _REGISTERED.values()], "title": "Channel", "type": "string"}


def _validate(value: str) -> Channel:
    try:
        return _REGISTERED[value]
    except KeyError:
        # The enum's own wording, so an error names the channels as it always did.
        names = [repr(name) for name in _REGISTERED]
        expected = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else "".join(names)
        raise PydanticCustomError("enum", "Input should be {expected}", {"expected": expected}) from None


def register_channel(name: str, address: AddressKind | None) -> Channel:
    """Make `name` a channel reaching `address`; registering it again the same way returns the same one.

    Known does not mean allowed: accounts stored before have not consented to it, and a strategy must give
    it a window, caps and a pressure entry before a step may use it."""
    if not _NAME.match(name):
        raise ValueError(f"channel name {name!r} must be lower-case letters, digits and _, at most 20")
    known = _REGISTERED.get(name)
    if known is not None:
        if known.address is not address:
            raise ValueError(f"channel {name!r} is registered already, reaching {known.address}, not {address}")
        return known
    channel = str.__new__(Channel, name)
    channel.address = address
    _REGISTERED[name] = channel
    return channel


Channel.SMS = register_channel("sms", AddressKind.PHONE)
Channel.VOICE = register_channel("voice", AddressKind.PHONE)
Channel.EMAIL = register_channel("email", AddressKind.EMAIL)
Channel.LETTER = register_channel("letter", AddressKind.POSTAL)
Channel.AGENCY = register_channel("agency", None)
# A WeChat official account's template messages, to the debtor's openid. Shipped, but outside DEFAULT_CONSENT:
# an account reaches it only when its consent names it (and it has an openid).
Channel.WECHAT = register_channel("wechat", AddressKind.WECHAT)

# What an account upserted without `consent` has consented to: the five channels the API has always
# promised as "all" when the field is left out. A constant, never the registry: a channel registered later
# is consented to only by an account that names it.
DEFAULT_CONSENT = frozenset({Channel.SMS, Channel.VOICE, Channel.EMAIL, Channel.LETTER, Channel.AGENCY})


class _Addresses(Mapping[Channel, "AddressKind | None"]):
    """channel -> the kind of address it reaches, for every registered channel."""

    def __getitem__(self, channel: Channel) -> AddressKind | None:
        try:
            return _REGISTERED[channel].address
        except (KeyError, TypeError):
            raise KeyError(channel) from None

    def __iter__(self) -> Iterator[Channel]:
        return iter(tuple(_REGISTERED.values()))

    def __len__(self) -> int:
        return len(_REGISTERED)


ADDRESS_OF_CHANNEL: Mapping[Channel, AddressKind | None] = _Addresses()
