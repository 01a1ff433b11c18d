"""From a contact and its account's fresh record to a rendered, addressed OutboundMessage.

Personal data is read here, in the worker, from the store; tasks carry only ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from channels.base import OutboundMessage
from channels.render import Renderer
from config.settings import Settings
from dispatcher.models import AccountRecord, Channel, Contact, HistoryEntry, PostalAddress, zone
from dispatcher.strategy import Strategy
from dispatcher.timeline import timeline
from dispatcher.unsubscribe import unsubscribe_token

GENERIC_VOICEMAIL = "voicemail"


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
    context = _context(contact, record, settings, now)
    rendered = renderer.render(contact.template, account.locale, context)
    extra: dict[str, Any] = {"unsubscribe_url": context["unsubscribe_url"], "unsubscribe_token": context["token"]}
    if contact.channel is Channel.SMS:
        extra["validity_period"] = _seconds_left_in_window(record, strategy, contact.channel, now)
    if contact.channel is Channel.LETTER:  # dated in the debtor's own zone; the PDF writes it in their locale
        extra["letter_date"] = now.astimezone(zone(account.timezone)).date().isoformat()
    if contact.channel is Channel.AGENCY:
        extra["case_file"] = _case_file(record, history)
    if contact.channel is Channel.VOICE:
        variant = voicemail_template(contact.template, account.locale, renderer)
        extra["voicemail_text"] = renderer.render(variant, account.locale, context).text
    return OutboundMessage(
        contact_id=contact.id,
        account_id=account.id,
        to=address_of(contact.channel, record),
        locale=account.locale,
        text=rendered.text,
        subject=rendered.subject,
        html=rendered.html,
        extra=extra,
    )


def voicemail_template(template: str, locale: str, renderer: Renderer) -> str:
    """`{step}_voicemail` for `{step}_call` when the locale has one, else the generic limited-content
    `voicemail`: a machine never gets the debt message, since anyone may play the recording back."""
    own = template.removesuffix("_call") + "_voicemail"
    return own if renderer.has(own, locale) else GENERIC_VOICEMAIL


def _context(contact: Contact, record: AccountRecord, settings: Settings, now: datetime) -> dict[str, Any]:
    account = record.account
    local_today = now.astimezone(zone(account.timezone)).date()
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
    account = record.account
    if channel is Channel.LETTER and account.address is not None:
        return _postal(account.name, account.address)
    if channel is Channel.AGENCY:
        return "agency"
    address = account.address_for(channel)
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


def _seconds_left_in_window(record: AccountRecord, strategy: Strategy, channel: Channel, now: datetime) -> int:
    """Until the window closes in the debtor's zone: a text still queued at the provider then expires."""
    window = strategy.compliance.windows.get(channel)
    if window is None:
        return 36000
    local = now.astimezone(zone(record.account.timezone))
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
