"""`dispatcher callbacks`: the bank's outcome-callback endpoints, their attempts and failed events
(dispatcher/state/webhook_endpoints.py, dispatcher/state/webhook_outbox.py); the same as the admin routes
under /v1/admin/webhook-endpoints.

Its own module so dispatcher/commands/cli.py only adds it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from config.settings import Settings, load_settings
from dispatcher.state.webhook_endpoints import Endpoint, EndpointRegistry
from dispatcher.state.webhook_outbox import Outbox
from dispatcher.webhook_sender import callbacks_for
from dispatcher.webhook_targets import TargetRefused, check_target
from dispatcher.wiring import Runtime, open_runtime

HELP = (
    "Outcome callbacks to the bank's services (Standard Webhooks): the endpoints, their attempts, the events "
    "that failed for good.\n\nThe workers deliver (`dispatcher.callbacks`, sent by beat); `deliver` runs one pass by "
    'hand. docs/api.md, "Outcome callbacks", says what is sent and how to verify it.'
)
app = typer.Typer(help=HELP, no_args_is_help=True)
console = Console(width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


@contextmanager
def _opened() -> Iterator[tuple[Runtime, EndpointRegistry, Outbox]]:
    with open_runtime(load_settings()) as runtime:
        clock = runtime.engine.clock
        registry = EndpointRegistry(runtime.store.redis, runtime.store.shards, lambda: clock.now().timestamp())
        yield runtime, registry, Outbox(runtime.store.redis)


def _found(registry: EndpointRegistry, endpoint_id: str) -> Endpoint:
    endpoint = registry.get(endpoint_id)
    if endpoint is None:
        errors.print(f"[red]no endpoint {endpoint_id!r}[/]; `dispatcher callbacks list` shows the ids")
        raise typer.Exit(1)
    return endpoint


def _when(value: float | None) -> str:
    return "-" if not value else datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")


@app.command("list")
def list_command(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Every endpoint: url, types, state, accounts waiting, events failed for good."""
    with _opened() as (_, registry, outbox):
        shown = [{**endpoint.summary(), **outbox.depth(endpoint.id)} for endpoint in registry.all()]
    if as_json:
        console.print_json(json.dumps(shown))
        return
    table = Table("id", "url", "types", "enabled", "waiting", "failed", "breaker open until",
                  title=f"{len(shown)} endpoint(s)")  # fmt: skip
    for row in shown:
        table.add_row(str(row["id"]), str(row["url"]), ",".join(row["types"]) or "every type",  # type: ignore[arg-type]
                      "yes" if row["enabled"] else f"no: {row['disabled_reason']}", str(row["accounts_waiting"]),
                      str(row["failed"]), _when(row["breaker_open_until"]))  # type: ignore[arg-type]  # fmt: skip
    console.print(table)


@app.command("show")
def show_command(
    endpoint_id: Annotated[str, typer.Argument(help="The id `list` printed, e.g. ep_0123456789abcdef.")],
    attempts: Annotated[int, typer.Option(min=1, max=10_000, help="The latest attempts to show.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """One endpoint, its latest attempts and its failed events."""
    with _opened() as (_, registry, outbox):
        endpoint = _found(registry, endpoint_id)
        shown = {**endpoint.summary(), **outbox.depth(endpoint_id), "attempts": outbox.attempts(endpoint_id, attempts),
                 "failed_events": [{"id": e.id, "type": e.type, "account_id": e.account_id}
                                   for e in outbox.failed(endpoint_id)]}  # fmt: skip
    if as_json:
        console.print_json(json.dumps(shown))
        return
    for name, value in shown.items():
        if name not in ("attempts", "failed_events"):
            console.print(f"[bold]{name}[/]: {value}", highlight=False)
    table = Table("at", "event", "type", "account", "status", "verdict", "error", title="latest attempts")
    for attempt in shown["attempts"]:  # type: ignore[attr-defined]
        table.add_row(_when(float(attempt["at"])), attempt["event_id"], attempt["type"], attempt["account_id"],
                      attempt["status"] or "-", attempt["verdict"], attempt["error"] or "")  # fmt: skip
    console.print(table)
    for event in shown["failed_events"]:  # type: ignore[attr-defined]
        console.print(f"failed for good: {event['id']} {event['type']} {event['account_id']}", highlight=False)


@app.command("add")
def add_command(
    url: Annotated[str, typer.Argument(help="Where to POST: https (http outside production).")],
    event_type: Annotated[
        list[str] | None, typer.Option("--type", help="An event type to receive (repeat it); none: every type.")
    ] = None,  # fmt: skip
    description: Annotated[str, typer.Option(help="A note for operators.")] = "",
) -> None:
    """Register an endpoint; prints its signing secret, this once."""
    settings: Settings = load_settings()
    try:
        check_target(url, settings.webhook_allowed_hosts, settings.env == "production")
    except TargetRefused as exc:
        errors.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    with _opened() as (_, registry, _outbox):
        try:
            endpoint, secret = registry.create(url, event_type or (), description)
        except ValueError as exc:
            errors.print(f"[red]--type: {exc}[/]")
            raise typer.Exit(2) from None
    console.print(f"endpoint {endpoint.id}\nsecret {secret}\n(the secret is not shown again)", highlight=False)


@app.command("retry")
def retry_command(
    endpoint_id: Annotated[str, typer.Argument(help="The endpoint.")],
    event: Annotated[
        str | None,
        typer.Option(
            help="A failed event's id (`show` lists them); without it, every "
            "waiting account is due now and the breaker closed."
        ),
    ] = None,  # fmt: skip
) -> None:
    """Send again now: a failed event (back at its account's head), or everything waiting."""
    with _opened() as (runtime, registry, outbox):
        _found(registry, endpoint_id)
        now = runtime.engine.clock.now().timestamp()
        if event is None:
            registry.succeeded(endpoint_id)
            console.print(f"{outbox.due_now(endpoint_id, now)} waiting account(s) due now", highlight=False)
            return
        if not outbox.retry(endpoint_id, event, now):
            errors.print(f"[red]no failed event {event!r} on {endpoint_id}[/]")
            raise typer.Exit(1)
    console.print(f"{event} is due now", highlight=False)


def _on_endpoint(endpoint_id: str, change: Callable[[EndpointRegistry, str], T]) -> T:
    """`change` applied to an endpoint that exists (else exit 1 naming it): what disable, enable, rotate and
    delete share."""
    with _opened() as (_, registry, _outbox):
        _found(registry, endpoint_id)
        return change(registry, endpoint_id)


@app.command("disable")
def disable_command(endpoint_id: Annotated[str, typer.Argument(help="The endpoint.")]) -> None:
    """Stop delivering to an endpoint (its queues are kept; `enable` starts again from what happens next)."""
    _on_endpoint(endpoint_id, lambda registry, found: registry.disable(found, "disabled by an operator"))
    console.print(f"{endpoint_id} disabled", highlight=False)


@app.command("enable")
def enable_command(endpoint_id: Annotated[str, typer.Argument(help="The endpoint.")]) -> None:
    """Deliver to an endpoint again, from what happens next (its breaker closed)."""
    _on_endpoint(endpoint_id, EndpointRegistry.enable)
    console.print(f"{endpoint_id} enabled", highlight=False)


@app.command("rotate")
def rotate_command(endpoint_id: Annotated[str, typer.Argument(help="The endpoint.")]) -> None:
    """A new signing secret, printed this once; the old one signs too for 24 hours."""
    secret = _on_endpoint(endpoint_id, EndpointRegistry.rotate)
    console.print(f"secret {secret}\n(the old secret signs too for 24 hours)", highlight=False)


@app.command("delete")
def delete_command(endpoint_id: Annotated[str, typer.Argument(help="The endpoint.")]) -> None:
    """Delete an endpoint with its queues, attempts and failed events."""
    _on_endpoint(endpoint_id, EndpointRegistry.delete)
    console.print(f"{endpoint_id} deleted", highlight=False)


@app.command("deliver")
def deliver_command() -> None:
    """One pass by hand: relay the audit streams, then one round of sends per endpoint (the workers do this
    when beat finds work, every DISPATCHER_WEBHOOK_RELAY_INTERVAL_SECONDS)."""
    with _opened() as (runtime, _registry, _outbox):
        relay, sender = callbacks_for(runtime.store, runtime.engine.clock, runtime.settings)
        queued = relay.run()
        done = sender.deliver_due()
        sender.close()
    console.print(f"queued {queued}, attempts {done.attempts}, delivered {done.delivered}", highlight=False)
