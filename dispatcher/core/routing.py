"""Which providers may carry a contact: the route of its channel for the debtor's country (DISPATCHER_ROUTES).

Pure: the settings' table, the account and the channel in, the providers in the route's order out. The
workers choose one of them by health (workers/routing.py); the rules never see a provider.

The debtor's country is where the channel reaches them: a phone channel's number's region (phonenumbers:
+86 is CN, +1 212 is US), else the account's postal address's country, else `*` (any). A channel the table
does not list, or a country it lists no route for with no `*`, keeps the channel's own provider only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import phonenumbers

from dispatcher.core.channel_registry import AddressKind, Channel
from dispatcher.core.models import Account

ANY_COUNTRY = "*"
Routes = Mapping[str, Mapping[str, Sequence[str]]]  # channel -> country -> providers, as settings.routes


@lru_cache(maxsize=65_536)
def phone_region(number: str) -> str:
    """The ISO country of an E.164 number (`*` when phonenumbers cannot place it); a debtor's number is
    read once per worker, not at every contact."""
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        return ANY_COUNTRY
    return region if region and region != phonenumbers.UNKNOWN_REGION else ANY_COUNTRY


def debtor_country(account: Account | None, channel: Channel) -> str:
    """The country the contact goes to: the phone's region on a phone channel, else the postal address's."""
    if account is None:
        return ANY_COUNTRY
    if channel.address is AddressKind.PHONE and account.phone:
        return phone_region(account.phone)
    if account.address is not None:
        return account.address.country
    return ANY_COUNTRY


def route_of(routes: Routes, channel: Channel, account: Account | None, own: str) -> tuple[str, ...]:
    """The providers that may carry a contact of `channel` to this debtor, in the route's order; `own` (the
    channel's own provider) alone when the table has nothing to say."""
    table = routes.get(channel.value)
    if not table:
        return (own,)
    country = debtor_country(account, channel)
    providers = table.get(country) or table.get(ANY_COUNTRY)
    return tuple(providers) if providers else (own,)
