"""Health checks of the service's dependencies: PostgreSQL and Redis.

Overall status: ``healthy`` when every component passes, ``unhealthy`` when
the database fails (nothing works without it), ``degraded`` otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import redis
from sqlalchemy import Engine, text

SCORES = {"healthy": 1.0, "degraded": 0.5, "unhealthy": 0.0}


@dataclass
class ComponentHealth:
    healthy: bool
    duration: float
    detail: str = ""


@dataclass
class HealthReport:
    status: str
    components: dict[str, ComponentHealth] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return SCORES[self.status]

    def as_dict(self) -> dict[str, object]:
        return {"status": self.status, "components": {k: asdict(v) for k, v in self.components.items()}}


def _timed(check: Callable[[], str]) -> ComponentHealth:
    start = time.perf_counter()
    try:
        detail = check()
    except Exception as exc:  # any failure of a dependency is a failed check
        return ComponentHealth(False, time.perf_counter() - start, f"{type(exc).__name__}: {exc}"[:300])
    return ComponentHealth(True, time.perf_counter() - start, detail)


class HealthChecker:
    def __init__(
        self, engine: Engine, cache: redis.Redis, observe: Callable[[str, bool], None] | None = None
    ) -> None:
        self.engine = engine
        self.cache = cache
        self.observe = observe

    def _database(self) -> str:
        with self.engine.connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return f"alembic revision {revision}"

    def _redis(self) -> str:
        self.cache.ping()
        return "PONG"

    def check(self) -> HealthReport:
        components = {"database": _timed(self._database), "redis": _timed(self._redis)}
        if self.observe is not None:
            for name, comp in components.items():
                self.observe(name, comp.healthy)
        if not components["database"].healthy:
            status = "unhealthy"
        elif all(c.healthy for c in components.values()):
            status = "healthy"
        else:
            status = "degraded"
        return HealthReport(status, components)

    def active_users_daily(self) -> int | None:
        """Users with a transaction in the last 24 hours (None when the database does not answer)."""
        try:
            with self.engine.connect() as conn:
                return int(
                    conn.execute(
                        text(
                            "SELECT COUNT(DISTINCT user_id) FROM transactions "
                            "WHERE created_at > now() - interval '1 day'"
                        )
                    ).scalar_one()
                )
        except Exception:  # a failed query means no value this scrape, not a failed scrape
            return None
