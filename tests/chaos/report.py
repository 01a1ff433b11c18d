"""The chaos results as markdown: one row per scenario, then what each row saw."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tests.chaos.harness import Result


def _drain(result: Result) -> str:
    if result.drain_seconds is None:
        return f"**not drained** (> {result.deadline:.0f} s)"
    text = f"{result.drain_seconds:.0f} s"
    return text if result.drain_seconds <= result.deadline else f"**{text}**"


def _count(value: int) -> str:
    return str(value) if value == 0 else f"**{value}**"


def table(results: Sequence[tuple[Any, Result]]) -> str:
    lines = [
        "| scenario | contacts | faults injected | duplicates | lost / stranded | sent without evidence | stray sends "
        "| drained after last fault | other checks | goal |",
        "|---|---:|---|---:|---:|---:|---:|---|---|---|",
    ]
    for scenario, result in results:
        faults = "; ".join(result.faults) or "—"
        checks = "; ".join(
            f"{'ok' if ok else '**FAIL**'} {name}: {figure}" for name, (ok, figure) in result.checks.items()
        )
        verdict = "met" if result.passed else "**missed**"
        if result.tally is None:
            error = result.error or "no tally"
            lines.append(
                f"| {scenario.title} | {result.contacts} | {faults} | – | – | – | – | – "
                f"| harness: {error} | {verdict} |"
            )
            continue
        t = result.tally
        lines.append(
            f"| {scenario.title} | {t.contacts} | {faults} | {_count(t.duplicates)} | {_count(t.lost)} "
            f"| {_count(t.sent_without_evidence)} | {_count(t.stray)} | {_drain(result)} | {checks or '—'} "
            f"| {verdict} |"
        )
    return "\n".join(lines)


def details(results: Sequence[tuple[Any, Result]]) -> str:
    out: list[str] = []
    for scenario, result in results:
        out.append(f"### {scenario.title}")
        out.append("")
        if result.error:
            out.append(f"- harness error: {result.error}")
        for key, value in result.info.items():
            out.append(f"- {key}: {value}")
        for note in result.notes:
            out.append(f"- {note}")
        out.append(f"- wall time: {result.wall_seconds:.0f} s")
        out.append("")
    return "\n".join(out)
