"""Outcome callbacks per second to a local receiver, against a raw httpx POST loop to the same receiver, in the
same run.

    python benchmarks/callbacks_throughput.py --accounts 200 --events 10

The engine commits `accounts x events` payments on an embedded Redis (not timed). Then, timed: the relay
reads the audit streams into the endpoint's queues and the sender delivers every event, signed, in order per
account, each attempt recorded (what `dispatcher.callbacks` does on a worker), until all have arrived. The
baseline POSTs the same number of bodies of the same size with one httpx client in a loop: the ratio says
what the relay, the queues, the signing and the bookkeeping cost over the HTTP round trip itself. The
receiver is a bare ASGI app under uvicorn in its own process, answering 204.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from benchmarks._machine import speed_reference  # noqa: E402
from config.settings import DEFAULT_STRATEGY, load_settings  # noqa: E402
from dispatcher.core.clock import ManualClock  # noqa: E402
from dispatcher.core.events import Payment  # noqa: E402
from dispatcher.core.models import Account  # noqa: E402
from dispatcher.core.strategy import load_strategy  # noqa: E402
from dispatcher.engine import Engine  # noqa: E402
from dispatcher.state.redis_server import EmbeddedRedis  # noqa: E402
from dispatcher.state.store import Store  # noqa: E402
from dispatcher.webhook_sender import callbacks_for  # noqa: E402

NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
RECEIVER = """
import sys, uvicorn

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.post(url, content=b"{}")
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("the receiver did not start")


def account(account_id: str) -> Account:
    return Account.model_validate({
        "id": account_id, "name": "Bench", "timezone": "Asia/Shanghai", "country": "CN", "phone": "+8613800138000",
        "currency": "CNY", "balance": "100000.00", "minimum_payment": "500.00", "due_date": "2026-03-01",
    })  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--events", type=int, default=10, help="payments per account")
    args = parser.parse_args()
    print(speed_reference())
    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks"
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    try:
        wait_for(url)
        with tempfile.TemporaryDirectory() as state, EmbeddedRedis(Path(state), appendonly=False) as redis_server:
            store = Store.from_url(redis_server.url)
            clock = ManualClock(NOW)
            engine = Engine(store, load_strategy(Path(DEFAULT_STRATEGY)), clock, on_queued=lambda contacts: None)
            settings = load_settings(webhook_allowed_hosts="127.0.0.1", _env_file=None)
            relay, sender = callbacks_for(store, clock, settings)
            relay.registry.create(url, ["payment.recorded"])
            ids = [f"B{i:05d}" for i in range(args.accounts)]
            engine.upsert_many([account(account_id) for account_id in ids])
            for _ in range(args.events):
                engine.record_events([(account_id, Payment(amount=Decimal("1"))) for account_id in ids])
            total = args.accounts * args.events
            body = b'{"type":"payment.recorded","timestamp":"2026-03-02T02:00:00Z","data":{"account_id":"B00001",'
            body += b'"amount":"1","currency":null,"reference":null}}'

            with httpx.Client(timeout=15, trust_env=False) as client:
                began = time.perf_counter()
                for _ in range(total):
                    client.post(url, content=body, headers={"content-type": "application/json"})
                raw = time.perf_counter() - began

            began = time.perf_counter()
            delivered = 0
            relay.run()
            while delivered < total:
                done = sender.deliver_due(limit=100, per_account=args.events)
                delivered += done.delivered
                if done.attempts == 0:
                    relay.run()
            signed = time.perf_counter() - began
            sender.close()
            print(f"raw httpx POST loop: {total / raw:,.0f} POST/s ({total} in {raw:.2f} s)")
            print(f"callbacks (relay, queues, signed, in order, attempts kept): {total / signed:,.0f} /s "
                  f"({delivered} in {signed:.2f} s)")  # fmt: skip
            print(f"ratio callbacks / raw POST: {raw / signed:.2f} (goal >= 0.5)")
    finally:
        receiver.terminate()
        receiver.wait(10)


if __name__ == "__main__":
    main()
