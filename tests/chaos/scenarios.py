"""The chaos scenarios. Each starts a fresh deployment, waits until the provider has accepted its first
contacts (so the faults land under load), injects its faults, then waits for the drain with a deadline and
counts. None of them sleeps for a schedule: every wait polls a condition with a deadline."""

from __future__ import annotations

import base64
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.chaos import failover
from tests.chaos.callbacks import RETRY_SCHEDULE, callbacks_outage
from tests.chaos.harness import CLOCK_START, CODE_ROOT, Deployment, Result, RunConfig, account_id

DEFAULT_ROOT = CODE_ROOT / ".dispatcher-state" / "chaos"
SMS_LIMIT_DEFAULT = 100.0
# The callbacks' receiver runs on this machine; the retry schedule is shortened (tests/chaos/callbacks.py).
CALLBACK_ENV = {"DISPATCHER_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "DISPATCHER_WEBHOOK_RETRY_SCHEDULE": RETRY_SCHEDULE}


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    config: RunConfig
    act: Callable[[Deployment, Result], float]  # injects the faults; returns when the last one ended (epoch s)
    finish: Callable[[Deployment, Result], None] | None = None  # the scenario's own checks, after the drain


Act = Callable[[Deployment, Result], float]
Finish = Callable[[Deployment, Result], None]


def run(scenario: Scenario, root: Path = DEFAULT_ROOT) -> Result:
    started = time.time()
    result = Result(scenario.name, scenario.config.accounts, [], deadline=scenario.config.drain_seconds)
    try:
        with Deployment(scenario.name, scenario.config, root / scenario.name) as deployment:
            result.contacts = deployment.seed()
            try:
                last_fault = scenario.act(deployment, result)
            finally:
                result.faults = deployment.faults
            tally, drained = deployment.drain(last_fault, scenario.config.drain_seconds, settle=2.0)
            result.tally, result.drain_seconds = tally, drained
            _common_findings(deployment, result)
            if scenario.finish is not None:
                scenario.finish(deployment, result)
            result.info["logs"] = str(deployment.root)
    except Exception as exc:  # the harness itself failed: say so, fail the row
        result.error = f"{type(exc).__name__}: {exc}"
    result.wall_seconds = time.time() - started
    return result


def _common_findings(deployment: Deployment, result: Result) -> None:
    tally = result.tally
    assert tally is not None and deployment.provider is not None
    report = deployment.process_report()
    restarts = {name: len(exits) for name, exits in report["exits"].items()}
    result.info["claims at end"] = ", ".join(f"{k} {v}" for k, v in sorted(tally.claim_states.items()))
    result.info["accepted by provider"] = f"{tally.accepted} of {tally.contacts}"
    if tally.other_claims:
        result.info["other claims at end (not the planned SMS)"] = ", ".join(
            f"{k} x{v}" for k, v in sorted(tally.other_claims.items())
        )
    if tally.unsettled:
        result.info["accepted but claim still in doubt"] = str(tally.unsettled)
    if restarts:
        result.info["process exits (restarted unless exit 0)"] = ", ".join(
            f"{name} {count}" for name, count in sorted(restarts.items())
        )
    if report["dead_exit0"]:
        result.notes.append(f"exited 0 on their own and were left dead (Restart=on-failure): {report['dead_exit0']}")
    for line in report["critical"][:4]:
        result.notes.append(f"log: {line}")
    callbacks = deployment.provider.callbacks
    if callbacks.get("5xx") or callbacks.get("error"):
        refused = f"5xx {callbacks.get('5xx', 0)}, no answer {callbacks.get('error', 0)}"
        result.info["provider callbacks refused"] = refused
    best, _ = deployment.provider.max_rate()
    result.info["max SMS requests in any 1 s at the provider"] = str(best)
    for kind, samples in tally.samples.items():
        result.notes.append(f"{kind} e.g. {', '.join(samples[:5])}")


def _after_first_sends(deployment: Deployment, count: int = 20) -> float:
    deployment.wait_accepted(count, timeout=90)
    return time.time()


# ------------------------------------------------------------------------------------------------- 1 storm


def sigkill_storm(every: float = 2.0, duration: float = 30.0, seed: int = 1) -> Act:
    def act(deployment: Deployment, result: Result) -> float:
        rng = random.Random(seed)
        start = _after_first_sends(deployment)
        targets = [name for name in deployment.supervisor.members if name.startswith("worker-")] + ["beat"]
        kills: Counter[str] = Counter()
        next_at = start
        last = start
        while time.time() - start < duration:
            if time.time() >= next_at:
                name = rng.choice(targets)
                if deployment.supervisor.members[name].kill9():
                    kills[name] += 1
                    last = time.time()
                next_at += every
            time.sleep(0.05)
        deployment.fault(
            f"SIGKILL every {every:g} s for {duration:g} s: " + ", ".join(f"{n} x{c}" for n, c in sorted(kills.items()))
        )
        return last

    return act


# ------------------------------------------------------------------------------------------------- 2 redis


def _probe_api(deployment: Deployment, stop: threading.Event, seen: Counter[str]) -> None:
    while not stop.is_set():
        status, _ = deployment.http("GET", f"/v1/accounts/{account_id(0)}")
        seen[str(status)] += 1
        stop.wait(0.25)


def redis_outage(how: str, down_for: float = 5.0, after: float = 4.0) -> Act:
    def act(deployment: Deployment, result: Result) -> float:
        assert deployment.redis_node is not None
        start = _after_first_sends(deployment)
        while time.time() - start < after:
            time.sleep(0.05)
        seen: Counter[str] = Counter()
        stop = threading.Event()
        probe = threading.Thread(target=_probe_api, args=(deployment, stop, seen), daemon=True)
        before = deployment.safe_tally()
        if how == "shutdown":
            deployment.redis_node.shutdown()
        else:
            deployment.redis_node.kill9()
        probe.start()
        down_at = time.time()
        while time.time() - down_at < down_for:
            time.sleep(0.05)
        deployment.redis_node.start()
        back = time.time()
        stop.set()
        probe.join(5)
        accepted = before.accepted if before else "?"
        deployment.fault(
            f"Redis {'SHUTDOWN' if how == 'shutdown' else 'kill -9'} after {accepted} sends, "
            f"down {back - down_at:.1f} s, restarted on the same port and data (AOF)"
        )
        result.info["API GET while Redis was down (status x count)"] = ", ".join(
            f"{k} x{v}" for k, v in sorted(seen.items())
        )
        return back

    return act


# ---------------------------------------------------------------------------------------------- 3 provider


def provider_trouble(
    outage: float = 30.0, slow: float = 15.0, latency: float = 0.3, hang: float = 12.0, accept_hold: int = 20
) -> tuple[Act, Finish]:
    def act(deployment: Deployment, result: Result) -> float:
        start = _after_first_sends(deployment)
        while time.time() - start < 2.0:
            time.sleep(0.05)
        deployment.set_provider_faults(fail_503=10**9)
        t0 = time.time()
        while time.time() - t0 < outage:
            time.sleep(0.05)
        deployment.set_provider_faults(fail_503=0)
        deployment.fault(f"Twilio 503 on every request for {outage:g} s")
        deployment.set_provider_faults(latency=latency)
        t1 = time.time()
        while time.time() - t1 < slow:
            time.sleep(0.05)
        deployment.set_provider_faults(latency=0.0, hang=hang)
        t2 = time.time()
        while time.time() - t2 < 2.0:
            time.sleep(0.05)
        deployment.set_provider_faults(hang=0.0)
        accepted = deployment.set_provider_faults(accept_then_hang=accept_hold, accept_hang_seconds=hang)
        deployment.fault(
            f"then {latency:g} s latency on every request for {slow:g} s; then every request arriving in 2 s held "
            f"{hang:g} s before it is read (the client's 10 s timeout fires; no message is created)"
        )
        if "error" in accepted:
            result.notes.append(f"the sandbox has no accept-then-hang fault here: {accepted['error']}")
        else:
            deployment.fault(
                f"then {accept_hold} requests accepted (message created) with the answer held {hang:g} s "
                "(ambiguous: sent, but the client timed out)"
            )
            deadline = time.time() + 60
            while deployment.provider_faults().get("accept_then_hang", 0) > 0 and time.time() < deadline:
                time.sleep(0.2)
            left = deployment.provider_faults().get("accept_then_hang", 0)
            deployment.set_provider_faults(accept_then_hang=0)
            if left:
                result.notes.append(f"only {accept_hold - left} of {accept_hold} accept-then-hang faults were met")
        return time.time() + hang

    def finish(deployment: Deployment, result: Result) -> None:
        assert deployment.provider is not None
        limit = (deployment.config.rate_limits or {}).get("sms", SMS_LIMIT_DEFAULT)
        best, total = deployment.provider.max_rate()
        over = deployment.provider.windows_over(limit)
        starts = sorted({round(at) for at, _ in over})
        statuses = Counter(str(s) for _, p, s in deployment.provider.requests if p.endswith("/Messages.json"))
        result.info["SMS requests at the provider by status"] = ", ".join(
            f"{k} x{v}" for k, v in sorted(statuses.items())
        )
        result.checks["provider rate <= limit in every 1 s window"] = (
            best <= limit,
            f"max {best} in 1 s vs {limit:g}/s; {len(over)} of {total} requests start an over-full window"
            + (f" (at {', '.join(f'{t} s' for t in starts[:8])} after the first request)" if over else ""),
        )

    return act, finish


def provider_outage(outage: float = 30.0) -> Act:
    """Twilio answers 503 to every request for `outage` seconds, without Retry-After (as Twilio's own 503s
    come): the contacts that met it wait the transient back-off of the settings in force."""

    def act(deployment: Deployment, result: Result) -> float:
        start = _after_first_sends(deployment)
        while time.time() - start < 2.0:
            time.sleep(0.05)
        deployment.set_provider_faults(fail_503=10**9, retry_after=None)
        t0 = time.time()
        while time.time() - t0 < outage:
            time.sleep(0.05)
        deployment.set_provider_faults(fail_503=0)
        deployment.fault(f"Twilio 503 (no Retry-After) on every request for {outage:g} s")
        return time.time()

    return act


# ------------------------------------------------------------------------------------------------ 4 poison


def _kombu_envelope(queue: str, body: bytes, task: str = "dispatcher.send") -> str:
    task_id = str(uuid.uuid4())
    return json.dumps({
        "body": base64.b64encode(body).decode(), "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "parent_id": None, "group": None,
                    "retries": 0, "eta": None, "expires": None, "argsrepr": "(...)", "kwargsrepr": "{}",
                    "origin": "chaos"},
        "properties": {"correlation_id": task_id, "reply_to": "", "delivery_mode": 2,
                       "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
                       "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())},
    })  # fmt: skip


def _payload(contact: str, account: str, template: str = "reminder_sms", due_at: str | None = None) -> dict[str, str]:
    return {
        "id": contact, "account_id": account, "channel": "sms", "template": template, "stage": "reminder",
        "step": "sms", "due_at": due_at or CLOCK_START.isoformat(),
    }  # fmt: skip


def poison() -> tuple[Act, Finish]:
    def act(deployment: Deployment, result: Result) -> float:
        from celery import Celery

        _after_first_sends(deployment)
        client = deployment.client
        # Raw bodies straight onto the queues' Redis lists (kombu LPUSHes a JSON envelope; BRPOP takes it).
        client.lpush("sms", "this is not JSON {")
        client.lpush("plan", b"\x00\xff\xfe binary garbage")
        client.lpush("sms", _kombu_envelope("sms", b"{not json either"))
        sender = Celery("chaos", broker=deployment.env["DISPATCHER_REDIS_URL"])
        victim = account_id(5)
        bad_args: list[Any] = [
            ["not a list of payloads"],
            [[{"id": f"{victim}/reminder/sms/0"}]],  # missing fields
            [[_payload("NOSUCH/reminder/sms/0", victim)]],  # a contact id of no account, on a real account
            [[_payload(f"{victim}/reminder/sms/9", victim, template="no_such_template", due_at="yesterday")]],
        ]
        for args in bad_args:
            sender.send_task("dispatcher.send", args=args, queue="sms")
        sender.send_task("dispatcher.ingest_event", args=[victim, {"kind": "no_such_event"}], queue="plan")
        sender.close()
        deployment.fault(
            "3 raw bodies on the sms/plan lists (non-JSON, binary, an envelope with a non-JSON body); "
            "5 tasks with bad args (not a list, missing fields, a contact id of no account on a real account, "
            "a bad date, an unknown event kind)"
        )
        return time.time()

    def finish(deployment: Deployment, result: Result) -> None:
        report = deployment.process_report()
        exits = sum(len(v) for v in report["exits"].values())
        result.checks["workers stayed up"] = (exits == 0, f"{exits} process exits")
        try:
            letters = deployment.client.xlen("dispatcher:dead-letters")
        except Exception as exc:  # not a stream (or absent on code before the dead letters)
            letters = f"unreadable: {exc}"
        result.info["entries in the dead-letter stream dispatcher:dead-letters"] = str(letters)

    return act, finish


# ---------------------------------------------------------------------------------------------- 5 payments


def payments(share: float = 0.4, seed: int = 3) -> tuple[Act, Finish]:
    state: dict[str, Any] = {}

    def act(deployment: Deployment, result: Result) -> float:
        assert deployment.provider is not None
        _after_first_sends(deployment)
        deployment.provider.poll()
        not_yet = sorted({a for c, a in deployment.expected.items() if c not in deployment.provider.accepted})
        rng = random.Random(seed)
        chosen = rng.sample(not_yet, int(len(not_yet) * share))
        answered: dict[str, tuple[int, float]] = {}

        def pay(account: str) -> None:
            body = {"kind": "payment", "amount": str(deployment.balances[account])}
            status, _ = deployment.http("POST", f"/v1/accounts/{account}/events", body, key=str(uuid.uuid4()))
            answered[account] = (status, time.time())
            if status in (200, 201):
                deployment.withdrawn.add(account)

        t0 = time.time()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(pay, chosen))
        ok = sum(1 for s, _ in answered.values() if s in (200, 201))
        deployment.fault(
            f"{len(chosen)} payments in full through POST /v1/accounts/ID/events in {time.time() - t0:.1f} s, "
            f"for accounts whose SMS was queued and not yet sent ({ok} answered 200)"
        )
        state["answered"] = answered
        return time.time()

    def finish(deployment: Deployment, result: Result) -> None:
        assert deployment.provider is not None
        paid = sorted(deployment.withdrawn)
        histories = deployment.history(paid)
        after_claim = in_flight = 0
        samples = []
        for account in paid:
            contact = next(c for c, a in deployment.expected.items() if a == account)
            seen = deployment.provider.accepted.get(contact)
            if not seen:
                continue
            entries = histories[account]
            paid_at = next((i for i, e in enumerate(entries) if e.get("event") == "payment"), None)
            claimed = [
                i for i, e in enumerate(entries) if e.get("kind") == "attempt" and e.get("contact_id") == contact
            ]
            if paid_at is not None and (not claimed or claimed[-1] > paid_at):
                after_claim += 1
                samples.append(contact)
            else:
                _, answered_at = state["answered"].get(account, (0, 0.0))
                if min(seen) > answered_at:
                    in_flight += 1
        result.checks["0 sent after the payment was recorded"] = (
            after_claim == 0,
            f"{after_claim} claimed after the payment and sent; {len(paid)} paid",
        )
        result.info["claimed before the payment, reached the provider after the API answered"] = str(in_flight)
        if samples:
            result.notes.append(f"sent after payment e.g. {', '.join(samples[:5])}")

    return act, finish


# ------------------------------------------------------------------------------------------------ bounded


def bounded_kill_and_restart() -> Act:
    """The part inside `make test`: one worker SIGKILL while sending, then one Redis SHUTDOWN and restart."""

    def act(deployment: Deployment, result: Result) -> float:
        assert deployment.redis_node is not None
        deployment.wait_accepted(30, timeout=90)
        deployment.supervisor.members["worker-0"].kill9()
        deployment.fault("SIGKILL worker-0")
        deployment.wait_accepted(120, timeout=90)
        deployment.redis_node.shutdown()
        down = time.time()
        while time.time() - down < 2.0:
            time.sleep(0.05)
        deployment.redis_node.start()
        deployment.fault("Redis SHUTDOWN, 2 s down, restart on the same port and data")
        return time.time()

    return act


FULL: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("sigkill-storm", "1. SIGKILL storm of workers and beat", RunConfig(accounts=3000), sigkill_storm()),
        Scenario("redis-shutdown", "2a. Redis SHUTDOWN under load", RunConfig(accounts=2000), redis_outage("shutdown")),
        Scenario("redis-kill9", "2b. Redis kill -9 under load", RunConfig(accounts=2000), redis_outage("kill9")),
        Scenario("provider", "3. Provider outage and slowness", RunConfig(accounts=3000), *provider_trouble()),
        Scenario(
            "provider-defaults",
            "3b. Provider outage, default settings",
            # The dispatcher's clock in real time and every wall-clock setting at its default (time limit 120 s,
            # visibility 600 s, stranded after 180 s): the retry back-off is the one a deployment gets.
            RunConfig(accounts=3000, clock_factor=1.0, task_time_limit=120, visibility_timeout=600, stranded_after=180),
            provider_outage(),
            provider_trouble()[1],  # the provider-side rate check
        ),
        Scenario("poison", "4. Poison bodies and bad task args", RunConfig(accounts=1000), *poison()),
        Scenario("payments", "5. Payments racing queued contacts", RunConfig(accounts=1500), *payments()),
        Scenario(
            "callbacks",
            "6. Outcome callbacks: receiver down, SIGKILL storm, Redis SHUTDOWN",
            RunConfig(accounts=1000, drain_seconds=180.0, extra_env=CALLBACK_ENV),
            *callbacks_outage(),
        ),
        Scenario("provider-failover", "7. Provider failover (Aliyun, then Twilio)", *failover.scenario_parts()),
    )
}

BOUNDED = Scenario(
    "bounded",
    "bounded: one worker kill, one Redis restart",
    RunConfig(
        accounts=300,
        clock_factor=30.0,
        task_time_limit=10,
        visibility_timeout=15,
        stranded_after=30,
        # The reconciler judges a claim in doubt once the time limit plus 60 s have passed, at housekeeping's
        # next minute: up to ~130 s after a kill mid-send.
        drain_seconds=150.0,
        rate_limits={"sms": 30.0, "voice": 10.0, "email": 50.0, "letter": 20.0, "agency": 5.0},
    ),
    bounded_kill_and_restart(),
)
