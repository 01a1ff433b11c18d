"""The demo's debtors: the debtor model (dispatcher/debtor_model.py) driven through the real path.

- The bank's side: payments, promises, instalment plans, disputes and an agent's "wrong number" reach the
  HTTP API with an API key (`Authorization: Bearer`, an Idempotency-Key per request), as the bank's own
  services send them (docs/api.md).
- The provider's side: the Twilio sandbox asks `call` how each call to a debtor's number ends, at the
  debtor's local hour (channels/sandbox/twilio_people.py); a debtor who replies STOP does it through the
  sandbox's inbound route, which posts the reply signed to the API's webhook.

What reached a debtor is read from the accounts' histories (a delivered SMS, letter or WeChat message, a
sent email, an answered call), as any reader of the store sees it; the model answers with what the debtor
does and when, on the demo's clock.
"""

from __future__ import annotations

import heapq
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
from dispatcher_client import ApiError, DispatcherClient
from rich.table import Table

from dispatcher.core.clock import Clock
from dispatcher.core.models import Account, AccountState, Channel, ContactRef, OutcomeKind, zone
from dispatcher.debtor_model import Action, DebtorModel
from dispatcher.state.store import Loaded

# The outcome that says a contact reached the debtor, per channel (email and letters have no delivery report
# here: once the provider took them, they count as read).
REACHED_BY = {
    Channel.SMS: OutcomeKind.DELIVERED,
    Channel.VOICE: OutcomeKind.ANSWERED,
    Channel.EMAIL: OutcomeKind.SENT,
    Channel.LETTER: OutcomeKind.SENT,  # the print vendor takes it; the sandbox reports no delivery
    Channel.WECHAT: OutcomeKind.DELIVERED,
}
STATUSES = ("resolved", "arrangement", "promised", "disputed", "handed_off", "active")


def account_status(state: AccountState) -> str:
    """The one status an account is counted under, in the live table and the summary."""
    if state.status in ("resolved", "handed_off"):
        return state.status
    if "dispute" in state.holds:
        return "disputed"
    # An arrangement being kept (issue 21 items 1-2, branch i21-arrangements: `state.arrangements`, each with
    # a `status`); until it merges no account has one, and a plan the demo's debtors agree is recorded as a
    # promise (see _send_plan). Read by name so this runs on both sides of that merge.
    if any(getattr(plan, "status", None) == "active" for plan in getattr(state, "arrangements", ())):
        return "arrangement"
    if state.promise is not None:
        return "promised"
    return "active"


@dataclass(frozen=True)
class Pending:
    """An action of the debtor's, due at `at` on the demo's clock."""

    at: datetime
    sequence: int
    account_id: str
    contact_id: str
    action: Action

    def __lt__(self, other: Pending) -> bool:
        return (self.at, self.sequence) < (other.at, other.sequence)


class DemoDebtors:
    def __init__(
        self, model: DebtorModel, accounts: Sequence[Account], clock: Clock, api_url: str, api_key: str,
        twilio_url: str,
    ) -> None:  # fmt: skip
        self.model = model
        self.clock = clock
        self.accounts = {account.id: account for account in accounts}
        self.by_phone: dict[str, str] = {}
        for account in accounts:
            if account.phone:
                self.by_phone.setdefault(account.phone, account.id)
        # The bank's side, as a bank's service would write it: the project's client (clients/python), which
        # keeps one Idempotency-Key across its retries of 429 and 503.
        self.api = DispatcherClient(api_url, api_key, timeout=10.0, retries=3, backoff=0.5)
        self.twilio_url = twilio_url
        self.seen: set[tuple[str, str]] = set()
        self.pending: list[Pending] = []
        self.owed: dict[str, Decimal] = {}
        self.status: dict[str, str] = {}
        self.done: Counter[str] = Counter()  # what the debtors did, by kind and how the API answered
        self._sequence = 0
        self._lock = threading.Lock()  # the sandbox's thread asks `call`; this one reacts

    def call(self, to: str) -> str | None:
        """The Twilio sandbox's callee: how a call to `to` ends now, at the debtor's local hour."""
        account_id = self.by_phone.get(to)
        if account_id is None:
            return None
        hour = self.clock.now().astimezone(zone(self.accounts[account_id].timezone)).hour
        with self._lock:
            answer = self.model.debtor(account_id).call(hour)
        # Someone picks up a wrong number too; the agent then records that it was the wrong party.
        return "answered" if answer == "wrong_party" else answer

    def step(self, loaded: Sequence[Loaded]) -> None:
        """React to what newly reached a debtor, then do what is due."""
        for one in loaded:
            if one.record is not None:
                self._read(one)
        now = self.clock.now()
        while self.pending and self.pending[0].at <= now:
            self._do(heapq.heappop(self.pending))

    def close(self) -> None:
        self.api.close()

    def _read(self, one: Loaded) -> None:
        record = one.record
        assert record is not None
        account, state = record.account, record.state
        self.owed[account.id] = account.balance - state.paid
        self.status[account.id] = state.status
        for entry in one.history:
            if entry.kind != "outcome" or not entry.contact_id or entry.channel is None or entry.outcome is None:
                continue
            key = (entry.contact_id, entry.outcome.value)
            if key in self.seen:
                continue
            self.seen.add(key)
            if REACHED_BY.get(entry.channel) is not entry.outcome or state.status != "active":
                continue
            ref = ContactRef.parse(entry.contact_id)
            today = entry.at.astimezone(zone(account.timezone)).date()
            with self._lock:
                actions = self.model.debtor(account.id).react(
                    entry.channel, ref.stage if ref else "", today, self.owed[account.id], account.minimum_payment,
                    conversation=entry.outcome is OutcomeKind.ANSWERED,
                )  # fmt: skip
            for action in actions:
                self._sequence += 1
                pending = Pending(entry.at + action.after, self._sequence, account.id, entry.contact_id, action)
                heapq.heappush(self.pending, pending)

    def _do(self, pending: Pending) -> None:
        action, account_id = pending.action, pending.account_id
        owed, status = self.owed.get(account_id, Decimal(0)), self.status.get(account_id)
        # Paid off: nothing left to do. Handed off: only a plan's instalments still come (as in simulate).
        if status != "active" and not (status == "handed_off" and action.kind == "pay" and action.offer):
            return
        if action.kind == "stop":
            self._reply_stop(account_id)
        elif action.kind == "pay":
            amount = min(action.amount or owed, owed)
            if amount > 0:
                reference = f"demo-{account_id}-{pending.sequence}"
                self._event(account_id, "payment", {"kind": "payment", "amount": str(amount), "reference": reference})
                self.owed[account_id] = owed - amount
        elif action.kind == "promise" and action.due is not None:
            body = {"kind": "promise_to_pay", "amount": str(min(action.amount or owed, owed)), "due": str(action.due)}
            self._event(account_id, "promise_to_pay", body)
        elif action.kind == "plan":
            self._send_plan(account_id, action)
        elif action.kind == "dispute":
            self._event(account_id, "dispute", {"kind": "dispute", "reason": "the debtor disputes the amount"})
        elif action.kind == "wrong_party":
            body = {"kind": "agent_disposition", "disposition": "wrong_number", "contact_id": pending.contact_id}
            self._event(account_id, "wrong_number", body)

    def _send_plan(self, account_id: str, action: Action) -> None:
        account = self.accounts[account_id]
        body = {
            "arrangement_id": f"demo-{account_id}",
            "instalments": [{"due": str(i.due), "amount": str(i.amount)} for i in action.instalments],
            "currency": account.currency,
        }
        self._tally("arrangement", lambda: self.api.post_arrangement(account_id, body))

    def _reply_stop(self, account_id: str) -> None:
        phone = self.accounts[account_id].phone
        if not phone:
            return
        try:
            answer = httpx.post(f"{self.twilio_url}/_sandbox/inbound", json={"From": phone, "Body": "STOP"}, timeout=10)
        except httpx.HTTPError:
            self.done["stop: sandbox unreachable"] += 1
            return
        self.done["stop" if answer.status_code < 300 else f"stop: refused {answer.status_code}"] += 1

    def _event(self, account_id: str, what: str, body: dict[str, Any]) -> None:
        body = {**body, "event_id": f"demo-{account_id}-{uuid.uuid4().hex[:12]}"}
        self._tally(what, lambda: self.api.post_event(account_id, body))

    def _tally(self, what: str, call: Callable[[], object]) -> None:
        try:
            call()
        except ApiError as exc:
            self.done[f"{what}: refused {exc.status}"] += 1
        except httpx.HTTPError:
            self.done[f"{what}: unreachable"] += 1
        else:
            self.done[what] += 1


def summary(loaded: Sequence[Loaded]) -> dict[str, Any]:
    """Accounts by status, what was collected (per currency: a book in several is not one sum) and the
    contacts made (every attempt but the agency's hand-off, which is not a contact with the debtor)."""
    by_status = dict.fromkeys(STATUSES, 0)
    collected: dict[str, Decimal] = {}
    contacts = 0
    for one in loaded:
        if one.record is None:
            continue
        state, currency = one.record.state, one.record.account.currency
        by_status[account_status(state)] += 1
        if state.paid:
            collected[currency] = collected.get(currency, Decimal(0)) + state.paid
        contacts += sum(1 for e in one.history if e.kind == "attempt" and e.channel not in (None, Channel.AGENCY))
    resolved = by_status["resolved"]
    return {
        "accounts_by_status": by_status,
        "collected": {currency: str(amount) for currency, amount in sorted(collected.items())},
        "contacts": contacts,
        "contacts_per_resolution": round(contacts / resolved, 1) if resolved else None,
    }


def demo_report(summary: Mapping[str, Any], debtors: Counter[str]) -> Table:
    """How `make demo` ended: accounts by status, what came in, contacts per resolution, what debtors did."""
    table = Table(title="how the accounts ended", show_header=False)
    by_status = summary["accounts_by_status"]
    table.add_row("accounts by status", ", ".join(f"{status} {count}" for status, count in by_status.items()))
    collected = summary["collected"]
    table.add_row("collected", ", ".join(f"{currency} {amount}" for currency, amount in collected.items()) or "0")
    per = summary.get("contacts_per_resolution")
    table.add_row("contacts", f"{summary['contacts']} ({per if per is not None else '—'} per account resolved)")
    table.add_row("what the debtors did", ", ".join(f"{k} {v}" for k, v in sorted(debtors.items())) or "—")
    return table
