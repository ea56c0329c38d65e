"""Waiting for the alerts a scenario caused to resolve in Prometheus, so the next one starts clean."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from lab_kit import incident
from lab_kit.inventory import Lab

Alert = dict[str, Any]


def active(lab: Lab) -> list[Alert]:
    """mon1's pending and firing alerts (Prometheus /api/v1/alerts)."""
    url = f"http://127.0.0.1:{lab.group('monitoring')[0].port('prometheus')}/api/v1/alerts"
    return list(incident.get_json(url)["data"]["alerts"])


def key(alert: Alert) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(alert["labels"].items()))


def describe(alert: Alert) -> str:
    labels = alert["labels"]
    where = labels.get("instance") or labels.get("job") or ""
    return f"{labels.get('alertname')} {alert.get('state')}" + (f" ({where})" if where else "")


def wait_resolved(
    lab: Lab, concerned: Callable[[Alert], bool], timeout: float, what: str,
    poll: Callable[[], None] | None = None,
) -> float:
    """Wait until Prometheus shows none of the ``concerned`` alerts pending or firing; the seconds it
    took. Raises TimeoutError naming the alerts still active after ``timeout`` seconds."""
    start = time.monotonic()
    left: list[Alert] = []
    while True:
        try:
            left = [a for a in active(lab) if concerned(a)]
        except (OSError, ValueError, KeyError) as exc:
            left = [{"labels": {"alertname": f"(Prometheus does not answer: {exc})"}, "state": "?"}]
        if not left:
            if poll is not None:
                poll()  # the follower sees the resolution too (its summary's "alert resolved")
            return time.monotonic() - start
        if time.monotonic() - start >= timeout:
            raise TimeoutError(
                f"{what}: still active in Prometheus after {timeout:.0f}s: "
                + ", ".join(describe(a) for a in left)
            )
        if poll is not None:
            poll()
        time.sleep(2)
