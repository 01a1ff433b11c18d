"""DISPATCHER_AGENCIES and the placement of accounts with agencies (config/agencies.py): stable, weighted,
independent of Python's salted hash(), and moving only what must move when the set changes; bad inputs are
refused naming the field."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from pydantic import SecretStr

from config.agencies import Agency, placement
from config.settings import SettingsError, load_settings

IDS = [f"ACC-{i:06d}" for i in range(100_000)]


def agency(name: str, weight: float) -> Agency:
    return Agency(name=name, url=f"https://{name}.example/cases", api_key=SecretStr("k"), weight=weight)


THREE = (agency("north", 5), agency("south", 3), agency("east", 2))


def test_over_100000_accounts_each_agencys_share_is_within_a_point_of_its_weight() -> None:
    shares = Counter(placement(account_id, THREE).name for account_id in IDS)
    for one in THREE:
        assert abs(shares[one.name] / len(IDS) - one.weight / 10) < 0.01, shares


def test_placement_is_the_same_in_every_process_and_under_every_pythonhashseed() -> None:
    script = (
        "import hashlib, sys; from pydantic import SecretStr; from config.agencies import Agency, placement; "
        "A = [Agency(name=n, url='https://x.example/c', api_key=SecretStr('k'), weight=w) "
        "for n, w in (('north', 5), ('south', 3), ('east', 2))]; "
        "print(hashlib.sha256(','.join(placement(f'ACC-{i:06d}', A).name for i in range(5000)).encode()).hexdigest())"
    )
    here = hashlib.sha256(",".join(placement(account_id, THREE).name for account_id in IDS[:5000]).encode())
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == here.hexdigest()


def test_the_order_of_the_list_does_not_move_an_account() -> None:
    assert all(placement(a, THREE) == placement(a, THREE[::-1]) for a in IDS[:5000])


def test_when_the_set_changes_only_what_must_move_moves() -> None:
    before = {a: placement(a, THREE).name for a in IDS[:20_000]}
    added = {a: placement(a, (*THREE, agency("west", 10))).name for a in before}
    assert {(before[a], added[a]) for a in before if before[a] != added[a]} <= {
        ("north", "west"), ("south", "west"), ("east", "west")}  # fmt: skip
    assert 0.45 < Counter(added.values())["west"] / len(added) < 0.55  # its weight: 10 of 20
    removed = {a: placement(a, THREE[:2]).name for a in before}
    assert all(removed[a] == before[a] for a in before if before[a] != "east")  # only east's accounts move
    heavier = {a: placement(a, (agency("north", 10), *THREE[1:])).name for a in before}
    assert all(heavier[a] == "north" for a in before if before[a] != heavier[a])  # only towards north


def _refusal(monkeypatch: pytest.MonkeyPatch, value: object) -> str:
    monkeypatch.setenv("DISPATCHER_AGENCIES", json.dumps(value))
    with pytest.raises(SettingsError) as refused:
        load_settings()
    return str(refused.value)


def entry(**changes: object) -> dict[str, object]:
    return {"name": "north", "url": "https://north.example/cases", "api_key": "secret-key-1", "weight": 1, **changes}


@pytest.mark.parametrize(
    ("value", "named", "says"),
    [
        ([entry(url="ftp://north.example")], "DISPATCHER_AGENCIES.0.URL", "not an http(s) URL"),
        ([entry(url="north.example/cases")], "DISPATCHER_AGENCIES.0.URL", "not an http(s) URL"),
        ([entry(weight=0)], "DISPATCHER_AGENCIES.0.WEIGHT", "greater than 0"),
        ([entry(weight=-2)], "DISPATCHER_AGENCIES.0.WEIGHT", "greater than 0"),
        ([entry(), entry(name="North")], "DISPATCHER_AGENCIES.1.NAME", "not a name"),
        ([entry(name="agency")], "DISPATCHER_AGENCIES.0.NAME", "the single agency's"),
        ([{"name": "north", "url": "https://n.example/c", "weight": 1}], "DISPATCHER_AGENCIES.0.API_KEY", "required"),
        ([entry(), entry(weight=2)], "DISPATCHER_AGENCIES", "twice: north"),
        ({"name": "north"}, "DISPATCHER_AGENCIES", "tuple"),
    ],
)
def test_a_bad_agency_list_is_refused_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, value: object, named: str, says: str
) -> None:
    message = _refusal(monkeypatch, value)
    assert named in message and says in message, message
    assert "secret-key-1" not in message  # the keys are never echoed


def test_a_good_list_reads_as_agencies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCHER_AGENCIES", json.dumps([entry(), entry(name="south", weight=2.5)]))
    listed = load_settings().agencies
    assert [(a.name, a.weight, a.api_key.get_secret_value()) for a in listed] == [
        ("north", 1.0, "secret-key-1"), ("south", 2.5, "secret-key-1")]  # fmt: skip


def test_config_show_prints_the_agencies_with_their_keys_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    # Was a TypeError: `config show --json` could not print the list's entries.
    from typer.testing import CliRunner

    from dispatcher.commands.cli import app

    monkeypatch.setenv("DISPATCHER_AGENCIES", json.dumps([entry(url="https://u:url-password@north.example/cases")]))
    shown = CliRunner().invoke(app, ["config", "show", "--json"])
    assert shown.exit_code == 0, shown.output
    masked = {"name": "north", "url": "https://u:********@north.example/cases", "api_key": "********", "weight": 1.0}
    assert json.loads(shown.stdout)["DISPATCHER_AGENCIES"]["value"] == [masked]
    assert "secret-key-1" not in shown.stdout and "url-password" not in shown.stdout


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"url": "http://north.bank-partner.cn/cases"}, "north: http://north.bank-partner.cn/cases is not https"),
        ({"url": "http://127.0.0.1:8703/cases"}, "north: http://127.0.0.1:8703/cases is a sandbox or an example"),
        (
            {"url": "https://north.example.com/cases"},
            "north: https://north.example.com/cases is a sandbox or an example",
        ),
        ({"api_key": "agency-key"}, "north: the sandbox's API key"),
    ],
)
def test_production_refuses_an_agency_on_a_sandbox_an_example_or_plain_http(
    monkeypatch: pytest.MonkeyPatch, change: dict[str, str], says: str
) -> None:
    from tests.unit.test_production_guard import REAL

    for name in list(os.environ):
        if name.startswith("DISPATCHER_"):
            monkeypatch.delenv(name)
    good = entry(url="https://north.bank-partner.cn/cases")
    monkeypatch.setenv("DISPATCHER_AGENCIES", json.dumps([good]))
    assert load_settings(**REAL).agencies[0].name == "north"  # a real agency starts
    monkeypatch.setenv("DISPATCHER_AGENCIES", json.dumps([{**good, **change}]))
    with pytest.raises(SettingsError) as refused:
        load_settings(**REAL)
    assert f"DISPATCHER_AGENCIES: {says}" in str(refused.value)
