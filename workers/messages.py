"""From a contact and its account's fresh record to a rendered, addressed OutboundMessage.

Personal data is read here, in the worker, from the store; tasks carry only ids. The worker builds a
channel-neutral Draft from the account; the channel's spec (channels.REGISTRY) composes its message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from channels import spec_of
from channels.base import OutboundMessage
from channels.render import Renderer
from channels.spec import Draft
from config.settings import Settings
from dispatcher.core.arrangements.offers import offers_for
from dispatcher.core.arrangements.terms import active_arrangement
from dispatcher.core.models import AccountRecord, Channel, Contact, HistoryEntry, PostalAddress, zone
from dispatcher.core.privacy.unsubscribe import unsubscribe_token
from dispatcher.core.strategy import Strategy
from dispatcher.core.timeline import case_file


def build_message(
    contact: Contact,
    record: AccountRecord,
    history: Sequence[HistoryEntry],
    renderer: Renderer,
    settings: Settings,
    strategy: Strategy,
    now: datetime,
    compose: Callable[[Draft], OutboundMessage] | None = None,
) -> OutboundMessage:
    """Render the contact's template for the debtor's locale; a missing variable raises, nothing is sent.
    `compose`: the provider's (channels.spec.ProviderSpec) when not the channel's own.

    One pass, each outside call once and in turn (the account's address and zone, the unsubscribe token,
    the render, the channel's spec): the send pipeline's compose step reads top to bottom."""
    account = record.account
    to = address_of(contact.channel, record)
    local = now.astimezone(zone(account.timezone))  # the debtor's own time, read once
    token = unsubscribe_token(settings.unsubscribe_secret.get_secret_value(), account.id)
    unsubscribe_url = settings.unsubscribe_url.format(contact_id=contact.id, account_id=account.id, token=token)
    context: dict[str, Any] = {
        "name": account.name,
        "amount": account.balance - record.state.paid,
        "currency": account.currency,
        "minimum_payment": account.minimum_payment,
        "due_date": account.due_date,
        "days_past_due": (local.date() - account.due_date).days,
        "account_ref": account.id[-4:],
        "pay_url": settings.pay_url.format(account_id=account.id),
        "unsubscribe_url": unsubscribe_url,
        "bank_name": settings.bank_name,
        "phone": settings.callback_phone,
        "token": token,
        "offers": offers_for(strategy.offers, account, record.state, local.date()),  # the strategy's, for this account
        "instalment": next_instalment(record),
    }
    rendered = renderer.render(contact.template, account.locale, context)
    # Until the channel's window closes in the debtor's zone (36000, the longest a provider holds a
    # message, when it has none): a text still queued then expires rather than lands late.
    window = strategy.compliance.windows.get(contact.channel)
    closes = None if window is None else datetime.combine(local.date(), window.end, local.tzinfo)
    draft = Draft(
        contact_id=contact.id,
        account_id=account.id,
        template=contact.template,
        locale=account.locale,
        to=to,
        text=rendered.text,
        subject=rendered.subject,
        html=rendered.html,
        extra={"unsubscribe_url": unsubscribe_url, "unsubscribe_token": token},
        renderer=renderer,
        context=context,
        local_today=local.date(),
        window_seconds_left=36000 if closes is None else max(1, int((closes - local) / timedelta(seconds=1))),
        case_file=lambda: case_file(record, history),
    )
    return (compose or spec_of(contact.channel.value).compose)(draft)


def next_instalment(record: AccountRecord) -> dict[str, Any] | None:
    """The first unpaid instalment of the plan being kept (what a reminder names), or None."""
    kept = active_arrangement(record.state.arrangements)
    index = None if kept is None else kept.first_unpaid()
    if kept is None or index is None:
        return None
    already = kept.paid - sum((i.amount for i in kept.instalments[:index]), Decimal("0"))
    instalment = kept.instalments[index]
    return {"number": index + 1, "of": len(kept.instalments), "due": instalment.due,
            "amount": instalment.amount - already, "remaining": kept.remaining}  # fmt: skip


def address_of(channel: Channel, record: AccountRecord) -> str | dict[str, str]:
    """Where the channel reaches the debtor (the account says which of its addresses that is)."""
    address = record.account.address_for(channel)
    if not isinstance(address, PostalAddress):
        return str(address)
    fields = {
        "name": record.account.name,
        "address_line1": address.line1,
        "address_line2": address.line2 or "",
        "address_city": address.city,
        "address_state": address.region or "",
        "address_zip": address.postal_code,
        "address_country": address.country,
    }
    return {key: value for key, value in fields.items() if value}
