"""Load generator and process measurements for the agent's benchmark (tests/agent/test_agent_bench.py).

Plain http.client on fresh connections (gunicorn's sync workers close each connection), a fixed
number of concurrent senders, latency measured per request on the client.
"""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies: list[float]
    statuses: dict[int, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def line(self, label: str) -> str:
        mean = statistics.mean(self.latencies) * 1000
        return (
            f"{label:<14} {self.rps:8.1f} req/s   p50 {self.percentile(0.50) * 1000:6.1f} ms   "
            f"p99 {self.percentile(0.99) * 1000:6.1f} ms   mean {mean:6.1f} ms   statuses {self.statuses}"
        )


def load(
    port: int,
    path: str,
    body: dict,
    headers: dict[str, str],
    *,
    senders: int = 8,
    duration: float = 5.0,
    warmup: float = 1.0,
) -> LoadResult:
    payload = json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json", **headers}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    start_at = time.monotonic() + warmup
    stop_at = start_at + duration

    def sender() -> None:
        mine: list[float] = []
        codes: dict[int, int] = {}
        while True:
            began = time.monotonic()
            if began >= stop_at:
                break
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", path, body=payload, headers=all_headers)
            response = conn.getresponse()
            response.read()
            conn.close()
            ended = time.monotonic()
            if began >= start_at:  # only count what happened after the warm-up
                mine.append(ended - began)
                codes[response.status] = codes.get(response.status, 0) + 1
        with lock:
            latencies.extend(mine)
            for code, count in codes.items():
                statuses[code] = statuses.get(code, 0) + count

    threads = [threading.Thread(target=sender) for _ in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return LoadResult(len(latencies), duration, latencies, statuses)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(p) for p in text]
    return found
