"""What a task's arguments must be before it acts on them. Anything else is refused into the dead-letter
stream (workers/dead_lettering.py) and the task returns: a bad message is kept for a person, not retried, and
never half-applied.

A send payload is the most dangerous argument: it names who is contacted. Its contact id must belong to its
account (`ACCOUNT/stage/step/occurrence[/fb]`, dispatcher.core.models.ContactRef) and a claim must exist for it,
which only the planner writes; a payload forged or garbled on the broker cannot reach a debtor. A payload
whose claim was forgotten lately (the last look denied it, a release, the stranded sweep) is a stale
duplicate of its contact's dispatch — a re-plan offers a queued contact again — and is skipped quietly,
counted, not dead-lettered: dead letters are for messages a person must look at.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import structlog
from celery import Task
from pydantic import ValidationError

from config.providers import provider_of
from dispatcher.core.models import ACCOUNT_ID_PATTERN, CONTACT_ID, Channel, account_of
from dispatcher.state.metrics import CONTACTS
from dispatcher.state.redis_keys import claims_key, let_go_key
from dispatcher.state.store import Store
from workers.dead_lettering import refuse

log = structlog.get_logger("workers.arguments")

PAYLOAD_FIELDS = ("id", "account_id", "channel", "template", "stage", "step", "due_at")
ACCOUNT_ID = re.compile(ACCOUNT_ID_PATTERN.removeprefix("^").removesuffix("$"))
REASONS_SHOWN = 5  # problems named in the reason of a send's dead letter; the body has every payload


def checked_payloads(task: Task, payloads: object, store: Store) -> list[dict[str, str]]:
    """The payloads a send may act on, so the rest of the batch goes. Those refused are one dead letter, a send
    of them alone with their count: one malformed task of 20,000 contacts is one entry, not 20,000 that would
    push every older dead letter off the stream's cap."""
    if not isinstance(payloads, list):
        refuse(task, f"a send takes a list of contact payloads, not {type(payloads).__name__}", [payloads])
        return []
    problems = [payload_problem(payload) for payload in payloads]
    standing = iter(
        _standing([payload for payload, problem in zip(payloads, problems, strict=True) if not problem], store)
    )
    good, refused = [], []
    for payload, problem in zip(payloads, problems, strict=True):
        claim = next(standing) if problem is None else None
        if claim == "let go":
            CONTACTS.labels(payload["channel"], provider_of(payload["channel"]), "stale_duplicate").inc()
            log.debug("contact.stale_duplicate", contact_id=payload["id"], account_id=payload["account_id"])
            continue
        if claim == "none":
            problem = (
                f"no claim for contact {payload['id']!r} on account {payload['account_id']!r}: only contacts "
                "the planner queued are sent"
            )
        if problem is None:
            good.append(payload)
        else:
            refused.append((payload, problem))
    if refused:
        rejects = [payload for payload, _ in refused]
        refuse(task, refusal(refused, len(payloads)), [rejects], count=len(refused))
    return good


def refusal(refused: Sequence[tuple[object, str]], total: int) -> str:
    """The reason of a send's dead letter: one payload's problem as it is; for several, how many and the first
    few problems (the entry's body holds every refused payload)."""
    if len(refused) == 1:
        return refused[0][1]
    shown = [problem for _, problem in refused[:REASONS_SHOWN]]
    more = f"; and {len(refused) - len(shown)} more" if len(refused) > len(shown) else ""
    return f"{len(refused)} of {total} contact payloads refused: " + "; ".join(shown) + more


def payload_problem(payload: object) -> str | None:
    """What is wrong with one payload's shape, or None."""
    if not isinstance(payload, dict):
        return f"a contact payload is a JSON object, not {type(payload).__name__}"
    missing = [name for name in PAYLOAD_FIELDS if not isinstance(payload.get(name), str) or not payload[name]]
    if missing:
        return f"missing or not text: {', '.join(missing)}"
    account_id, contact_id = payload["account_id"], payload["id"]
    if not ACCOUNT_ID.fullmatch(account_id):
        return f"account_id {account_id!r} is not an account id"
    if account_of(contact_id) != account_id:
        return f"contact id {contact_id!r} does not belong to account {account_id!r}"
    if not CONTACT_ID.match(contact_id):
        return f"contact id {contact_id!r} is not ACCOUNT/stage/step/occurrence[/fb]"
    if payload["channel"] not in Channel:  # the registry as it stands: a channel registered since is known
        return f"channel {payload['channel']!r} is not one of {', '.join(sorted(Channel))}"
    try:
        due_at = datetime.fromisoformat(payload["due_at"])
    except ValueError:
        return f"due_at {payload['due_at']!r} is not an ISO 8601 time"
    return None if due_at.tzinfo is not None else f"due_at {payload['due_at']!r} has no UTC offset"


def _standing(payloads: Sequence[dict[str, str]], store: Store) -> list[Literal["claimed", "let go", "none"]]:
    """Per payload: its contact has a claim, had one forgotten lately, or never had one. One round trip for
    the claims; the let-go record is read only for the few without one, so a normal batch pays nothing more."""
    claimed = _each(store, [(claims_key(p["account_id"]), p["id"]) for p in payloads])
    unclaimed = [payload for payload, found in zip(payloads, claimed, strict=True) if not found]
    let_go = iter(_each(store, [(let_go_key(p["account_id"]), p["id"]) for p in unclaimed]))
    return ["claimed" if found else "let go" if next(let_go) else "none" for found in claimed]


def _each(store: Store, fields: Sequence[tuple[str, str]]) -> list[bool]:
    """HEXISTS for each (key, field), in one round trip (none for no fields)."""
    if not fields:
        return []
    with store.redis.pipeline(transaction=False) as pipe:
        for key, field in fields:
            pipe.hexists(key, field)
        return [bool(found) for found in pipe.execute()]


def account_id_problem(account_id: object) -> str | None:
    if isinstance(account_id, str) and ACCOUNT_ID.fullmatch(account_id):
        return None
    return f"account_id {account_id!r} is not an account id"


def validation_problem(exc: ValidationError) -> str:
    """Pydantic's errors as `field.path: message`, the way the HTTP API names them."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}" for error in exc.errors()
    )


def refused(task: Task, problem: str, args: Sequence[Any]) -> str:
    refuse(task, problem, args)
    return "dead_letter"
