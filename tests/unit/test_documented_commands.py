"""Every `dispatcher ...` line in README.md, docs/*.md and deploy/'s units parses with the real CLI.

Nothing is executed: each line goes through the resolved command's parser (click's make_context with
resilient_parsing=False). Synopsis notation is read as a reader would: `[...]` optional parts are
included, `a|b` alternatives are each tried, an upper-case placeholder (N, FILE, ID, ${VAR}) stands for a value
of the option's type. An inline mention that only names a command (`dispatcher api-key`) must name one
that exists; a code block line must parse whole.
"""

from __future__ import annotations

import itertools
import re
import shlex
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cli_parsing import CommandLineError, parse_celery_flower, parse_dispatcher, resolve_dispatcher
from workers.app import QUEUES

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
UNITS = sorted((ROOT / "deploy").glob("*.service"))

# `dispatcher` as the program: bare, a path to it (.venv/bin/dispatcher), after VAR=value assignments.
# A command or an option follows (lower case or '-'): "dispatcher CPU per contact: ..." is program output.
_COMMAND = re.compile(r"^(?:\$\s+)?(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:\S*/)?dispatcher(?:\s+[-a-z]|$)")
_INLINE = re.compile(r"`([^`]+)`")
# N, FILE, SCOPE..., and a shell or systemd variable: ${WORKER_CONCURRENCY}, $DISPATCHER_REDIS_URL.
_PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]*(?:\.\.\.)?|\$\{?[A-Z][A-Z0-9_]*\}?)$")
_SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>&1"}


@dataclass(frozen=True)
class Line:
    where: str  # file:line
    text: str
    inline: bool

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


def documented_lines(path: Path) -> list[Line]:
    """Command lines in fenced code blocks (continuations joined) and in inline code spans."""
    found: list[Line] = []
    in_block = False
    pending = ""
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if raw.lstrip().startswith("```"):
            in_block = not in_block
            continue
        where = f"{path.relative_to(ROOT)}:{number}"
        if in_block:
            text = pending + raw.strip()
            if text.endswith("\\"):
                pending = text[:-1] + " "
                continue
            pending = ""
            if _COMMAND.match(text):
                found.append(Line(where, text, inline=False))
            continue
        found += [Line(where, span, True) for span in _INLINE.findall(raw) if _COMMAND.match(span.strip())]
    return found


def unit_lines(path: Path) -> list[Line]:
    """ExecStart= of a systemd unit running `dispatcher`, the worker template's %i and ${...} filled in."""
    lines = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        command = raw.removeprefix("ExecStart=").replace("%H", "host")
        if not raw.startswith("ExecStart=") or not _COMMAND.match(command):
            continue
        for queue in QUEUES if "%i" in command else [""]:
            pool, concurrency = ("prefork", "4") if queue == "plan" else ("threads", "16")
            filled = command.replace("%i", queue).replace("${WORKER_POOL}", pool)
            lines.append(
                Line(f"{path.relative_to(ROOT)}:{number}", filled.replace("${WORKER_CONCURRENCY}", concurrency), False)
            )
    return lines


def command_lines(line: Line) -> list[list[str]]:
    """The argument lists a documented line stands for (after `dispatcher`), one per alternative."""
    tokens = shlex.split(line.text.replace("\\|", "|"), comments=True)
    while tokens and ("=" in tokens[0] and not tokens[0].startswith("-") or tokens[0] == "$"):
        tokens.pop(0)  # VAR=value before the program
    tokens = tokens[1:]  # the program itself
    for index, token in enumerate(tokens):
        if token in _SHELL_OPERATORS:
            tokens = tokens[:index]
            break
    tokens = [token.strip("[]") for token in tokens]
    choices = [token.split("|") if "|" in token else [token] for token in tokens if token]
    return [list(combination) for combination in itertools.product(*choices)]


def with_samples(args: list[str]) -> list[str]:
    """Placeholders after an option replaced by a value of that option's type (N -> 1 for an integer)."""
    command, _, _ = resolve_dispatcher(args)
    options: dict[str, Any] = {name: param for param in command.params for name in param.opts + param.secondary_opts}
    filled = list(args)
    for index in range(1, len(filled)):
        param = options.get(filled[index - 1])
        if param is not None and _PLACEHOLDER.match(filled[index]) and not getattr(param, "is_flag", False):
            filled[index] = _sample(param) or filled[index]
    return filled


def _sample(param: Any) -> str | None:
    """A value of the option's Python type for a placeholder; None keeps the placeholder (text, paths)."""
    default = getattr(param, "default", None)
    if isinstance(default, int | float) and not isinstance(default, bool):
        return str(default)  # within the option's bounds, unlike an arbitrary number
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    kinds = {annotation, *typing.get_args(annotation)}
    if int in kinds:
        return "1"
    if float in kinds:
        return "1.0"
    return None


def check(line: Line) -> None:
    """Raise CommandLineError naming the line when any reading of it does not parse."""
    for args in command_lines(line):
        try:
            command, _, rest = resolve_dispatcher(args)
            if line.inline and not rest:
                continue  # prose naming a command: it exists, its arguments are described around it
            parse_dispatcher(with_samples(args))
        except CommandLineError as exc:
            raise CommandLineError(f"{line}\n    -> {exc}") from None


ALL_LINES = [line for path in DOCS for line in documented_lines(path)] + [
    line for path in UNITS for line in unit_lines(path)
]


def test_the_docs_show_commands_at_all() -> None:
    assert len(ALL_LINES) > 20
    units = {line.where.split(":")[0] for line in ALL_LINES if line.where.startswith("deploy/")}
    assert units == {
        "deploy/dispatcher-api.service",
        "deploy/dispatcher-beat.service",
        "deploy/dispatcher-worker@.service",
    }


def test_the_flower_unit_runs_flower_read_only_and_persistent() -> None:
    unit = (ROOT / "deploy" / "dispatcher-flower.service").read_text(encoding="utf-8")
    command = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    options = parse_celery_flower(shlex.split(command)[1:])
    assert options["read_only"] is True and options["persistent"] is True


@pytest.mark.parametrize("line", ALL_LINES, ids=[line.where for line in ALL_LINES])
def test_every_documented_command_line_parses(line: Line) -> None:
    check(line)


@pytest.mark.parametrize(
    "text",
    [
        "dispatcher worker -P threads",  # Celery's flag, not ours
        "dispatcher api --hostname 0.0.0.0",
        "dispatcher simulate --accounts many",
        "dispatcher strategy lint config/strategy.yaml",
        "dispatcher account show",  # in a code block a required argument must be there
    ],
)
def test_a_line_that_does_not_parse_is_reported_with_its_place(text: str) -> None:
    with pytest.raises(CommandLineError, match=r"^README.md:1: "):
        check(Line("README.md:1", text, inline=False))


def test_synopsis_notation_is_read_as_a_reader_would() -> None:
    check(Line("x:1", "dispatcher worker -Q QUEUES [-c N] [--pool prefork\\|threads]", inline=True))
    check(Line("x:1", "DISPATCHER_LOG_LEVEL=DEBUG .venv/bin/dispatcher dead-letters list --json | head  # why", False))
    assert command_lines(Line("x:1", "dispatcher dead-letters list|show ID", True)) == [
        ["dead-letters", "list", "ID"],
        ["dead-letters", "show", "ID"],
    ]
