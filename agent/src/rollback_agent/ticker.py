"""A background timer in each web process: periodic jobs that no webhook would start.

Jobs today: the corroboration re-check of waiting medium-confidence alerts, and the verification
of successful rollbacks (confirmed when their alerts resolved, escalated at the deadline). Each job
takes ``(host, now)`` and must be safe when several processes run it at once: the jobs here take
the operation lock without waiting (a busy lock means "next tick") or claim rows in the database.

``Ticker.tick(now)`` runs every job once; tests call it with an injected time instead of sleeping.
``start()`` runs it every ``interval`` seconds on a daemon thread (the served app starts one per
gunicorn worker, see ``wsgi.py``). More jobs hang on it with ``register``.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Any

from rollback_agent import verification
from rollback_agent.decisions import decide_waiting
from rollback_agent.host import Host

log = logging.getLogger(__name__)

INTERVAL = 5.0
Job = Callable[[Host, float], Any]

_EXTRA: dict[str, Job] = {}


def register(name: str, job: Job) -> None:
    """Add a job to every ticker created from now on."""
    _EXTRA[name] = job


def default_jobs() -> dict[str, Job]:
    return {"corroboration": decide_waiting, "verification": verification.check, **_EXTRA}


class Ticker:
    def __init__(self, host: Host, jobs: dict[str, Job] | None = None, interval: float = INTERVAL) -> None:
        self.host = host
        self.jobs = default_jobs() if jobs is None else jobs
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self, now: float | None = None) -> dict[str, Any]:
        """Run every job once at ``now`` (the host's time by default); a failing job is logged."""
        now = self.host.now() if now is None else now
        results: dict[str, Any] = {}
        for name, job in self.jobs.items():
            try:
                results[name] = job(self.host, now)
            except Exception:
                log.exception("timer job %s failed", name)
                results[name] = None
        return results

    def start(self) -> Ticker:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="rollback-agent-ticker", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        # A random start spreads the workers' ticks over the interval.
        if self._stop.wait(random.uniform(0, self.interval)):  # noqa: S311 - not cryptographic
            return
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.interval)
