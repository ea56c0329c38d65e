"""The metrics of monitoring/METRICS.md, exported at /metrics.

Request metrics are recorded by request hooks in every gunicorn worker; with
several workers they are aggregated through prometheus-client's multiprocess
mode (PROMETHEUS_MULTIPROC_DIR, set by the systemd unit). Health gauges are
computed at scrape time by a collector, so they are never stale.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sample_app.health import HealthChecker

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.4, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
PREFIX = "mita_"  # monitoring_metrics_prefix of the rules (monitoring/METRICS.md)

HTTP_REQUESTS = Counter(
    f"{PREFIX}http_requests_total",
    "HTTP requests handled, by method, route template and status code.",
    ["method", "endpoint", "status"],
    registry=None,
)
HTTP_DURATION = Histogram(
    f"{PREFIX}http_request_duration_seconds",
    "Time to handle an HTTP request, by method and route template.",
    ["method", "endpoint"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)
TRANSACTIONS = Counter(
    f"{PREFIX}transactions_total",
    "Payment transactions processed, by outcome (success|failed|rejected).",
    ["status"],
    registry=None,
)
TRANSACTION_DURATION = Histogram(
    f"{PREFIX}transaction_duration_seconds",
    "Time to process one payment transaction (validation to commit).",
    buckets=LATENCY_BUCKETS,
    registry=None,
)
PAYMENTS = Counter(
    f"{PREFIX}payments_total",
    "Payments (money movements) by outcome (success|failed).",
    ["status"],
    registry=None,
)
REGISTRATIONS = Counter(
    f"{PREFIX}user_registrations_total",
    "User registrations, by outcome (success|failed|rejected).",
    ["status"],
    registry=None,
)
DB_ERRORS = Counter(
    f"{PREFIX}database_connection_errors_total",
    "Failures to reach PostgreSQL from request handlers.",
    registry=None,
)
REDIS_ERRORS = Counter(
    f"{PREFIX}redis_connection_errors_total",
    "Failures to reach Redis from request handlers.",
    registry=None,
)
DB_QUERY_DURATION = Histogram(
    f"{PREFIX}database_query_duration_seconds",
    "Time of one SQL statement.",
    buckets=LATENCY_BUCKETS,
    registry=None,
)
DB_POOL_CONNECTIONS = Gauge(
    f"{PREFIX}database_pool_connections",
    "Connections of the database pools, by state (in_use|idle), summed over workers.",
    ["state"],
    multiprocess_mode="livesum",
    registry=None,
)
DB_POOL_SIZE = Gauge(
    f"{PREFIX}database_pool_size",
    "Configured size of the database pools, summed over workers.",
    multiprocess_mode="livesum",
    registry=None,
)
HEALTH_CHECKS = Counter(
    f"{PREFIX}health_checks_total",
    "Health check runs by check and outcome (success|failure).",
    ["check", "status"],
    registry=None,
)
APP_METRICS = (
    HTTP_REQUESTS, HTTP_DURATION, TRANSACTIONS, TRANSACTION_DURATION, PAYMENTS, REGISTRATIONS, DB_ERRORS,
    REDIS_ERRORS, DB_QUERY_DURATION, DB_POOL_CONNECTIONS, DB_POOL_SIZE, HEALTH_CHECKS,
)
# Which checks the service cannot work without (label critical="true").
CRITICAL_CHECKS = frozenset({"database"})
# Set by gunicorn's master (gunicorn.conf.py on_starting) and inherited by the workers.
START_ENV = "SAMPLE_APP_STARTED_AT"


def initialise_series() -> None:
    """Create the label values known at start-up at 0: rate() cannot see a series' first increment."""
    for status in ("success", "failed", "rejected"):
        TRANSACTIONS.labels(status)
        REGISTRATIONS.labels(status)
    for status in ("success", "failed"):
        PAYMENTS.labels(status)
    for check in ("database", "redis"):
        for status in ("success", "failed"):
            HEALTH_CHECKS.labels(check, status)
    for state in ("in_use", "idle"):
        DB_POOL_CONNECTIONS.labels(state)

# Paths that are not application traffic: scraped or probed every few seconds.
UNTRACKED = frozenset({"/metrics"})

bp = Blueprint("metrics", __name__)


class HealthCollector(Collector):
    """Runs the health checks when Prometheus scrapes, and reports the business gauges."""

    def __init__(self, checker: HealthChecker, service: str) -> None:
        self.checker = checker
        self.service = service

    def collect(self) -> Iterator[Metric]:
        report = self.checker.check()
        yield GaugeMetricFamily(
            f"{PREFIX}health_status",
            "Overall health: 1 healthy, 0.5 degraded, 0 unhealthy (the verdict of /health).",
            value=report.score,
        )
        status = GaugeMetricFamily(
            f"{PREFIX}health_check_status",
            "Per check: 1 healthy, 0.5 degraded, 0 unhealthy.",
            labels=["check", "critical"],
        )
        duration = GaugeMetricFamily(
            f"{PREFIX}health_check_duration_seconds",
            "How long the last run of the check took.",
            labels=["check"],
        )
        for name, comp in report.components.items():
            critical = "true" if name in CRITICAL_CHECKS else "false"
            status.add_metric([name, critical], 1.0 if comp.healthy else 0.0)
            duration.add_metric([name], comp.duration)
        yield status
        yield duration
        yield GaugeMetricFamily(
            f"{PREFIX}health_check_timestamp_seconds",
            "Unix time of the last health check.",
            value=time.time(),
        )
        started = os.environ.get(START_ENV)
        if started:
            yield GaugeMetricFamily(
                "process_start_time_seconds",
                "Start time of the service (the gunicorn master) since the epoch, in seconds.",
                value=float(started),
            )
        dau = self.checker.active_users_daily() if report.components["database"].healthy else None
        if dau is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}active_users_daily",
                "Users with at least one transaction in the last 24 hours.",
                value=dau,
            )


def _endpoint() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"


def _start_timer() -> None:
    g.metrics_start = time.perf_counter()


def _record(response: Response) -> Response:
    if request.path in UNTRACKED or "metrics_start" not in g:
        return response
    endpoint = _endpoint()
    HTTP_DURATION.labels(request.method, endpoint).observe(time.perf_counter() - g.metrics_start)
    HTTP_REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
    return response


@bp.get("/metrics")
def metrics() -> Response:
    registry: CollectorRegistry = current_app.extensions["sample_app.registry"]
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def observe_check(check: str, healthy: bool) -> None:
    HEALTH_CHECKS.labels(check, "success" if healthy else "failed").inc()


def init_app(app: Flask, checker: HealthChecker, service: str) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        for metric in APP_METRICS:
            registry.register(metric)
    registry.register(HealthCollector(checker, service))
    app.extensions["sample_app.registry"] = registry
    initialise_series()
    app.before_request(_start_timer)
    app.after_request(_record)
    app.register_blueprint(bp)
