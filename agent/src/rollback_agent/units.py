"""systemd units: restart them in order, then wait until they are active and the health URL answers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from rollback_agent import procs
from rollback_agent.config import Config
from rollback_agent.migrations import child_environment
from rollback_agent.steps import Deadline, StepError

log = logging.getLogger(__name__)


def restart_units(config: Config, deadline: Deadline, step: str = "application") -> list[str]:
    """Run ``restart_command UNIT`` for each unit, in order; stop at the first failure."""
    done = []
    env = child_environment(config)
    for unit in config.services.units:
        argv = [*config.services.restart_command, unit]
        result = procs.run(argv, timeout=deadline.remaining(), env=env)
        if not result.ok:
            raise StepError(
                step,
                f"restart of {unit} failed ({result.describe()}): {result.excerpt()}",
                timed_out=result.timed_out,
            )
        done.append(unit)
        log.info("restarted %s in %.2fs", unit, result.duration)
    return done


def _poll(check: Callable[[], str | None], limit: float, interval: float, deadline: Deadline) -> str | None:
    """Call ``check`` until it returns None (success) or ``limit`` seconds pass; the last problem."""
    until = time.monotonic() + limit
    problem: str | None = "not checked"
    while True:
        problem = check()
        if problem is None:
            return None
        now = time.monotonic()
        if now >= until or deadline.expired():
            return problem
        time.sleep(max(0.05, min(interval, until - now, deadline.remaining())))


def units_problem(config: Config, deadline: Deadline) -> str | None:
    env = child_environment(config)
    for unit in config.services.units:
        result = procs.run([*config.services.status_command, unit], timeout=deadline.cap(15.0), env=env)
        if not result.ok:
            return f"{unit} is not active ({result.describe()}: {result.excerpt(200)})"
    return None


def health_problem(url: str, deadline: Deadline) -> str | None:
    import requests  # imported when first needed (the runner warms it up in the background)

    try:
        response = requests.get(url, timeout=max(0.1, deadline.cap(5.0)), allow_redirects=False)
    except requests.RequestException as exc:
        return f"{url} did not answer ({type(exc).__name__})"
    if 200 <= response.status_code < 300:
        return None
    return f"{url} answered HTTP {response.status_code}"


def verify(config: Config, deadline: Deadline, step: str = "verify") -> dict[str, str]:
    """Units active, then the health URL answering 2xx; both retried while the app starts up."""
    interval = config.health.interval if config.health else 1.0
    problem = _poll(
        lambda: units_problem(config, deadline), config.services.start_timeout, interval, deadline
    )
    if problem:
        raise StepError(step, problem, timed_out=deadline.expired())
    checks = {"units": "active"}
    if config.health is not None:
        health = config.health
        problem = _poll(
            lambda: health_problem(health.url, deadline), health.timeout, health.interval, deadline
        )
        if problem:
            raise StepError(step, f"health check failed: {problem}", timed_out=deadline.expired())
        checks["health"] = "ok"
    return checks
