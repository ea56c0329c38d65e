"""Prometheus metrics (prometheus-client), safe under gunicorn's several processes.

Counters and the duration histogram live in ``PROMETHEUS_MULTIPROC_DIR`` when it is set (the
gunicorn config sets it), so every worker and the background runner add to the same figures.
Gauges about the current state (rollback in progress, last rollback time) are read from the
state database at scrape time, so they are right whichever process answers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from rollback_agent.service import Agent

WEBHOOKS = Counter(
    "rollback_agent_webhooks_total",
    "Webhook requests by outcome (accepted, ignored, duplicate, in_progress, blocked, dry_run, "
    "invalid, unauthorized, too_large, error).",
    ["outcome"],
)
ALERT_DECISIONS = Counter(
    "rollback_agent_alert_decisions_total", "Decisions taken per alert in webhooks.", ["decision"]
)
ROLLBACKS = Counter(
    "rollback_agent_rollbacks_total",
    "Rollbacks that ran, by result (success, failed, timed_out, interrupted).",
    ["result"],
)
ROLLBACK_DURATION = Histogram(
    "rollback_agent_rollback_duration_seconds",
    "Wall time of rollbacks, from start to result.",
    buckets=(5, 10, 20, 30, 60, 120, 180, 300, 600, 900, 1800),
)
DEPLOYS = Counter(
    "rollback_agent_deploys_total", "Deploys by outcome (healthy, unhealthy, failed).", ["outcome"]
)
NOTIFICATIONS = Counter(
    "rollback_agent_notifications_total",
    "Slack notifications by outcome (sent, failed, dropped).",
    ["outcome"],
)


class StateCollector(Collector):
    """Gauges computed from the state database and the lock when scraped."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[GaugeMetricFamily | InfoMetricFamily]:
        from rollback_agent import __version__

        info = InfoMetricFamily("rollback_agent", "Agent version, host and mode.")
        info.add_metric(
            [], {"version": __version__, "host": self.agent.config.host, "mode": self.agent.config.mode}
        )
        yield info
        running = self.agent.in_progress()
        yield GaugeMetricFamily(
            "rollback_agent_rollback_in_progress",
            "1 while a rollback runs on this host.",
            value=1 if running else 0,
        )
        last = self.agent.store.last_executed()
        stamp = GaugeMetricFamily(
            "rollback_agent_last_rollback_timestamp_seconds",
            "Start time of the last rollback that ran (0 when none), with its result.",
            labels=["result"],
        )
        if last:
            stamp.add_metric([last["status"]], float(last["started_at"] or 0))
        yield stamp
        current = self.agent.current_release()
        deployed = GaugeMetricFamily(
            "rollback_agent_release_deployed_timestamp_seconds",
            "When the current release went live (ledger).",
        )
        if current.get("deployed_at"):
            deployed.add_metric([], float(current["deployed_at"]))
        yield deployed


def render_metrics(agent: Agent) -> bytes:
    state = CollectorRegistry(auto_describe=False)
    state.register(StateCollector(agent))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        shared = CollectorRegistry()
        multiprocess.MultiProcessCollector(shared)
        return generate_latest(shared) + generate_latest(state)
    return generate_latest(REGISTRY) + generate_latest(state)
