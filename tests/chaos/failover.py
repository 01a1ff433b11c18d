"""The provider failover row: two SMS providers under the China-first route, the first of them failing.

The deployment is the harness's (tests/chaos/harness.py) with `DISPATCHER_ROUTES={"sms": {"CN": ["aliyun",
"twilio"], "*": ["twilio"]}}` and resting weights Aliyun 90, Twilio 10; every seeded account is a Chinese mobile,
so each text goes to Aliyun first. The counts come from both sandboxes' own records: Twilio's
`message.created` and Aliyun's `message.sent` (its OutId is the contact id), merged, so a contact id both
accepted counts as a duplicate, and per sandbox.

    (a) Aliyun answers 503 to every request for 60 s under load: the texts go through Twilio meanwhile (a 503 is a
        definite non-send: failover), Aliyun's weight falls (a burst of errors, -10 at most once per 5 minutes on
        the deployment's clock) and tends back to its rest after (15 quiet minutes, then 10 per 5 minutes);
    (b) then 20 SendSms Aliyun accepts with the answer held past the client's 10 s timeout: ambiguous, so never
        resent through Twilio; each claim ends `unknown` and the reconciler (housekeeping, in beat) asks
        Aliyun's QuerySendDetails, the provider its attempt names. Aliyun's delivery reports are pushed
        REPORT_DELAY seconds after a send here, after the reconciler has judged: with prompt reports, a claim in
        doubt is settled by its report first (which the API believes only when its own QuerySendDetails agrees),
        and the reconciler's lookup is never needed.

The weights are read as the workers read them: the stored weight and when it moved, tended on the run's clock.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from tests.chaos.harness import Deployment, ProviderLog, Result, RunConfig

ROUTES = {"sms": {"CN": ["aliyun", "twilio"], "*": ["twilio"]}}
RESTING = {"sms": {"aliyun": 90, "twilio": 10}}
OUTAGE_SECONDS = 60.0
HELD = 20  # SendSms accepted, answer held
HOLD_SECONDS = 12.0  # past the adapter's 10 s timeout
REPORT_DELAY = 600.0  # Aliyun's reports come late (carriers' receipts can take minutes): after the run
RECOVERY_DEADLINE = 420.0  # wall seconds after the outage for the weight to be back at rest (accelerated clock)

CONFIG = RunConfig(
    accounts=500,
    # 5 texts a second per provider, so that the 500 contacts take about two minutes: the outage and the held
    # answers land under load.
    rate_limits={"sms": 5.0, "sms.aliyun": 5.0, "voice": 10.0, "email": 50.0, "letter": 20.0, "agency": 5.0},
    # The reconciler judges a claim in doubt once the time limit (20 s) plus 60 s have passed, at housekeeping's
    # next minute.
    drain_seconds=240.0,
    extra_env={"DISPATCHER_ROUTES": json.dumps(ROUTES), "DISPATCHER_PROVIDER_WEIGHTS": json.dumps(RESTING)},
    sandbox_args=("--aliyun-report-delay", str(REPORT_DELAY)),
)


class RoutedProviderLog(ProviderLog):
    """Twilio's records (ProviderLog) and Aliyun's: `accepted` holds both, `aliyun` Aliyun's alone."""

    def __init__(self, sandboxes: Path) -> None:
        super().__init__(sandboxes / "twilio")
        self.aliyun_path = sandboxes / "aliyun" / "aliyun.ndjson"
        self._offsets[self.aliyun_path] = 0
        self.aliyun: dict[str, list[float]] = defaultdict(list)
        self.aliyun_refused: Counter[str] = Counter()
        self.aliyun_held = 0

    def poll(self) -> None:
        super().poll()
        for record in self._lines(self.aliyun_path):
            event = record.get("event")
            if event == "message.sent":
                contact = str(record.get("out_id") or "")
                if contact:
                    self.accepted[contact].append(record["at"])
                    self.aliyun[contact].append(record["at"])
                else:
                    self.unlabelled += 1
            elif event == "message.refused":
                self.aliyun_refused[str(record.get("code"))] += 1
            elif event == "fault.accept_then_hang":
                self.aliyun_held += 1

    def twilio(self, contact: str) -> int:
        return len(self.accepted.get(contact, ())) - len(self.aliyun.get(contact, ()))

    def between(self, start: float, end: float) -> tuple[int, int]:
        """Texts (Aliyun, Twilio) accepted between two moments."""
        aliyun = sum(1 for times in self.aliyun.values() for t in times if start <= t < end)
        every = sum(1 for times in self.accepted.values() for t in times if start <= t < end)
        return aliyun, every - aliyun


def _aliyun_faults(deployment: Deployment, **faults: Any) -> dict[str, Any]:
    url = str(deployment.sandbox_overrides["aliyun_endpoint"]).rstrip("/") + "/_sandbox/faults"
    request = urllib.request.Request(
        url, data=json.dumps(faults).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        reply: dict[str, Any] = json.loads(answer.read())
    return reply


def sms_weights(deployment: Deployment) -> dict[str, float]:
    """The sms providers' weights now, as every worker reads them (tended on the run's clock)."""
    from dispatcher.state.provider_health import tended
    from dispatcher.state.redis_keys import provider_weights_key

    raw = deployment.client.hgetall(provider_weights_key("sms"))
    now = deployment.clock().now().timestamp()
    weights = {}
    for provider, resting in RESTING["sms"].items():
        weight, _, moved_at = str(raw.get(provider) or "").partition(" ")
        stored = (float(weight), float(moved_at)) if moved_at else None
        weights[provider] = tended(stored, float(resting), now)[0]
    return weights


class Watch:
    """The weights sampled every half second from the outage on (what the row reports)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.outage: tuple[float, float] = (0.0, 0.0)

    def sample(self, deployment: Deployment) -> dict[str, float]:
        weights = sms_weights(deployment)
        if not self.samples or self.samples[-1][1] != weights:
            self.samples.append((time.time(), weights))
        return weights


def _wait(deployment: Deployment, watch: Watch, seconds: float) -> None:
    until = time.time() + seconds
    while time.time() < until:
        watch.sample(deployment)
        time.sleep(0.5)


def act(deployment: Deployment, result: Result, watch: Watch) -> float:
    log = RoutedProviderLog(deployment.root / "sandboxes")
    deployment.provider = log
    deployment.wait_accepted(20, timeout=90)
    _wait(deployment, watch, 2.0)
    _aliyun_faults(deployment, fail_503=10**9, retry_after=None)
    started = time.time()
    _wait(deployment, watch, OUTAGE_SECONDS)
    _aliyun_faults(deployment, fail_503=0)
    ended = time.time()
    watch.outage = (started, ended)
    deployment.fault(f"Aliyun 503 on every request for {ended - started:.0f} s")
    _wait(deployment, watch, 3.0)
    _aliyun_faults(deployment, accept_then_hang=HELD, accept_hang_seconds=HOLD_SECONDS)
    deadline = time.time() + 120
    while time.time() < deadline:
        log.poll()
        if log.aliyun_held >= HELD:
            break
        _wait(deployment, watch, 0.5)
    held = log.aliyun_held
    _aliyun_faults(deployment, accept_then_hang=0)
    deployment.fault(
        f"then {held} SendSms accepted by Aliyun (message kept, its report pushed {REPORT_DELAY // 60:.0f} min "
        f"later) with the answer held {HOLD_SECONDS:g} s (the client's 10 s timeout fires: ambiguous)"
    )
    if held < HELD:
        result.checks[f"{HELD} accept-then-hang faults met"] = (False, f"{held} met")
    return time.time() + HOLD_SECONDS


def finish(deployment: Deployment, result: Result, watch: Watch) -> None:
    from dispatcher.state.store import Store

    log = deployment.provider
    assert isinstance(log, RoutedProviderLog)
    log.poll()
    planned = deployment.expected
    both = [c for c in planned if log.aliyun.get(c) and log.twilio(c)]
    aliyun = sum(1 for c in planned if log.aliyun.get(c))
    twilio = sum(1 for c in planned if log.twilio(c))
    result.info["accepted per sandbox (contacts)"] = f"Aliyun {aliyun}, Twilio {twilio}"
    result.checks["0 contacts accepted by both sandboxes"] = (
        not both,
        f"{len(both)}" + (f" e.g. {both[:3]}" if both else ""),
    )
    start, end = watch.outage
    during = log.between(start, end)
    result.info["accepted during the outage"] = f"Aliyun {during[0]}, Twilio {during[1]}"
    result.checks["Chinese SMS via Twilio during the outage"] = (
        during[0] == 0 and during[1] > 0,
        f"Aliyun {during[0]}, Twilio {during[1]} in {end - start:.0f} s",
    )
    if log.aliyun_refused:
        result.info["Aliyun refusals"] = ", ".join(f"{k} x{v}" for k, v in sorted(log.aliyun_refused.items()))

    # What the audit says happened: failovers (a definite non-send, then the next provider) and reconciliations.
    store = Store.from_url(
        deployment.env["DISPATCHER_REDIS_URL"], int(deployment.env.get("DISPATCHER_SCHEDULE_SHARDS", "16"))
    )
    try:
        audit = store.audit()
    finally:
        store.redis.close()
    failovers = Counter(str(e.get("provider")) for e in audit if e.get("reason") == "failover")
    result.info["failovers (audited, by the provider that did not send)"] = (
        ", ".join(f"{k} x{v}" for k, v in sorted(failovers.items())) or "none"
    )
    ended_unknown = {str(e["contact_id"]) for e in audit if e.get("type") == "contact" and e.get("status") == "unknown"}
    reconciled = [e for e in audit if str(e.get("reason", "")).startswith("reconciled_")]
    how = Counter(
        f"{e.get('provider')} " + ("QuerySendDetails" if str(e.get("provider_id", "")).startswith("out:")
                                   else str(e.get("provider_id")))
        for e in reconciled
    )  # fmt: skip
    held = {c for c in ended_unknown | {str(e["contact_id"]) for e in reconciled} if log.aliyun.get(c)}
    resent = [c for c in held if log.twilio(c)]
    via_lookup = sum(
        1 for e in reconciled if str(e.get("provider_id", "")).startswith("out:") and e["contact_id"] in held
    )
    result.info["claims that ended unknown (accepted by Aliyun, answer never came)"] = str(len(held))
    result.info["reconciled (provider, evidence)"] = ", ".join(f"{k} x{v}" for k, v in sorted(how.items())) or "none"
    result.checks["held answers: 0 resent through Twilio, all reconciled through QuerySendDetails"] = (
        len(held) >= HELD and not resent and via_lookup == len(held),
        f"{len(held)} in doubt, {len(resent)} resent, {via_lookup} reconciled by QuerySendDetails",
    )

    # The weight: how far it fell, and when it was back at rest (waited for here, on the run's clock).
    deadline = end + RECOVERY_DEADLINE
    weights = watch.sample(deployment)
    while weights != {p: float(w) for p, w in RESTING["sms"].items()} and time.time() < deadline:
        time.sleep(1.0)
        weights = watch.sample(deployment)
    lowest = min(w["aliyun"] for _, w in watch.samples) if watch.samples else None
    back = next((t for t, w in watch.samples if t > end and w["aliyun"] == RESTING["sms"]["aliyun"]), None)
    factor = deployment.config.clock_factor
    steps = "; ".join(
        f"{t - start:+.0f} s: aliyun {w['aliyun']:g} twilio {w['twilio']:g}" for t, w in watch.samples[:12]
    )
    result.info["Aliyun weight (wall seconds from the outage's start)"] = steps
    result.checks["Aliyun weight fell and recovered"] = (
        lowest is not None and lowest < RESTING["sms"]["aliyun"] and back is not None,
        f"rest {RESTING['sms']['aliyun']}, lowest {lowest:g}, "
        + (f"back at rest {back - end:.0f} s after the outage ({(back - end) * factor / 60:.0f} min on the "
           f"run's clock, {factor:g}x)" if back is not None else f"not back at rest after {RECOVERY_DEADLINE:.0f} s")
        if lowest is not None else "never sampled",
    )  # fmt: skip


def scenario_parts() -> tuple[RunConfig, Any, Any]:
    """The row's configuration, act and finish (tests/chaos/scenarios.py names it `provider-failover`)."""
    watch = Watch()
    return CONFIG, lambda d, r: act(d, r, watch), lambda d, r: finish(d, r, watch)
