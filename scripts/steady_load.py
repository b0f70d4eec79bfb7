"""Steady, bounded HTTP load on one URL, counting requests sent and failed.

Used by the demo, the tests and the benchmarks to show that swapping hosts drops nothing:
    python scripts/steady_load.py --url http://127.0.0.1:8080/ --stop-file /tmp/stop --out result.json
or, in Python, `with SteadyLoad(url) as load: ...; load.summary()`.
A request fails on a connection error, a timeout or a status other than 2xx/3xx. The load is
bounded in rate, in total requests and in time, and only ever sent to the given URL.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import threading
import time
from urllib.parse import urlparse


class SteadyLoad:
    def __init__(self, url: str, rate: float = 100.0, max_seconds: float = 300.0, max_requests: int = 60000,
                 timeout: float = 3.0) -> None:
        parsed = urlparse(url)
        self.host, self.port, self.path = parsed.hostname or "127.0.0.1", parsed.port or 80, parsed.path or "/"
        self.interval = 1.0 / rate
        self.max_seconds, self.max_requests, self.timeout = max_seconds, max_requests, timeout
        self.sent = self.failed = 0
        self.errors: dict[str, int] = {}
        self.bodies: dict[str, int] = {}
        self.started = self.finished = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SteadyLoad:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _request(self) -> None:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            connection.request("GET", self.path, headers={"Connection": "close"})
            response = connection.getresponse()
            body = response.read().decode("utf-8", "replace").strip()
            if not 200 <= response.status < 400:
                raise OSError(f"HTTP {response.status}")
            key = body.rsplit(" ", 1)[-1][:40] if body else ""
            self.bodies[key] = self.bodies.get(key, 0) + 1
        finally:
            connection.close()

    def _run(self) -> None:
        deadline = self.started + self.max_seconds
        next_at = self.started
        while not self._stop.is_set() and self.sent < self.max_requests and time.monotonic() < deadline:
            self.sent += 1
            try:
                self._request()
            except (OSError, http.client.HTTPException) as error:
                self.failed += 1
                reason = str(error)[:80] or type(error).__name__
                self.errors[reason] = self.errors.get(reason, 0) + 1
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        self.finished = time.monotonic()

    def summary(self) -> dict:
        seconds = (self.finished or time.monotonic()) - self.started
        return {"sent": self.sent, "failed": self.failed, "seconds": round(seconds, 2), "errors": self.errors,
                "answers_by_version": self.bodies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (at most)")
    parser.add_argument("--seconds", type=float, default=300.0, help="stop after this long at the latest")
    parser.add_argument("--stop-file", help="stop as soon as this file exists")
    parser.add_argument("--out", help="write the summary as JSON here")
    args = parser.parse_args()
    load = SteadyLoad(args.url, args.rate, args.seconds)
    load.start()
    while load.running and not (args.stop_file and os.path.exists(args.stop_file)):
        time.sleep(0.1)
    load.stop()
    summary = json.dumps(load.summary())
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(summary)
    print(summary)


if __name__ == "__main__":
    main()
