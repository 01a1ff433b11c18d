"""`dispatcher dead-letters`: list, show, replay and purge the dead-letter stream
(dispatcher/state/dead_letter_stream.py).

Its own module so dispatcher/commands/cli.py only adds it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated

import redis
import typer
from rich.console import Console
from rich.table import Table

from config.settings import load_settings
from dispatcher.state import dead_letter_stream
from dispatcher.state.redis_keys import DEAD_LETTERS
from dispatcher.wiring import open_runtime

HELP = (
    f"Messages the workers could not use, kept in the Redis stream `{DEAD_LETTERS}` (at most ~100,000)."
    "\n\nA message lands there when a worker cannot decode it (not a kombu envelope, a body that is not JSON), "
    "does not know its task, or refuses its arguments (a field missing or invalid, an event for an unknown "
    "account, a send payload whose contact id is not its account's or was never planned). The worker logs it "
    "and goes on.\n\nLook with `list` and `show`; after fixing the cause, `replay` puts the message back on its "
    "queue (one that is still invalid comes back here); `purge` drops old ones."
)
app = typer.Typer(help=HELP, no_args_is_help=True)
console = Console(width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, soft_wrap=True)


@contextmanager
def _stream() -> Iterator[redis.Redis]:
    with open_runtime(load_settings()) as runtime:
        yield runtime.store.broker


def _when(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        errors.print(
            f"[red]--before {text!r}[/]: give an ISO 8601 time with its offset, e.g. 2026-03-01T00:00:00+00:00"
        )
        raise typer.Exit(2)
    return moment


@app.command("list")
def list_command(
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many, newest first.")] = 50,
    before: Annotated[str | None, typer.Option(help="Only those older than this ISO 8601 time.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (bodies cut after 2,000 characters).")] = False,
) -> None:
    """The newest dead letters: id, time, queue, task and reason. `show ID` prints one whole."""
    with _stream() as client:
        letters = dead_letter_stream.listing(client, limit, _when(before))
        total = dead_letter_stream.count(client)
    if as_json:
        console.print_json(json.dumps([letter.summary() for letter in letters]))
        return
    table = Table(
        "id", "at", "queue", "task", "count", "reason", title=f"{total} dead letter(s); newest {len(letters)}"
    )
    for letter in letters:
        when = letter.at.isoformat(timespec="seconds")
        table.add_row(letter.id, when, letter.queue, letter.task or "-", str(letter.count), letter.reason)
    console.print(table)


@app.command("show")
def show_command(
    entry_id: Annotated[str, typer.Argument(help="The id `list` printed, e.g. 1767225600000-0.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, envelope included.")] = False,
) -> None:
    """One dead letter with its whole body and the envelope replay would put back on the queue."""
    with _stream() as client:
        letter = dead_letter_stream.get(client, entry_id)
    if letter is None:
        errors.print(f"[red]no dead letter {entry_id!r}[/]; `dispatcher dead-letters list` shows the ids")
        raise typer.Exit(1)
    if as_json:
        console.print_json(json.dumps(letter.as_json()))
        return
    for name, value in letter.as_json().items():
        console.print(f"[bold]{name}[/]: {value}", highlight=False, markup=True, soft_wrap=True)


@app.command("replay")
def replay_command(
    entry_id: Annotated[str, typer.Argument(help="The id `list` printed.")],
) -> None:
    """Put the message back on its queue and remove the entry; a worker takes it as any other.

    Fix the cause first: a message that is still invalid is dead-lettered again (with a new id)."""
    with _stream() as client:
        letter = dead_letter_stream.replay(client, entry_id)
    if letter is None:
        errors.print(f"[red]no dead letter {entry_id!r}[/]; `dispatcher dead-letters list` shows the ids")
        raise typer.Exit(1)
    console.print(f"replayed {letter.id} onto queue {letter.queue!r}", highlight=False)


@app.command("purge")
def purge_command(
    before: Annotated[str | None, typer.Option(help="Only those older than this ISO 8601 time; else all.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before dropping every dead letter.")] = False,
) -> None:
    """Drop dead letters for good: those older than --before, or every one (asks first unless --yes)."""
    moment = _when(before)
    if moment is None and not yes and not typer.confirm("Drop every dead letter?"):
        raise typer.Exit(1)
    with _stream() as client:
        removed = dead_letter_stream.purge(client, moment)
    console.print(f"purged {removed} dead letter(s)", highlight=False)
