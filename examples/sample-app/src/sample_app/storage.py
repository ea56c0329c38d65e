"""Connections to PostgreSQL (SQLAlchemy engine) and Redis, one pool per process."""

from __future__ import annotations

import redis
from sqlalchemy import Engine, create_engine

from sample_app.config import Settings


def make_engine(settings: Settings) -> Engine:
    return create_engine(
        settings.database_url,
        pool_size=5,
        max_overflow=5,
        pool_pre_ping=True,
        pool_timeout=settings.health_timeout,
        connect_args={"connect_timeout": max(1, int(settings.health_timeout))},
    )


def make_redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.health_timeout,
        socket_connect_timeout=settings.health_timeout,
        decode_responses=True,
    )
