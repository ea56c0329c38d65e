"""Settings from the environment (systemd's EnvironmentFile in the lab)."""

from __future__ import annotations

import os
from dataclasses import dataclass


def sqlalchemy_url(url: str) -> str:
    """postgresql://... with the psycopg2 driver this service ships (SQLAlchemy 2.1 defaults to psycopg 3)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


class ConfigError(RuntimeError):
    """A required setting is missing or malformed."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    service_name: str = "mita-api"
    health_timeout: float = 2.0
    balance_cache_ttl: int = 30

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        missing = [k for k in ("DATABASE_URL", "REDIS_URL") if not env.get(k)]
        if missing:
            raise ConfigError(f"missing environment variable(s): {', '.join(missing)}")
        try:
            timeout = float(env.get("HEALTH_TIMEOUT", "2.0"))
            ttl = int(env.get("BALANCE_CACHE_TTL", "30"))
        except ValueError as exc:
            raise ConfigError(f"HEALTH_TIMEOUT/BALANCE_CACHE_TTL: {exc}") from exc
        return cls(
            database_url=sqlalchemy_url(env["DATABASE_URL"]),
            redis_url=env["REDIS_URL"],
            service_name=env.get("SERVICE_NAME", "mita-api"),
            health_timeout=timeout,
            balance_cache_ttl=ttl,
        )
