"""The agencies of DISPATCHER_AGENCIES as providers of the agency channel: one `ProviderSpec` each, made from
the settings at start (they are listed at run time, not declared by a module as channels.EXTRA_PROVIDERS are).

Each one's key is `agency.NAME` (channels.provider_key), so each agency has its own adapter (its URL and
key), breaker, rate limit (DISPATCHER_RATE_LIMITS by `agency.NAME`, else `agency`) and reconciliation (the
attempt names the agency; workers/reconcile.py asks only it). Which agency takes an account is the stable
placement of config.agencies, chosen by workers/routing.py; a hand-off never fails over to another agency.
"""

from __future__ import annotations

from functools import partial

from channels.agency import AgencyAdapter, with_case_file
from channels.base import ChannelAdapter
from channels.spec import ProviderSpec
from config.agencies import Agency
from config.settings import Settings

CHANNEL = "agency"


def _adapter(agency: Agency, settings: Settings, **options: object) -> ChannelAdapter:
    return AgencyAdapter(settings, agency=agency, **options)  # type: ignore[arg-type]


def agency_provider(agency: Agency) -> ProviderSpec:
    """One agency of DISPATCHER_AGENCIES as a provider of the agency channel."""
    return ProviderSpec(name=agency.name, channel=CHANNEL, adapter=partial(_adapter, agency), compose=with_case_file)


def agency_providers(settings: Settings) -> dict[tuple[str, str], ProviderSpec]:
    """(channel, provider) -> spec for every agency the settings list (none when DISPATCHER_AGENCIES is unset)."""
    return {(CHANNEL, agency.name): agency_provider(agency) for agency in settings.agencies}
