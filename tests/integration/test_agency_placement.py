"""Agencies as providers of the agency channel, through the real parts: the worker's own wiring (build_runtime)
on the real Redis, the real agency adapter, and two agency sandboxes (the shared one as `north`, a second
instance as `south`). What is shown: each case goes to the agency its account's placement names, once; an
agency that cannot take cases holds its own (they wait, never placed elsewhere) and they go once it is back;
a hand-off in doubt is reconciled with the agency it went to; each agency's breaker is its own."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from channels.agency import AgencyAdapter
from channels.sandbox import HttpSandbox, Sandboxes
from channels.sandbox.agency import CASES_PATH, AgencySandbox, create_app
from channels.sandbox.server import ServerHandle
from config.agencies import placement
from config.settings import load_settings
from dispatcher.core.clock import ManualClock
from dispatcher.core.events import AdhocContact
from dispatcher.core.models import Channel, ClaimStatus, Contact
from dispatcher.core.timeline import timeline
from tests.conftest import make_account
from workers.process_runtime import WorkerRuntime, build_runtime
from workers.queueing import dispatch
from workers.reconcile import reconcile

pytestmark = pytest.mark.integration

KEY = "agency-key"  # the sandboxes' key (the shared one takes the settings' default)


@pytest.fixture(scope="module")
def south(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpSandbox[AgencySandbox]]:
    """A second agency sandbox: its own cases, log and faults, on a port of its own."""
    state = AgencySandbox(Path(tmp_path_factory.mktemp("agency-south")), KEY)
    running = HttpSandbox(state, ServerHandle(create_app(state), "127.0.0.1", 0))
    yield running
    running.stop()


@pytest.fixture
def agencies(
    redis_url: str, worker_sandboxes: Sandboxes, south: HttpSandbox[AgencySandbox], clock: ManualClock
) -> Iterator[Callable[..., WorkerRuntime]]:
    """A worker runtime with DISPATCHER_AGENCIES naming both sandboxes (weights 3 and 1 unless told)."""

    def make(north_weight: float = 3, south_key: str = KEY, **more: Any) -> WorkerRuntime:
        listed = [
            {"name": "north", "url": worker_sandboxes.agency.url + CASES_PATH, "api_key": KEY, "weight": north_weight},
            {"name": "south", "url": south.url + CASES_PATH, "api_key": south_key, "weight": 1},
        ]
        settings = load_settings(redis_url=redis_url, send_retries=2, **worker_sandboxes.settings_overrides(),
                                 agencies=listed, rate_limits={"agency": 1000.0}, **more)  # fmt: skip
        runtime = build_runtime(settings, dispatch, clock=clock, retry_wait=0.01)
        runtime.engine.on_queued = lambda contacts: None
        return runtime

    yield make
    for sandbox in (worker_sandboxes.agency, south):
        sandbox.faults.set(fail_503=0, accept_then_hang=0)


def _hand_offs(
    runtime: WorkerRuntime, clock: ManualClock, account_ids: Sequence[str], made: bool = False
) -> list[Contact]:
    """One agency hand-off queued for each past-due account (an agent's ad-hoc request); new ones unless `made`."""
    if not made:
        due = clock.now().date() - timedelta(days=40)
        runtime.engine.upsert_many([make_account(account_id, due_date=due) for account_id in account_ids])
    contacts = []
    for account_id in account_ids:
        request = AdhocContact(channel=Channel.AGENCY, template="legal_handoff", key="handoff")
        queued = runtime.engine.record_event(account_id, request).queued
        contacts += [contact for contact in queued if contact.channel == Channel.AGENCY]
    assert len(contacts) == len(account_ids), "each account has its hand-off queued"
    return contacts


def _received(*sandboxes: HttpSandbox[AgencySandbox]) -> list[Counter[str]]:
    """Per sandbox: how many cases it holds for each contact id."""
    return [Counter(case["reference"] for case in sandbox.state.cases.values()) for sandbox in sandboxes]


def _provider_of(runtime: WorkerRuntime, contact: Contact) -> list[str]:
    history = runtime.engine.store.load(contact.account_id).history
    return [e.detail["provider"] for e in history if e.kind == "attempt" and e.contact_id == contact.id]


def test_each_case_goes_once_to_the_agency_its_account_is_placed_with(
    agencies: Callable[..., WorkerRuntime], worker_sandboxes: Sandboxes, south: HttpSandbox[AgencySandbox],
    clock: ManualClock,
) -> None:  # fmt: skip
    runtime = agencies()
    contacts = _hand_offs(runtime, clock, [f"AP{i}" for i in range(24)])
    placed = {c.id: placement(c.account_id, runtime.settings.agencies).name for c in contacts}
    assert set(placed.values()) == {"north", "south"}  # both take some of the 24
    assert {d.result for d in runtime.deliverer.deliver_many(contacts)} == {"sent"}
    north_cases, south_cases = _received(worker_sandboxes.agency, south)
    for contact in contacts:
        expected = (1, 0) if placed[contact.id] == "north" else (0, 1)
        assert (north_cases[contact.id], south_cases[contact.id]) == expected
        assert _provider_of(runtime, contact) == [placed[contact.id]]  # the attempt names the agency
    one = contacts[0]
    sent = [a for a in runtime.engine.store.audit(one.account_id) if a["type"] == "contact" and a["status"] == "sent"]
    assert [(a["provider"], a["placed_balance"]) for a in sent] == [(placed[one.id], "5000.00")]  # make_account's
    loaded = runtime.engine.store.load(one.account_id)
    assert loaded.record is not None
    rows = [row["provider"] for row in timeline(loaded.record, loaded.history) if row["kind"] == "attempt"]
    assert rows == [placed[one.id]]
    keys = set(runtime.engine.store.redis.keys("{rl:*"))  # each agency's rate limit is its own
    assert any(k.startswith("{rl:agency.north:") for k in keys) and any(k.startswith("{rl:agency.south:") for k in keys)


@pytest.mark.parametrize("fault", ["503", "connection refused"])
def test_an_agency_that_is_down_holds_its_own_cases_until_it_is_back_and_none_go_elsewhere(
    agencies: Callable[..., WorkerRuntime], worker_sandboxes: Sandboxes, south: HttpSandbox[AgencySandbox],
    clock: ManualClock, fault: str,
) -> None:  # fmt: skip
    runtime = agencies()
    contacts = _hand_offs(runtime, clock, [f"AD{fault[0]}{i}" for i in range(16)])
    to_south = {c.id for c in contacts if placement(c.account_id, runtime.settings.agencies).name == "south"}
    assert to_south and len(to_south) < len(contacts)
    adapters, working = runtime.deliverer.adapters, runtime.deliverer.adapters["agency.south"]
    if fault == "503":
        south.faults.set(fail_503=1000)  # south answers 503 to everything: nothing reaches it
    else:  # south's address refuses the connection: the request never left
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed = f"http://127.0.0.1:{probe.getsockname()[1]}{CASES_PATH}"
        agency = next(a for a in runtime.settings.agencies if a.name == "south")
        adapters["agency.south"] = AgencyAdapter(runtime.settings, agency=agency.model_copy(update={"url": closed}))
    results = {d.contact_id: d.result for d in runtime.deliverer.deliver_many(contacts)}
    assert {results[c] for c in to_south} == {"retry"}  # waiting for south, not failed over
    assert {r for c, r in results.items() if c not in to_south} == {"sent"}
    north_cases, south_cases = _received(worker_sandboxes.agency, south)
    assert not any(north_cases[c] for c in to_south) and not any(south_cases[c] for c in to_south)
    for contact in contacts:
        if contact.id in to_south:
            assert runtime.engine.store.claim_status(contact.account_id, contact.id) == ClaimStatus.QUEUED
    south.faults.set(fail_503=0)  # back: the waiting cases go, to south, once
    adapters["agency.south"] = working
    waiting = [c for c in contacts if c.id in to_south]
    assert {d.result for d in runtime.deliverer.deliver_many(waiting)} == {"sent"}
    north_cases, south_cases = _received(worker_sandboxes.agency, south)
    assert [(north_cases[c.id], south_cases[c.id]) for c in waiting] == [(0, 1)] * len(waiting)
    for contact in waiting:  # two attempts, both naming south: the one that waited and the one that went
        assert set(_provider_of(runtime, contact)) == {"south"}


def test_a_wrong_key_opens_only_that_agencys_breaker_and_its_cases_wait(
    agencies: Callable[..., WorkerRuntime], worker_sandboxes: Sandboxes, south: HttpSandbox[AgencySandbox],
    clock: ManualClock,
) -> None:  # fmt: skip
    runtime = agencies(south_key="a-wrong-key")
    contacts = _hand_offs(runtime, clock, [f"AB{i}" for i in range(16)])
    to_south = {c.id for c in contacts if placement(c.account_id, runtime.settings.agencies).name == "south"}
    results = {d.contact_id: d.result for d in runtime.deliverer.deliver_many(contacts)}
    assert {results[c] for c in to_south} == {"circuit_open"}
    assert {r for c, r in results.items() if c not in to_south} == {"sent"}
    assert runtime.deliverer.breaker.state("agency.south").is_open
    assert not runtime.deliverer.breaker.state("agency.north").is_open
    north_cases, south_cases = _received(worker_sandboxes.agency, south)
    assert not any(north_cases[c] for c in to_south) and not any(south_cases[c] for c in to_south)


def test_a_burst_of_failures_opens_only_that_agencys_breaker_and_its_probe_sends_the_cases_once_back(
    agencies: Callable[..., WorkerRuntime], worker_sandboxes: Sandboxes, south: HttpSandbox[AgencySandbox],
    clock: ManualClock,
) -> None:  # fmt: skip
    runtime = agencies(provider_error_burst=3)
    ids = [f"AF{i}" for i in range(24)]
    contacts = _hand_offs(runtime, clock, ids)
    to_south = [c for c in contacts if placement(c.account_id, runtime.settings.agencies).name == "south"]
    assert len(to_south) >= 3
    south.faults.set(fail_503=1000)
    results = {d.contact_id: d.result for d in runtime.deliverer.deliver_many(contacts)}
    assert {results[c.id] for c in to_south} == {"retry"} and list(results.values()).count("sent") == 24 - len(to_south)
    breaker = runtime.deliverer.breaker
    assert breaker.state("agency.south").is_open and not breaker.state("agency.north").is_open
    assert breaker.state("agency.south").reason.startswith("down: 3 failed requests")
    # While it is open, south's cases are held on the schedule: nothing is claimed, nothing goes anywhere.
    assert {d.result for d in runtime.deliverer.deliver_many(to_south)} == {"circuit_open"}
    south.faults.set(fail_503=0)
    breaker.probe_now("agency.south")  # as a worker start does; else the opening ends by itself
    clock.advance(timedelta(minutes=1))
    south_ids = [c.account_id for c in to_south]
    again = [c for r in runtime.engine.replan_many(south_ids) for c in r.queued if c.channel == Channel.AGENCY]
    assert sorted(c.id for c in again) == sorted(c.id for c in to_south)
    assert {d.result for d in runtime.deliverer.deliver_many(again)} == {"sent"}  # the probe, then the rest
    assert not breaker.state("agency.south").is_open
    north_cases, south_cases = _received(worker_sandboxes.agency, south)
    assert [(north_cases[c.id], south_cases[c.id]) for c in to_south] == [(0, 1)] * len(to_south)


def test_a_hand_off_in_doubt_is_reconciled_with_the_agency_it_went_to(
    agencies: Callable[..., WorkerRuntime], worker_sandboxes: Sandboxes, south: HttpSandbox[AgencySandbox],
    clock: ManualClock,
) -> None:  # fmt: skip
    runtime = agencies()
    contacts = _hand_offs(runtime, clock, [f"AQ{i}" for i in range(12)])
    contact = next(c for c in contacts if placement(c.account_id, runtime.settings.agencies).name == "south")
    agency = next(a for a in runtime.settings.agencies if a.name == "south")
    runtime.deliverer.adapters["agency.south"] = AgencyAdapter(runtime.settings, timeout=0.5, agency=agency)
    south.faults.set(accept_then_hang=1, accept_hang_seconds=2.0)  # stored, then no answer: the client gives up
    assert [d.result for d in runtime.deliverer.deliver_many([contact])] == ["unknown"]
    assert runtime.engine.store.claim_status(contact.account_id, contact.id) == ClaimStatus.UNKNOWN
    assert _received(worker_sandboxes.agency, south)[0][contact.id] == 0  # never tried with north
    assert reconcile(runtime, now=time.time() + 3600) == {"sent": 1}  # south's own list has it
    assert runtime.engine.store.claim_status(contact.account_id, contact.id) == ClaimStatus.SENT
    reconciled = [a for a in runtime.engine.store.audit(contact.account_id) if a.get("reason") == "reconciled_unknown"]
    assert [a["provider"] for a in reconciled] == ["south"]
    north_cases, south_cases = _received(worker_sandboxes.agency, south)
    assert (north_cases[contact.id], south_cases[contact.id]) == (0, 1)  # placed once, with south


def test_without_agencies_listed_the_single_agency_takes_every_case(
    redis_url: str, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    settings = load_settings(redis_url=redis_url, send_retries=2, **worker_sandboxes.settings_overrides(),
                             rate_limits={"agency": 1000.0})  # fmt: skip
    runtime = build_runtime(settings, dispatch, clock=clock, retry_wait=0.01)
    runtime.engine.on_queued = lambda contacts: None
    contacts = _hand_offs(runtime, clock, ["AS1", "AS2"])
    assert [d.result for d in runtime.deliverer.deliver_many(contacts)] == ["sent", "sent"]
    assert [_provider_of(runtime, c) for c in contacts] == [["agency"], ["agency"]]
    assert [_received(worker_sandboxes.agency)[0][c.id] for c in contacts] == [1, 1]
