"""Dispatch throughput: contacts per second end to end through real Celery worker processes to the SMS
sandbox, against raw Celery no-op tasks on the same broker with the same worker settings, in the same run.

    python benchmarks/dispatch_throughput.py --contacts 2000 --workers 2 --concurrency 8 --batch 50

Both phases start N workers (threads pool, queues sms,plan, acks late, prefetch 1 from workers.app),
warm them with one single-contact task per thread, then time from the first publish of contacts/batch
tasks until the last contact is done. Real: `dispatcher worker` runs dispatcher.send (claim, limiter,
render, HTTP to the Twilio sandbox, end the claim, outcome); done = every claim reads `sent` in Redis. Baseline:
`celery -A benchmarks._noop_app worker` runs bench.noop (it only INCRBYs a counter), first on one task per
contact (raw Celery task throughput: the baseline of the goal), then on the same batches as the real run
(what Celery itself costs per contact inside a batch). The sandbox's status callbacks go to a small HTTP
server here that answers 200. All on 127.0.0.1.

`--no-callbacks` stops the sandbox posting status callbacks at all (the provider's cost off this machine).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from benchmarks._machine import speed_reference  # noqa: E402
from benchmarks._noop_tasks import DONE_KEY, noop  # noqa: E402
from channels.sandbox import Sandboxes, start_sandboxes  # noqa: E402
from channels.twilio_common import contact_id_of  # noqa: E402
from config.settings import DEFAULT_STRATEGY, load_settings  # noqa: E402
from dispatcher.api.app import ServerThread  # noqa: E402
from dispatcher.clock import ManualClock  # noqa: E402
from dispatcher.engine import Engine  # noqa: E402
from dispatcher.models import Account, Contact  # noqa: E402
from dispatcher.redis_keys import claims_key  # noqa: E402
from dispatcher.redis_server import EmbeddedRedis  # noqa: E402
from dispatcher.store import Store  # noqa: E402
from dispatcher.strategy import load_strategy  # noqa: E402
from workers.app import app, configure  # noqa: E402
from workers.queueing import contact_payload, dispatch  # noqa: E402

NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai: inside the SMS window
QUEUES = "sms,plan"
NOOP_RUNS = 5  # the batched no-op phase takes a fraction of a second: its median of five is reported
SINGLE_RUNS = 3  # one no-op task per contact: the baseline the goal is judged against, median of three
Run = tuple[float, int, list[float]]  # seconds, contacts done, CPU seconds per watched process


class _Ok:
    """Answers every status callback 200 and counts them: an ASGI app on uvicorn, as the API's webhooks are."""

    received = 0

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:  # type: ignore[type-arg]
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        _Ok.received += 1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


def queue_contacts(url: str, prefix: str, count: int) -> list[Contact]:
    """Upsert accounts one day past due in Shanghai (the reminder SMS is due) and return what was queued.
    No phone number ends in one of the sandbox's fault codes (0001-0006)."""
    accounts = [
        Account(id=f"{prefix}{i:08d}", name=f"王小明 {i}", locale="zh-CN", timezone="Asia/Shanghai",
                phone=f"+86139{i:07d}7", email=f"user{i}@example.com", balance=Decimal("1000.00"),
                minimum_payment=Decimal("100.00"), due_date=date(2026, 3, 1))
        for i in range(count)
    ]  # fmt: skip
    engine = Engine(Store.from_url(url, 16), load_strategy(Path(DEFAULT_STRATEGY)), ManualClock(NOW))
    contacts = [contact for result in engine.upsert_many(accounts) for contact in result.queued]
    assert len(contacts) == count and all(c.channel.value == "sms" for c in contacts), "expected one SMS each"
    return contacts


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def workers(command: list[str], env: dict[str, str], count: int, logs: Path, kind: str) -> Iterator[list[int]]:
    """Start `count` workers (the command ends with `-n`, the node name follows), yield their pids, stop them."""
    names = [f"{kind}{index}@{socket.gethostname()}" for index in range(count)]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for index, name in enumerate(names):
            log = (logs / f"{kind}-{index}.log").open("wb")
            processes.append(subprocess.Popen([*command, name], env=env, cwd=ROOT, stdout=log, stderr=log))
            log.close()  # the child has its own descriptor
        deadline = time.monotonic() + 60
        while {name for reply in app.control.ping(destination=names, timeout=0.5) for name in reply} < set(names):
            if time.monotonic() > deadline or any(process.poll() is not None for process in processes):
                raise RuntimeError(f"{kind} workers did not come up; see {logs}/{kind}-*.log (use --keep)")
        yield [process.pid for process in processes]
    finally:
        for process in processes:
            process.terminate()  # SIGTERM: Celery's warm shutdown
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)
            process.kill()  # a no-op on a process already reaped
            process.wait()


def timed(publish: Callable[[], object], done: Callable[..., int], total: int, every: float, timeout: float,
          pids: list[int]) -> Run:  # fmt: skip
    """Publish, then poll `done()` until it reaches `total` or the timeout: (seconds, count, CPU s per pid).
    On a timeout `done(True)` gives the full count."""
    cpu = [cpu_seconds(pid) for pid in pids]
    began = time.perf_counter()
    publish()
    while (count := done()) < total and time.perf_counter() - began < timeout:
        time.sleep(every)
    seconds = time.perf_counter() - began
    count = count if count >= total else done(True)
    return seconds, count, [cpu_seconds(pid) - before for pid, before in zip(pids, cpu, strict=True)]


def claims(client: redis.Redis, contacts: list[Contact]) -> list[bytes | None]:
    pipe = client.pipeline(transaction=False)
    for contact in contacts:
        pipe.hget(claims_key(contact.account_id), contact.id)
    return pipe.execute()


def sent_counter(client: redis.Redis, contacts: list[Contact], sandboxes: Sandboxes) -> Callable[..., int]:
    """Counts contacts whose claim reads `sent`, asking only about those not yet seen sent, and only once the
    sandbox has had a request for each (its in-process counter costs nothing to read)."""
    pending, sent, arrived = list(contacts), 0, sandboxes.twilio.request_count + len(contacts)

    def poll(force: bool = False) -> int:
        nonlocal pending, sent
        if sandboxes.twilio.request_count < arrived and not force:
            return sent
        statuses = claims(client, pending)
        sent += statuses.count(b"sent")
        pending = [contact for contact, status in zip(pending, statuses, strict=True) if status != b"sent"]
        return sent

    return poll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=2000, help="contacts timed in each phase (default 2000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2, one per core)")
    parser.add_argument("--concurrency", type=int, default=8, help="threads per worker (default 8)")
    parser.add_argument("--batch", type=int, default=50, help="contacts per task (default 50)")
    parser.add_argument("--timeout", type=float, default=90.0, help="give up on a phase after this (default 90 s)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (worker logs, sandbox log)")
    parser.add_argument("--no-callbacks", action="store_true", help="the sandbox posts no status callbacks")
    args = parser.parse_args()
    if min(args.contacts, args.workers, args.concurrency, args.batch) < 1:
        parser.error("--contacts, --workers, --concurrency and --batch must be positive")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the clean-up below runs on SIGTERM too
    with contextlib.ExitStack() as stack:
        state = Path(tempfile.mkdtemp(prefix="dispatch-bench-"))
        stack.callback(lambda: print(f"run directory kept: {state}") if args.keep else shutil.rmtree(state, True))
        server = stack.enter_context(EmbeddedRedis(state / "redis", appendonly=False))
        sink = stack.enter_context(ServerThread(_Ok()))
        sink_url = sink.url
        sandboxes = start_sandboxes(state / "sandboxes", callback_base_url=sink_url)
        stack.callback(sandboxes.stop)
        if args.no_callbacks:
            sandboxes.twilio.state.schedule_callbacks = lambda url, updates: None  # type: ignore[method-assign]
        overrides = {
            "redis_url": server.url, "rate_limits": {"sms": 100000.0}, "send_batch": args.batch,
            "clock_start": NOW, "clock_factor": 0.000001, "public_base_url": sink_url, "state_dir": state,
            "log_level": "WARNING", **sandboxes.settings_overrides(),
        }  # fmt: skip
        configure(load_settings(**overrides))
        env = dict(os.environ) | {
            f"DISPATCHER_{field.upper()}": value.isoformat() if isinstance(value, datetime)
            else json.dumps(value) if isinstance(value, dict) else str(value)
            for field, value in overrides.items()
        }  # fmt: skip
        client = redis.Redis.from_url(server.url)
        threads = args.workers * args.concurrency
        warm, contacts = queue_contacts(server.url, "W", threads), queue_contacts(server.url, "B", args.contacts)
        payloads = [contact_payload(contact) for contact in contacts]
        batches = [payloads[start : start + args.batch] for start in range(0, len(payloads), args.batch)]
        own = [os.getpid(), server._process.pid]  # type: ignore[union-attr]  # this process (sandbox, sink) and Redis
        flags = ["-Q", QUEUES, "-c", str(args.concurrency), "-P", "threads", "--loglevel", "WARNING", "-n"]
        noop_command = [sys.executable, "-m", "celery", "-A", "benchmarks._noop_app", "worker", *flags]
        real_command = [sys.executable, "-m", "workers.cli", "worker", "--queues", QUEUES, "--concurrency",
                        str(args.concurrency), "--pool", "threads", "--loglevel", "WARNING", "--name"]  # fmt: skip

        counted = lambda *_: int(client.get(DONE_KEY) or 0)  # noqa: E731
        with workers(noop_command, env, args.workers, state, "noop") as pids:
            timed(lambda: [noop.apply_async(args=[[p]], queue="sms") for p in payloads[:threads]],
                  counted, threads, 0.01, args.timeout, [])  # fmt: skip
            noop_runs, single_runs = [], []
            for _ in range(NOOP_RUNS):
                client.set(DONE_KEY, 0)
                noop_runs.append(timed(lambda: [noop.apply_async(args=[b], queue="sms") for b in batches],
                                       counted, len(payloads), 0.002, args.timeout, pids + own))  # fmt: skip
            for _ in range(SINGLE_RUNS):
                client.set(DONE_KEY, 0)
                single_runs.append(timed(lambda: [noop.apply_async(args=[[p]], queue="sms") for p in payloads],
                                         counted, len(payloads), 0.01, args.timeout, pids + own))  # fmt: skip
        with workers(real_command, env, args.workers, state, "bench") as pids:
            timed(lambda: dispatch(warm, 1), sent_counter(client, warm, sandboxes), threads, 0.05, args.timeout, [])
            real_run = timed(lambda: dispatch(contacts, args.batch), sent_counter(client, contacts, sandboxes),
                             len(contacts), 0.05, args.timeout, pids + own)  # fmt: skip
            time.sleep(0.5)  # let the last status callbacks land before counting them
        statuses = Counter((status or b"missing").decode() for status in claims(client, contacts))
        received = Counter(contact_id_of(m["form"]["StatusCallback"]) for m in sandboxes.twilio.state.messages())
        print(speed_reference())
    report(args, single_runs, noop_runs, real_run, statuses, received, {contact.id for contact in contacts})


def report(args, single_runs, noop_runs, real_run, statuses, received, wanted) -> None:  # type: ignore[no-untyped-def,unused-ignore]
    (single_seconds, single_done, _) = sorted(single_runs)[len(single_runs) // 2]
    (noop_seconds, noop_done, noop_cpu) = sorted(noop_runs)[len(noop_runs) // 2]
    real_seconds, real_done, real_cpu = real_run
    real_rate, noop_rate, single_rate = real_done / real_seconds, noop_done / noop_seconds, single_done / single_seconds
    timed_sent = sum(count for contact_id, count in received.items() if contact_id in wanted)
    twice = sum(1 for count in received.values() if count > 1)
    sandbox = "no callbacks" if args.no_callbacks else "status callbacks to a local server"
    print(f"{args.contacts} contacts in {-(-args.contacts // args.batch)} tasks of {args.batch}, "
          f"{args.workers} workers x {args.concurrency} threads; Twilio sandbox: {sandbox}")  # fmt: skip
    print(f"real (dispatcher.send to the SMS sandbox): {real_done} sent in {real_seconds:.2f} s, "
          f"{real_rate:,.0f} contacts/s")  # fmt: skip
    print(f"raw no-op Celery tasks, one per contact: {single_done} in {single_seconds:.2f} s, {single_rate:,.0f} "
          f"tasks/s (median of {_rates(single_runs)})")  # fmt: skip
    print(f"no-op Celery tasks carrying the same batches: {noop_done} in {noop_seconds:.3f} s, {noop_rate:,.0f} "
          f"contacts/s (median of {_rates(noop_runs)})")  # fmt: skip
    goal = "met" if real_rate >= single_rate / 2 else "NOT met"
    print(f"ratio real / raw no-op tasks: {real_rate / single_rate:.2f} (goal >= 0.5: {goal})")
    print(f"ratio real / batched no-op tasks: {real_rate / noop_rate:.3f} (what a contact costs over Celery's "
          f"share of a batch)")  # fmt: skip
    print(f">= 500 contacts/s: {'met' if real_rate >= 500 else 'NOT met'} ({real_rate:,.0f})")
    for name, seconds, cpu in (("real", real_seconds, real_cpu), ("no-op", noop_seconds, noop_cpu)):
        *workers_cpu, here, redis_cpu = cpu
        print(f"CPU s in the timed {name} phase ({seconds:.2f} s x {os.cpu_count()} cores): workers "
              f"{sum(workers_cpu):.2f}, this process (sandbox, callback sink, poller) {here:.2f}, "
              f"Redis {redis_cpu:.2f}")  # fmt: skip
    per_contact = [max(1e-3, sum(real_cpu[:-2]) / max(1, real_done) * 1000), real_cpu[-1] / max(1, real_done) * 1000]
    print(f"dispatcher CPU per contact: workers {per_contact[0]:.1f} ms + Redis {per_contact[1]:.1f} ms, i.e. at most "
          f"{1000 / sum(per_contact):,.0f} contacts/s per core with the provider elsewhere")  # fmt: skip
    print(f"claim statuses of the timed contacts: {dict(statuses)}")
    print(
        f"SMS the sandbox received for the timed contacts: {timed_sent} of {len(wanted)}; contact ids it "
        f"received more than once (warm-up included): {twice}; status callbacks answered 200: {_Ok.received}"
    )
    if min(real_done, noop_done, single_done) < args.contacts:
        print(f"INCOMPLETE: a phase hit --timeout {args.timeout:g} s; the rates above cover what finished")


def _rates(runs: list[Run]) -> str:
    return f"{len(runs)}: " + ", ".join(f"{done / seconds:,.0f}" for seconds, done, _ in runs)


if __name__ == "__main__":
    main()
