"""The host as it is, read now (never remembered): deployment ref, HEAD, database revision, units.

Every failure message and the status carry this, so what a person reads is what the host holds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rollback_agent import procs
from rollback_agent.gitops import GitError
from rollback_agent.host import Host
from rollback_agent.migrations import MigrationError, child_environment


@dataclass
class Observed:
    ref_sha: str | None = None
    head_sha: str | None = None
    database_revision: str | None = None  # None: no migrations configured
    units: dict[str, str] = field(default_factory=dict)  # unit -> "active" | "not active (...)"
    problems: list[str] = field(default_factory=list)  # what could not be read, and why

    def describe(self) -> str:
        """``ref at 1a2b3c4d5e, HEAD at 1a2b3c4d5e, database at c3000003, app.service active``."""
        parts = [f"ref at {_short(self.ref_sha)}", f"HEAD at {_short(self.head_sha)}"]
        if self.database_revision is not None:
            parts.append(f"database at {self.database_revision}")
        parts += [f"{unit} {state}" for unit, state in self.units.items()]
        parts += self.problems
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _short(sha: str | None) -> str:
    return sha[:10] if sha else "?"


def database_revision(host: Host, timeout: float = 60.0) -> str | None:
    """``alembic current`` now (None when no migrations are configured); raises MigrationError."""
    if host.migrations is None:
        return None
    return host.migrations.current(timeout)


def observe(host: Host, timeout: float = 60.0, *, database: bool = True) -> Observed:
    """Read the host now. ``database=False`` while an operation runs: a reader could hold up its
    migration on SQLite, so the revision is then not read (and says so)."""
    seen = Observed()
    try:
        with host.git_lock:
            seen.ref_sha = host.deployment.current_sha()
            seen.head_sha = host.deployment.head_sha()
    except (GitError, ValueError, OSError) as exc:
        seen.problems.append(f"git unreadable ({exc})")
    if host.migrations is not None and not database:
        seen.database_revision = "not read (an operation is running)"
    elif host.migrations is not None:
        try:
            seen.database_revision = database_revision(host, timeout)
        except MigrationError as exc:
            seen.database_revision = "unknown"
            seen.problems.append(f"database revision unreadable ({exc})")
    env = child_environment(host.config)
    for unit in host.config.services.units:
        result = procs.run([*host.config.services.status_command, unit], timeout=min(15.0, timeout), env=env)
        state = "timed out" if result.timed_out else f"exit {result.returncode}"
        seen.units[unit] = "active" if result.ok else f"not active ({state})"
    return seen
