"""Parse a `dispatcher ...` or `celery ... flower ...` command line with the real CLI, without running it.

Used by the compose-file test and the documented-commands test: a command or option that does not exist,
or a value of the wrong type, raises CommandLineError with the CLI's own message.
"""

from __future__ import annotations

import copy
from typing import Any

import click
from typer.main import get_command

from workers.cli import app


class CommandLineError(ValueError):
    """The command line does not parse; the message is the CLI's own."""


def resolve_dispatcher(args: list[str]) -> tuple[Any, str, list[str]]:
    """(the command `args` names, its path such as `dispatcher dead-letters list`, the arguments left).

    Typer ships its own copy of click, so groups are recognised by their `get_command`, not by class.
    """
    command: Any = get_command(app)
    name = "dispatcher"
    rest = list(args)
    while hasattr(command, "get_command") and hasattr(command, "list_commands"):
        if not rest or rest[0].startswith("-"):
            break
        sub = command.get_command(command.context_class(command, info_name=name), rest[0])
        if sub is None:
            raise CommandLineError(f"{name}: no such command {rest[0]!r}")
        name, command, rest = f"{name} {rest[0]}", sub, rest[1:]
    return command, name, rest


def parse_dispatcher(args: list[str]) -> Any:
    """The leaf command's parsed context for `dispatcher *args`; CommandLineError when it does not parse."""
    command, name, rest = resolve_dispatcher(args)
    if hasattr(command, "list_commands") and not [arg for arg in rest if arg != "--help"]:
        return command.context_class(command, info_name=name)  # a group named alone shows its help
    resilient = "--help" in rest  # --help is eager and would exit; every command has it
    try:
        return command.make_context(name, [arg for arg in rest if arg != "--help"], resilient_parsing=resilient)
    except Exception as exc:  # typer's click raises its own UsageError/BadParameter classes
        if not hasattr(exc, "format_message"):
            raise
        raise CommandLineError(f"{name}: {exc.format_message()}") from None


def parse_celery_flower(args: list[str]) -> dict[str, object]:
    """`celery [global options] flower [--option=value ...]` parsed by celery's CLI and Flower's option registry."""
    from celery.bin.celery import celery
    from flower.options import options

    split = args.index("flower")
    celery.make_context("celery", args[: split + 1], resilient_parsing=False)  # celery's own options
    if celery.get_command(click.Context(celery), "flower") is None:
        raise CommandLineError("Flower is not installed: no `celery flower`")
    parsed: dict[str, object] = {}
    for arg in args[split + 1 :]:
        name, _, value = arg.removeprefix("--").partition("=")
        option = options._options.get(name.replace("_", "-"))  # tornado keeps names with '-'
        if not arg.startswith("--") or option is None:
            raise CommandLineError(f"Flower has no option {arg!r}")
        # A copy: parse() also sets the option's global value, and other tests may start Flower in-process.
        parsed[name.replace("-", "_")] = copy.copy(option).parse(value) if value else True
    return parsed


def flower_option_names() -> set[str]:
    """Every Flower option as FLOWER_<NAME> (Flower reads those from its environment)."""
    from flower.options import options

    return {"FLOWER_" + name.replace("-", "_").upper() for name in options._options}
