"""The `dispatcher` command through typer's runner, on the real embedded Redis."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
import typer
import yaml
from typer.main import get_command
from typer.testing import CliRunner

from config.settings import DEFAULT_STRATEGY
from dispatcher.commands.cli import app as library_app
from dispatcher.record.db import migrate
from dispatcher.record.pg_server import EmbeddedPostgres, running_url
from dispatcher.state.redis_keys import history_key
from workers.cli import app

pytestmark = pytest.mark.integration
runner = CliRunner()

CSV_HEADER = (
    "id,name,balance,due_date,timezone,phone,email,consent,"
    "address_line1,address_city,address_postal_code,address_country\n"
)
GOOD_ROW = (
    "C{n},张伟,1200.50,2026-02-20,Asia/Shanghai,+86138000{n:05d},c{n}@example.cn,sms;voice;email,"
    "1 Main St,Shanghai,200000,CN\n"
)


@pytest.fixture
def env(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("DISPATCHER_REDIS_URL", redis_url)
    monkeypatch.setenv("DISPATCHER_STATE_DIR", str(tmp_path / "state"))
    return {"DISPATCHER_REDIS_URL": redis_url}


def test_the_console_command_holds_the_librarys_commands_and_the_clusters() -> None:
    names, library = _command_names(app), _command_names(library_app)
    cluster = {"worker", "beat", "demo", "sandbox", "up", "redis", "postgres", "strategy"}
    assert library == {
        "import",
        "account",
        "simulate",
        "api",
        "api-key",
        "dead-letters",
        "config",
        "experiment",
        "report",
        "callbacks",
        "migrate-keys",
    }
    assert names == library | cluster


def _command_names(typer_app: typer.Typer) -> set[str]:
    group = get_command(typer_app)
    return set(group.list_commands(group.context_class(group)))  # type: ignore[attr-defined]


def test_strategy_check_prints_the_ladder_and_exits_zero() -> None:
    result = runner.invoke(app, ["strategy", "check", str(DEFAULT_STRATEGY)])
    assert result.exit_code == 0, result.output
    for stage in ("reminder", "second_notice", "early", "continuous", "letter", "legal"):
        assert stage in result.output


def test_strategy_check_lists_every_error_with_its_path_and_exits_two(tmp_path: Path) -> None:
    data = yaml.safe_load(Path(DEFAULT_STRATEGY).read_text(encoding="utf-8"))
    data["stages"][0]["steps"][1]["hour"] = 25
    data["stages"][0]["steps"][0]["channel"] = "pigeon"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    result = runner.invoke(app, ["strategy", "check", str(bad)])
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert any(line.strip().startswith("stages.0.steps.0.channel: Input should be 'sms'") for line in lines)
    assert any(line.strip().startswith("stages.0.steps.1.hour: ") for line in lines)


def test_strategy_check_names_a_gap_in_the_ladder_at_the_later_stage(tmp_path: Path) -> None:
    data = yaml.safe_load(Path(DEFAULT_STRATEGY).read_text(encoding="utf-8"))
    data["stages"][1]["days_past_due"] = [9, 15]
    bad = tmp_path / "gap.yaml"
    bad.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    result = runner.invoke(app, ["strategy", "check", str(bad)])
    assert result.exit_code == 2
    assert (
        "stages.1.days_past_due: stage 'second_notice' must start the day after 'reminder' ends (day 8)"
        in result.output
    )


def test_import_takes_the_good_rows_reports_the_bad_ones_by_line_and_a_reimport_changes_nothing(
    env: dict[str, str], tmp_path: Path
) -> None:
    rows = [GOOD_ROW.format(n=1), "C2,李娜,not-money,2026-02-20,Asia/Shanghai,,,,,,,\n", GOOD_ROW.format(n=3),
            "C4,王芳,10.00,2026-02-20,Mars/Olympus,,,,,,,\n"]  # fmt: skip
    source = tmp_path / "accounts.csv"
    source.write_text(CSV_HEADER + "".join(rows), encoding="utf-8")
    first = runner.invoke(app, ["import", str(source)])
    assert first.exit_code == 1
    assert "accepted 2 (created 2, updated 0, unchanged 0); rejected 2" in first.output
    assert "line 3: balance:" in first.output
    assert "line 5: timezone:" in first.output
    second = runner.invoke(app, ["import", str(source)])
    assert "accepted 2 (created 0, updated 0, unchanged 2); rejected 2" in second.output


def test_import_reads_ndjson_and_names_a_line_that_is_not_json(env: dict[str, str], tmp_path: Path) -> None:
    account = {
        "id": "N1",
        "name": "Mary Smith",
        "balance": "99.00",
        "due_date": "2026-02-25",
        "timezone": "Europe/London",
    }
    source = tmp_path / "accounts.ndjson"
    source.write_text(json.dumps(account) + "\n{oops\n", encoding="utf-8")
    result = runner.invoke(app, ["import", str(source)])
    assert "accepted 1 (created 1" in result.output
    assert "line 2: not valid JSON" in result.output
    shown = runner.invoke(app, ["account", "show", "N1", "--json"])
    assert shown.exit_code == 0, shown.output
    body = json.loads(shown.output)
    assert body["account"]["name"] == "Mary Smith"
    assert body["timeline"][0]["event"] == "account_created"


def test_account_show_names_the_provider_of_an_attempt_recorded_before_attempts_named_one(
    env: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "accounts.csv"
    source.write_text(CSV_HEADER + GOOD_ROW.format(n=7), encoding="utf-8")
    assert "accepted 1" in runner.invoke(app, ["import", str(source)]).output
    # An attempt as the claim wrote it before it named the provider: no `provider` in its detail.
    old = {"kind": "attempt", "at": "2026-02-27T02:00:00Z", "contact_id": "C7/reminder/sms/0", "channel": "sms",
           "detail": {"template": "reminder_sms", "stage": "reminder"}}  # fmt: skip
    redis.Redis.from_url(env["DISPATCHER_REDIS_URL"]).rpush(history_key("C7"), json.dumps(old))
    shown = runner.invoke(app, ["account", "show", "C7", "--json"])
    assert shown.exit_code == 0, shown.output
    [row] = [row for row in json.loads(shown.output)["timeline"] if row["kind"] == "attempt"]
    assert row["provider"] == "twilio" and row["template"] == "reminder_sms"
    table = runner.invoke(app, ["account", "show", "C7"])
    assert table.exit_code == 0, table.output
    assert re.search(r"attempt\W+sms\W+twilio\W+C7/reminder/sms/0", table.output), table.output


def test_account_show_of_an_unknown_id_says_so(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["account", "show", "NOPE"])
    assert result.exit_code == 1
    assert "no account 'NOPE'" in result.output


def test_account_show_starts_an_embedded_record_nobody_runs_for_its_own_duration(env: dict[str, str],
                                                                                   tmp_path: Path) -> None:  # fmt: skip
    data_dir = tmp_path / "state" / "pg"
    with EmbeddedPostgres(data_dir) as server:
        migrate(server.url)  # a record was made here; its owner has since stopped it
    result = runner.invoke(app, ["account", "show", "NOPE"])
    assert result.exit_code == 1, result.output
    assert "no account 'NOPE'" in result.output  # Redis and the record were both asked
    assert running_url(data_dir) is None and not (data_dir / "postmaster.pid").exists()  # and it was stopped


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """One simulation (60 accounts, 100 days, seed 3) that the simulate tests read: what it printed and the
    timelines it wrote. Its state directory is set only while it runs, so no other test sees it."""
    folder = tmp_path_factory.mktemp("simulate")
    out = folder / "timelines.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DISPATCHER_STATE_DIR", str(folder / "state"))
        result = runner.invoke(
            app, ["simulate", "--accounts", "60", "--days", "100", "--seed", "3", "--json", str(out)]
        )
    assert result.exit_code == 0, result.output
    return result.output, json.loads(out.read_text(encoding="utf-8"))


def test_simulate_moves_accounts_through_the_ladder_without_a_window_or_cap_breach(
    simulated: tuple[str, dict[str, Any]],
) -> None:
    output, document = simulated
    assert "outside a window / holiday" in output
    assert len(document["accounts"]) == 60
    attempts = [row for account in document["accounts"] for row in account["timeline"] if row["kind"] == "attempt"]
    assert {row["channel"] for row in attempts} >= {"sms", "voice", "email", "letter", "agency"}
    assert all(row["at_utc"] and row["at_local"] for row in attempts)
    # Every attempt names the provider it went to, the one its channel declares; the run counts them.
    providers = {
        "sms": "twilio",
        "voice": "twilio",
        "email": "smtp",
        "letter": "print_vendor",
        "agency": "agency",
        "wechat": "wechat",
    }
    assert all(row["provider"] == providers[row["channel"]] for row in attempts)
    assert "sends by provider" in output
    for provider in ("twilio", "smtp", "print_vendor", "agency"):
        count = sum(1 for row in attempts if row["provider"] == provider)
        assert re.search(rf"\b{provider}\W+{count}\b", output), (provider, count)


def test_simulate_reports_what_the_debtors_paid_by_stage_and_their_plans(
    simulated: tuple[str, dict[str, Any]],
) -> None:
    output, document = simulated
    events = [row for account in document["accounts"] for row in account["timeline"] if row["kind"] == "event"]
    paid = sum(Decimal(row["amount"]) for row in events if row["event"] == "payment")
    assert paid > 0 and "promise_to_pay" in {row["event"] for row in events}
    # The payments the debtors made are the amount collected, and the stages' amounts add up to it.
    row = re.search(r"amount collected\W+((?:[A-Z]{3} [\d.]+(?:, )?)+)", output)
    assert row is not None, output
    assert sum(Decimal(part.split()[1]) for part in row.group(1).split(", ")) == paid
    table = output.split("resolution and amount collected by stage", 1)[1].split("sends by local hour")[0]
    stage_rows = re.findall(r"│ ([a-z_ ]+?)\s+│\s+(\d+) │\s+(\d+) │\s+[\d.%—]+ │\s+([\d.]+) │", table)
    assert {stage for stage, *_ in stage_rows} >= {"reminder", "early", "continuous"}
    assert sum(Decimal(amount) for *_, amount in stage_rows) == paid
    resolved = sum(1 for account in document["accounts"] if account["status"] == "resolved")
    assert sum(int(there) for _, _, there, _ in stage_rows) == resolved
    plans = r"instalment plans \(as the debtors kept them\)\W+made [1-9]\d*, kept \d+, broken \d+"
    assert re.search(plans, output)


def test_simulate_refuses_a_bad_debtor_model_naming_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCHER_STATE_DIR", str(tmp_path / "state"))
    bad = tmp_path / "debtors.yaml"
    bad.write_text("promise_kept: 2\nanswer_by_local_hour: {24: 0.2}\n", encoding="utf-8")
    result = runner.invoke(app, ["simulate", "--accounts", "5", "--days", "5", "--debtors", str(bad)])
    assert result.exit_code == 1
    assert "promise_kept: Input should be less than or equal to 1" in result.output
    assert "answer_by_local_hour.24.[key]: Input should be less than or equal to 23" in result.output
    bad.write_text("intents: {pay_in_full: 0.5}\n", encoding="utf-8")  # the checks across fields, once each is valid
    result = runner.invoke(app, ["simulate", "--accounts", "5", "--days", "5", "--debtors", str(bad)])
    assert result.exit_code == 1 and "intents: the shares must sum to 1, not 0.5" in result.output
