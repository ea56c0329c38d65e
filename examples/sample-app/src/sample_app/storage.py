"""Connections to PostgreSQL (SQLAlchemy engine) and Redis, one pool per process."""

from __future__ import annotations

import time
from typing import Any

import redis
from sqlalchemy import Engine, create_engine, event

from sample_app import metrics
from sample_app.config import Settings


def make_engine(settings: Settings) -> Engine:
    engine = create_engine(
        settings.database_url,
        pool_size=5,
        max_overflow=5,
        pool_pre_ping=True,
        pool_timeout=settings.health_timeout,
        connect_args={"connect_timeout": max(1, int(settings.health_timeout))},
    )
    instrument(engine)
    return engine


def instrument(engine: Engine) -> None:
    """Pool gauges and statement timings for the metrics of monitoring/METRICS.md."""
    pool = engine.pool
    metrics.DB_POOL_SIZE.set(pool.size())  # type: ignore[attr-defined]

    def pool_state(*_: Any) -> None:
        metrics.DB_POOL_CONNECTIONS.labels("in_use").set(pool.checkedout())  # type: ignore[attr-defined]
        metrics.DB_POOL_CONNECTIONS.labels("idle").set(pool.checkedin())  # type: ignore[attr-defined]

    for name in ("checkout", "checkin", "connect", "close"):
        event.listen(pool, name, pool_state)

    @event.listens_for(engine, "before_cursor_execute")
    def _start(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        conn.info.setdefault("query_start", []).append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def _end(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        starts = conn.info.get("query_start")
        if starts:
            metrics.DB_QUERY_DURATION.observe(time.perf_counter() - starts.pop())


def make_redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.health_timeout,
        socket_connect_timeout=settings.health_timeout,
        decode_responses=True,
    )
