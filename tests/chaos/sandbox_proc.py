"""The provider sandboxes in a process of their own, for the chaos runs, with one addition: every HTTP
request to the Twilio stand-in (faulted ones included) is written to requests.ndjson with its arrival time
and the status it got, so the provider-side rate can be checked in every 1-second window.

    python -m tests.chaos.sandbox_proc --dir DIR --callback-url URL --ready FILE [--aliyun-report-delay S]

Writes FILE (JSON: the Twilio URL and the settings overrides) once every sandbox listens; runs until SIGTERM.
The sandboxes themselves are channels.sandbox, unchanged; the request log wraps the Twilio app from outside.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

from channels.sandbox import start_sandboxes, twilio_api

REQUESTS_LOG = "requests.ndjson"


def logged(app: Any, path: Path) -> Any:
    """An ASGI wrapper writing one line per API request: arrival time, end time, method, path, status."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = path.open("a", encoding="utf-8")
    lock = threading.Lock()

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox"):
            await app(scope, receive, send)
            return
        arrived = time.time()
        status: list[int | None] = [None]

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_status)
        finally:
            line = {"at": arrived, "done": time.time(), "method": scope["method"], "path": scope["path"],
                    "status": status[0]}  # fmt: skip
            with lock:
                stream.write(json.dumps(line) + "\n")
                stream.flush()

    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--callback-url", required=True)
    parser.add_argument("--ready", type=Path, required=True)
    parser.add_argument("--aliyun-report-delay", type=float, help="seconds before Aliyun pushes a report")
    args = parser.parse_args()
    original = twilio_api.create_app
    twilio_api.create_app = lambda state: logged(original(state), args.dir / "twilio" / REQUESTS_LOG)  # type: ignore[assignment]
    running = start_sandboxes(args.dir, callback_base_url=args.callback_url)
    if args.aliyun_report_delay is not None:
        running.aliyun.state.push_delay = args.aliyun_report_delay
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ready = {"twilio_url": running.twilio.url, "overrides": running.settings_overrides()}
    tmp = args.ready.with_suffix(".tmp")
    tmp.write_text(json.dumps(ready))
    tmp.rename(args.ready)
    try:
        stop.wait()
    finally:
        running.stop()


if __name__ == "__main__":
    main()
