"""`python -m tests.chaos` (what `make chaos` runs): every scenario at full size, then a markdown table.

    python -m tests.chaos                       # all scenarios
    python -m tests.chaos -s sigkill-storm -s poison
    python -m tests.chaos -s provider-failover  # Aliyun 503 for 60 s, then 20 answers held: failover, no resend
    python -m tests.chaos -s bounded            # the part `make test` runs
    python -m tests.chaos --json out.json --out table.md

Exit status 1 when any row misses its goal (0 duplicates, 0 lost, 0 sent without evidence, 0 stray sends,
drained within 2 minutes of the last fault, and the scenario's own checks).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

from tests.chaos.report import details, table
from tests.chaos.scenarios import BOUNDED, DEFAULT_ROOT, FULL, run


def main() -> int:
    known = [*FULL, BOUNDED.name]
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("-s", "--scenario", action="append", choices=known, help="run only these (repeatable)")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where each run's logs and data go")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    parser.add_argument("--json", type=Path, help="also write every figure as JSON here")
    args = parser.parse_args()
    chosen = args.scenario or list(FULL)
    scenarios = [FULL.get(name, BOUNDED) for name in chosen]
    results = []
    for scenario in scenarios:
        print(f"== {scenario.title} ({scenario.config.accounts} accounts) ...", file=sys.stderr, flush=True)
        result = run(scenario, args.root)
        verdict = "PASS" if result.passed else "FAIL"
        print(f"   {verdict} in {result.wall_seconds:.0f} s; logs under {args.root / scenario.name}", file=sys.stderr)
        results.append((scenario, result))
    header = (
        f"Chaos run {time.strftime('%Y-%m-%d %H:%M %Z')} on {platform.node()} "
        f"({os.cpu_count()} cores, Python {platform.python_version()}); `make chaos`"
    )
    markdown = "\n".join([header, "", table(results), "", details(results)])
    print(markdown)
    if args.out:
        args.out.write_text(markdown + "\n", encoding="utf-8")
    if args.json:
        payload = [
            {"scenario": s.name, "title": s.title, "config": dataclasses.asdict(s.config), **dataclasses.asdict(r),
             "passed": r.passed}
            for s, r in results
        ]  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return 0 if all(r.passed for _, r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
