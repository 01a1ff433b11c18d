"""docs/grafana-dashboard.json: every PromQL expression names only metrics dispatcher/state/metrics.py exports, and
the dashboard has the panels operations needs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dispatcher.state.metrics import metric_names

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless",
            "inf", "nan"}  # fmt: skip
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w$.])([A-Za-z_:][\w:]*)(\s*\()?")


def names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions, keywords, labels
    (in matchers and grouping clauses), strings, ranges or dashboard variables."""
    for pattern in (_STRINGS, _MATCHERS, _RANGES, _GROUPING):
        expr = pattern.sub(" ", expr)
    return {name for name, call in _IDENTIFIER.findall(expr) if not call and name.lower() not in KEYWORDS}


def exported(name: str) -> bool:
    known = metric_names()
    return name in known or any(name.endswith(s) and name[: -len(s)] in known for s in SUFFIXES)


def expressions() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


@pytest.mark.parametrize(("title", "expr"), expressions())
def test_every_query_names_only_metrics_that_exist(title: str, expr: str) -> None:
    names = names_in(expr)
    assert names, f"{title}: no metric found in {expr!r}"
    assert [name for name in names if not exported(name)] == [], title


def test_the_name_parser_finds_metrics_and_skips_functions_labels_and_variables() -> None:
    expr = 'histogram_quantile(0.95, sum by (le, channel) (rate(x_seconds_bucket{kind=~"a|b"}[$__rate_interval])))'
    assert names_in(expr) == {"x_seconds_bucket"}
    assert names_in("max by (queue) (q_depth) / ignoring(queue) group_left y_total offset 5m") == {"q_depth", "y_total"}
    assert not exported("dispatcher_contact_total") and exported("dispatcher_contacts_total")


def test_the_dashboard_covers_what_operations_watch() -> None:
    text = " ".join(expr for _, expr in expressions())
    for family in ("dispatcher_contacts", "dispatcher_last_look", "dispatcher_plan_decisions",
                   "dispatcher_provider_request_seconds", "dispatcher_provider_errors", "dispatcher_queue_depth",
                   "dispatcher_wakeup_lag_seconds", "dispatcher_http_requests", "dispatcher_rate_limit_waits",
                   "dispatcher_accounts"):  # fmt: skip
        assert family in text
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in dashboard["panels"])
