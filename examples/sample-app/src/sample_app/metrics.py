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
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sample_app.health import HealthChecker

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.4, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests handled, by method, route template and status code.",
    ["method", "endpoint", "status"],
    registry=None,
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to handle an HTTP request, by method and route template.",
    ["method", "endpoint"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)
TRANSACTIONS = Counter(
    "mita_transactions_total",
    "Payment transactions processed, by outcome (success|failed).",
    ["status"],
    registry=None,
)
REGISTRATIONS = Counter(
    "mita_user_registrations_total",
    "User registrations, by outcome (success|failed).",
    ["status"],
    registry=None,
)
DB_ERRORS = Counter(
    "mita_database_connection_errors_total",
    "Failures to reach PostgreSQL from request handlers.",
    registry=None,
)
REDIS_ERRORS = Counter(
    "mita_redis_connection_errors_total",
    "Failures to reach Redis from request handlers.",
    registry=None,
)
APP_METRICS = (HTTP_REQUESTS, HTTP_DURATION, TRANSACTIONS, REGISTRATIONS, DB_ERRORS, REDIS_ERRORS)

# Paths that are not application traffic: scraped or probed every few seconds.
UNTRACKED = frozenset({"/metrics"})

bp = Blueprint("metrics", __name__)


class HealthCollector(Collector):
    """Runs the health checks when Prometheus scrapes."""

    def __init__(self, checker: HealthChecker, service: str) -> None:
        self.checker = checker
        self.service = service

    def collect(self) -> Iterator[Metric]:
        report = self.checker.check()
        overall = GaugeMetricFamily(
            "mita_health_status",
            "Overall health: 1 healthy, 0.5 degraded, 0 unhealthy.",
            labels=["service"],
        )
        overall.add_metric([self.service], report.score)
        yield overall
        healthy = GaugeMetricFamily(
            "mita_component_health", "1 when the component check passes, else 0.", labels=["component"]
        )
        duration = GaugeMetricFamily(
            "mita_component_check_duration_seconds",
            "How long the last check of the component took.",
            labels=["component"],
        )
        for name, comp in report.components.items():
            healthy.add_metric([name], 1.0 if comp.healthy else 0.0)
            duration.add_metric([name], comp.duration)
        yield healthy
        yield duration
        yield GaugeMetricFamily(
            "mita_health_check_timestamp_seconds",
            "Unix time of the last health check.",
            value=time.time(),
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
    app.before_request(_start_timer)
    app.after_request(_record)
    app.register_blueprint(bp)
