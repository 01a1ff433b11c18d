"""From a contact and its account's fresh record to a rendered, addressed OutboundMessage.

Personal data is read here, in the worker, from the store; tasks carry only ids. The worker builds a
channel-neutral Draft from the account; the channel's spec (channels.REGISTRY) composes its message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from channels import spec_of
from channels.base import OutboundMessage
from channels.render import Renderer
from channels.spec import Draft
from config.settings import Settings
from dispatcher.core.models import AccountRecord, Channel, Contact, HistoryEntry, PostalAddress, zone
from dispatcher.core.strategy import Strategy
from dispatcher.core.timeline import timeline
from dispatcher.core.unsubscribe import unsubscribe_token


def build_message(
    contact: Contact,
    record: AccountRecord,
    history: Sequence[HistoryEntry],
    renderer: Renderer,
    settings: Settings,
    strategy: Strategy,
    now: datetime,
) -> OutboundMessage:
    """Render the contact's template for the debtor's locale; a missing variable raises, nothing is sent."""
    account = record.account
    local = now.astimezone(zone(account.timezone))  # the debtor's own time, read once
    context = _context(contact, record, settings, local)
    rendered = renderer.render(contact.template, account.locale, context)
    address = account.address_for(contact.channel)
    draft = Draft(
        contact_id=contact.id,
        account_id=account.id,
        template=contact.template,
        locale=account.locale,
        to=_postal(account.name, address) if isinstance(address, PostalAddress) else str(address),
        text=rendered.text,
        subject=rendered.subject,
        html=rendered.html,
        extra={"unsubscribe_url": context["unsubscribe_url"], "unsubscribe_token": context["token"]},
        renderer=renderer,
        context=context,
        local_today=local.date(),
        window_seconds_left=_seconds_left_in_window(strategy, contact.channel, local),
        case_file=lambda: _case_file(record, history),
    )
    return spec_of(contact.channel.value).compose(draft)


def _context(contact: Contact, record: AccountRecord, settings: Settings, local: datetime) -> dict[str, Any]:
    account = record.account
    local_today = local.date()
    token = unsubscribe_token(settings.unsubscribe_secret.get_secret_value(), account.id)
    return {
        "name": account.name,
        "amount": account.balance - record.state.paid,
        "currency": account.currency,
        "minimum_payment": account.minimum_payment,
        "due_date": account.due_date,
        "days_past_due": (local_today - account.due_date).days,
        "account_ref": account.id[-4:],
        "pay_url": settings.pay_url.format(account_id=account.id),
        "unsubscribe_url": settings.unsubscribe_url.format(contact_id=contact.id, account_id=account.id, token=token),
        "bank_name": settings.bank_name,
        "phone": settings.callback_phone,
        "token": token,
    }


def address_of(channel: Channel, record: AccountRecord) -> str | dict[str, str]:
    """Where the channel reaches the debtor (the account says which of its addresses that is)."""
    address = record.account.address_for(channel)
    if isinstance(address, PostalAddress):
        return _postal(record.account.name, address)
    return str(address)


def _postal(name: str, address: PostalAddress) -> dict[str, str]:
    fields = {
        "name": name,
        "address_line1": address.line1,
        "address_line2": address.line2 or "",
        "address_city": address.city,
        "address_state": address.region or "",
        "address_zip": address.postal_code,
        "address_country": address.country,
    }
    return {key: value for key, value in fields.items() if value}


def _seconds_left_in_window(strategy: Strategy, channel: Channel, local: datetime) -> int:
    """Until the channel's window closes in the debtor's zone (`local`: the moment there; 36000, the longest
    a provider holds a message, when it has none)."""
    window = strategy.compliance.windows.get(channel)
    if window is None:
        return 36000
    closes = datetime.combine(local.date(), window.end, local.tzinfo)
    return max(1, int((closes - local) / timedelta(seconds=1)))


def _case_file(record: AccountRecord, history: Sequence[HistoryEntry]) -> dict[str, Any]:
    account = record.account
    rows = timeline(record, history)
    return {
        "account": account.model_dump(mode="json"),
        "balance": str(account.balance - record.state.paid),
        "currency": account.currency,
        "contact_history": rows,
        "letters": [row for row in rows if row.get("channel") == Channel.LETTER],
    }
