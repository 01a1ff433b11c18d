"""A yardstick for the machine's speed at the moment of a run: this VM's CPU speed has been seen to halve
for minutes at a time, so every benchmark prints it beside its figures."""

from __future__ import annotations

import time

REFERENCE_LOOP = 10_000_000


def speed_reference() -> str:
    began = time.perf_counter()
    total = 0
    for number in range(REFERENCE_LOOP):
        total += number
    seconds = time.perf_counter() - began
    return f"machine speed reference: a {REFERENCE_LOOP:,}-step Python loop took {seconds:.2f} s (lower is faster)"
