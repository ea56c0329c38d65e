"""Prometheus metrics (prometheus-client), safe under gunicorn's several processes.

Counters and the duration histogram live in ``PROMETHEUS_MULTIPROC_DIR`` when it is set (the
gunicorn config sets it), so every worker and the background runner add to the same figures.
Gauges about the current state (rollback in progress, last rollback time) are read from the
state database at scrape time (``report.StateCollector``), so they are right whichever process answers.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

WEBHOOKS = Counter(
    "rollback_agent_webhooks_total",
    "Webhook requests by outcome (accepted, ignored, duplicate, in_progress, blocked, dry_run, "
    "attached, waiting, invalid, unauthorized, too_large, error).",
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
VERIFICATIONS = Counter(
    "rollback_agent_verifications_total",
    "Verifications of successful rollbacks that ended, by state (confirmed: every alert resolved in"
    " guards.verify_window; not_confirmed: still firing at the deadline, escalated).",
    ["state"],
)
