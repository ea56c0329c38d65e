"""Steady request load for the sample service (the lab's demo and the e2e tests).

    python loadgen.py --target http://169.254.77.11:8000 --target http://169.254.77.12:8000 \
        --rate 20 --duration 600 [--report-every 5] [--summary-json FILE]

Standard library only. Sends a fixed mix of real API calls, spread over the
targets round-robin, at a steady rate with bounded concurrency, for a bounded
time, then stops by itself (also on SIGINT/SIGTERM). Every ``--report-every``
seconds it prints one line per interval: requests, 2xx/4xx/5xx/errors, p50 and
p95 latency and the release each target reports. The mix:

    60% POST /api/transactions   amount uniform 1..500 (v3 fails above 200)
    20% GET  /api/users/<id>/balance
    10% GET  /api/transactions/<id>
     5% POST /api/users          (registrations)
     5% GET  /health
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

MIX = (
    (60, "transaction"),
    (20, "balance"),
    (10, "get_transaction"),
    (5, "register"),
    (5, "health"),
)
MAX_DURATION = 6 * 3600


@dataclass
class Window:
    started: float = field(default_factory=time.monotonic)
    codes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def add(self, code: str, latency: float) -> None:
        self.codes[code] += 1
        self.latencies.append(latency)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        n = len(lat)
        classes = Counter()
        for code, count in self.codes.items():
            classes[code[0] + "xx" if code.isdigit() else "errors"] += count
        return {
            "requests": n,
            "2xx": classes["2xx"],
            "4xx": classes["4xx"],
            "5xx": classes["5xx"],
            "errors": classes["errors"],
            "p50": lat[n // 2] if n else None,
            "p95": lat[min(n - 1, int(n * 0.95))] if n else None,
            "max": lat[-1] if n else None,
        }


class Load:
    def __init__(self, targets: list[str], timeout: float, seed: int | None) -> None:
        self.targets = [t.rstrip("/") for t in targets]
        self.timeout = timeout
        self.rng = random.Random(seed)  # noqa: S311 - load shape, not security
        self.lock = threading.Lock()
        self.users: list[int] = []
        self.tx_ids: list[int] = []
        self.window = Window()
        self.total = Window()
        self.releases: dict[str, str] = {}
        self._n = 0

    def _target(self) -> str:
        with self.lock:
            self._n += 1
            return self.targets[self._n % len(self.targets)]

    def request(self, method: str, url: str, body: dict[str, Any] | None = None) -> tuple[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http(s) targets only
        if data is not None:
            req.add_header("Content-Type", "application/json")
        start = time.monotonic()
        payload: Any = None
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                code = str(resp.status)
                payload = json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            code = str(exc.code)
            exc.read()
        except (OSError, ValueError) as exc:
            code = type(exc).__name__
        latency = time.monotonic() - start
        with self.lock:
            self.window.add(code, latency)
            self.total.add(code, latency)
        return code, payload

    def register(self, base: str) -> None:
        name = f"load-{time.time_ns()}-{self.rng.randrange(10**6)}"
        code, body = self.request("POST", f"{base}/api/users", {"email": f"{name}@example.com", "name": name})
        if code == "201" and isinstance(body, dict):
            with self.lock:
                self.users.append(int(body["id"]))

    def one(self) -> None:
        base = self._target()
        with self.lock:
            kind = self.rng.choices([k for _, k in MIX], weights=[w for w, _ in MIX])[0]
            user = self.rng.choice(self.users) if self.users else None
            tx = self.rng.choice(self.tx_ids) if self.tx_ids else None
            amount = f"{self.rng.uniform(1, 500):.2f}"
        if kind == "register" or user is None:
            self.register(base)
        elif kind == "transaction":
            code, body = self.request(
                "POST", f"{base}/api/transactions", {"user_id": user, "amount": amount, "description": "load"}
            )
            if code == "201" and isinstance(body, dict):
                with self.lock:
                    self.tx_ids.append(int(body["id"]))
                    del self.tx_ids[:-1000]
        elif kind == "balance":
            self.request("GET", f"{base}/api/users/{user}/balance")
        elif kind == "get_transaction" and tx is not None:
            self.request("GET", f"{base}/api/transactions/{tx}")
        else:
            self.request("GET", f"{base}/health")

    def poll_releases(self) -> None:
        for base in self.targets:
            try:
                with urllib.request.urlopen(f"{base}/version", timeout=2) as resp:  # noqa: S310
                    self.releases[base] = json.loads(resp.read())["release"]
            except (OSError, ValueError, KeyError):
                self.releases[base] = "down"

    def report(self, out: Any) -> dict[str, Any]:
        with self.lock:
            window, self.window = self.window, Window()
        s = window.summary()
        elapsed = max(time.monotonic() - window.started, 1e-6)
        rel = " ".join(f"{b.split('//')[-1]}={r}" for b, r in self.releases.items())
        fmt = "{:.3f}s".format
        ratio = s["5xx"] / s["requests"] if s["requests"] else 0.0
        print(
            f"[load {time.strftime('%H:%M:%S')}] {s['requests'] / elapsed:5.1f} req/s  "
            f"2xx={s['2xx']} 4xx={s['4xx']} 5xx={s['5xx']} ({ratio:.0%}) err={s['errors']}  "
            f"p50={fmt(s['p50'] or 0)} p95={fmt(s['p95'] or 0)}  release: {rel}",
            file=out,
            flush=True,
        )
        return s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="steady request load for the sample service")
    parser.add_argument("--target", action="append", required=True, help="base URL (repeatable)")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second in all (default 10)")
    parser.add_argument("--duration", type=float, required=True, help=f"seconds to run (<= {MAX_DURATION})")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at most (default 8)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in seconds")
    parser.add_argument("--report-every", type=float, default=5.0, help="seconds between reports (0: none)")
    parser.add_argument("--summary-json", help="write the totals here as JSON at the end")
    parser.add_argument("--seed", type=int, help="random seed (repeatable runs)")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= MAX_DURATION:
        parser.error(f"--duration must be in (0, {MAX_DURATION}]")
    if not 0 < args.rate <= 1000 or not 0 < args.concurrency <= 64:
        parser.error("--rate must be in (0, 1000] and --concurrency in [1, 64]")
    for t in args.target:
        if not t.startswith(("http://", "https://")):
            parser.error(f"--target {t!r}: must be an http(s) URL")

    load = Load(args.target, args.timeout, args.seed)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    slots = threading.BoundedSemaphore(args.concurrency)

    def run_one() -> None:
        try:
            load.one()
        finally:
            slots.release()

    def poll() -> None:
        while not stop.is_set():
            load.poll_releases()
            stop.wait(5)

    threading.Thread(target=poll, name="release-poller", daemon=True).start()
    deadline = time.monotonic() + args.duration
    next_report = time.monotonic() + args.report_every
    interval = 1.0 / args.rate
    tick = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        while not stop.is_set() and time.monotonic() < deadline:
            now = time.monotonic()
            if args.report_every and now >= next_report:
                load.report(sys.stdout)
                next_report = now + args.report_every
            if slots.acquire(timeout=0.5):
                pool.submit(run_one)
                tick += interval
                with contextlib.suppress(ValueError):
                    stop.wait(max(0.0, tick - time.monotonic()))
                tick = max(tick, time.monotonic() - 1.0)  # never burst to catch up more than 1 s
    totals = load.total.summary()
    if args.summary_json:
        with open(args.summary_json, "w", encoding="utf-8") as fh:
            json.dump(totals | {"releases": load.releases}, fh, indent=2)
    print(f"[load done] {json.dumps(totals)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
