"""API throughput: events per second through the HTTP API into the planner, against a no-op FastAPI endpoint
on the same server, measured in the same run.

    python benchmarks/api_throughput.py --accounts 2000 --requests 6000 --connections 16

One uvicorn process serves the real app (auth, Idempotency-Key, request-id logging with PII masking,
validation, the engine: load → apply → plan → commit on an embedded Redis). The baseline is a POST
endpoint mounted on the same app that takes the same body through the same middleware, key check and
validation, and does nothing: the ratio says what the engine and planner cost over the API shell. A bare
GET /healthz is measured too, for the cost of the shell itself. The load comes from a minimal keep-alive
HTTP/1.1 client on asyncio (cheap, so the server, not the client, is the bottleneck).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import APIRouter, Body, Depends  # noqa: E402

from config.settings import DEFAULT_STRATEGY, load_settings  # noqa: E402
from dispatcher.api import create_app  # noqa: E402
from dispatcher.api.auth import (  # noqa: E402
    EVENTS_WRITE,
    Principal,
    new_api_key,  # noqa: E402
    require,
)
from dispatcher.api.events import ApiEvent  # noqa: E402
from dispatcher.api.idempotency import IdempotencyKey  # noqa: E402
from dispatcher.core.clock import ManualClock  # noqa: E402
from dispatcher.core.strategy import load_strategy  # noqa: E402
from dispatcher.engine import Engine  # noqa: E402
from dispatcher.logging import configure_logging  # noqa: E402
from dispatcher.state.redis_server import EmbeddedRedis  # noqa: E402
from dispatcher.state.store import Store  # noqa: E402

NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


def serve(redis_url: str, port: int, key_entry: str) -> None:
    """The server process: the real app plus the no-op endpoint, on a manual clock inside the windows."""
    settings = load_settings(redis_url=redis_url, api_keys=key_entry, log_format="json", _env_file=None)
    # Logs are produced and masked as in production, then dropped (BENCH_LOG_STDERR=1 shows them).
    configure_logging(settings, stream=None if os.environ.get("BENCH_LOG_STDERR") else open(os.devnull, "w"))  # noqa: SIM115
    engine = Engine(Store.from_url(redis_url), load_strategy(Path(DEFAULT_STRATEGY)), ManualClock(NOW))
    noop = APIRouter()

    @noop.post("/v1/bench/accounts/{account_id}/noop")
    def no_op(
        account_id: str,
        idempotency_key: IdempotencyKey,
        event: ApiEvent = Body(),
        _: Principal = Depends(require(EVENTS_WRITE)),
    ) -> dict[str, str]:
        return {"account_id": account_id, "event": event.kind, "status": "ignored"}

    app = create_app(engine, settings, extra_routers=[noop])
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    await reader.readexactly(length)
    return status


async def load(port: int, requests: list[bytes], connections: int) -> tuple[float, dict[int, int]]:
    """Send every request over `connections` keep-alive connections; (seconds, count by status)."""
    queue = list(reversed(requests))
    counts: dict[int, int] = {}

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while queue:
            status = await _one(reader, writer, queue.pop())
            counts[status] = counts.get(status, 0) + 1
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return time.perf_counter() - began, counts


def post(path: str, body: dict, key: str, idempotency: str) -> bytes:
    raw = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Idempotency-Key: {idempotency}\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
    )
    return head.encode() + raw


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def events(count: int, accounts: int, key: str, path: str, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    kinds = [
        {"kind": "payment", "amount": "1.00"},
        {"kind": "opt_out", "channel": "email"},
        {"kind": "opt_in", "channel": "email"},
        {"kind": "hardship", "days": 3},
        {"kind": "dispute_resolved"},
    ]
    return [
        post(path.format(account_id=f"P{rng.randrange(accounts):06d}"), rng.choice(kinds), key, f"{seed}-{index}")
        for index in range(count)
    ]


def seed_accounts(url: str, key: str, accounts: int) -> None:
    lines = "".join(
        json.dumps({"id": f"P{i:06d}", "name": f"Debtor {i}", "timezone": "Asia/Shanghai", "phone": f"+86139{i:08d}",
                    "email": f"d{i}@example.com", "balance": "100000.00", "due_date": "2026-02-20"}) + "\n"
        for i in range(accounts)
    )  # fmt: skip
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "seed", "Content-Type": "application/x-ndjson"}
    summary = json.loads(
        httpx.post(f"{url}/v1/accounts:batch", content=lines, headers=headers, timeout=600).text.splitlines()[-1]
    )
    assert summary["summary"]["created"] == accounts, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=6000, help="requests per measured phase")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--serve", nargs=3, metavar=("REDIS_URL", "PORT", "KEY_ENTRY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), args.serve[2])
        return
    key, entry = new_api_key(["admin"])
    port = 18700 + os.getpid() % 1000
    with tempfile.TemporaryDirectory() as state, EmbeddedRedis(Path(state), appendonly=False) as redis_server:
        server = subprocess.Popen([sys.executable, __file__, "--serve", redis_server.url, str(port), entry])
        try:
            url = f"http://127.0.0.1:{port}"
            _wait(url)
            seed_accounts(url, key, args.accounts)
            warm = events(500, args.accounts, key, "/v1/accounts/{account_id}/events", seed=0)
            asyncio.run(load(port, warm, args.connections))
            results = {}
            for name, requests in (
                ("no-op POST (same body, auth, idempotency, validation)",
                 events(args.requests, args.accounts, key, "/v1/bench/accounts/{account_id}/noop", seed=1)),
                ("events through the engine and planner",
                 events(args.requests, args.accounts, key, "/v1/accounts/{account_id}/events", seed=2)),
                ("bare GET /healthz", [get("/healthz")] * args.requests),
            ):  # fmt: skip
                seconds, counts = asyncio.run(load(port, requests, args.connections))
                results[name] = len(requests) / seconds
                print(f"{name}: {results[name]:,.0f} req/s ({seconds:.1f} s, statuses {counts})")
        finally:
            server.terminate()
            server.wait(10)
    names = list(results)
    print(f"ratio events / no-op POST: {results[names[1]] / results[names[0]]:.2f} (goal >= 0.5)")
    print(f"ratio events / bare GET: {results[names[1]] / results[names[2]]:.2f}")


def _wait(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("the API server did not become ready")


if __name__ == "__main__":
    main()
