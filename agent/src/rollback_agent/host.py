"""The host the agent works on: its configuration, secrets, state, deployment, migrations,
notifications and operation lock, wired once and shared by the HTTP API, the CLI and the
rollback process.

Nothing here decides or runs anything; the modules that do take a ``Host`` (or its parts).
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from rollback_agent.config import Config, ConfigError
from rollback_agent.gitops import Deployment
from rollback_agent.locking import OperationLock, is_held, read_holder
from rollback_agent.migrations import Migrations, build
from rollback_agent.notify import Event, Notifier
from rollback_agent.secretfiles import Secrets, load_secrets
from rollback_agent.state import Incident, Store


class Host:
    def __init__(self, config: Config, secrets: Secrets | None = None) -> None:
        self.config = config
        self.secrets = secrets if secrets is not None else load_secrets(config)
        self.store = Store(config.db_path, config.retention)
        self.deployment = Deployment(config.deployment.repo, config.deployment.ref, config.deployment.remote)
        self.migrations: Migrations | None = build(config)
        self.notifier = Notifier(config.notify.slack, self.secrets.slack_url)
        # GitPython objects are not thread-safe: one git conversation at a time per process.
        self.git_lock = threading.Lock()
        try:
            self.store.initialize()  # creates state_dir (0750) and the database when missing
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(config.source or "<config>", [f"state_dir {config.state_dir}: {exc}"]) from None

    def lock(self) -> OperationLock:
        """The host-wide operation lock (one rollback or deploy at a time)."""
        return OperationLock(self.config.lock_path)

    def redact(self, text: str) -> str:
        return self.secrets.redact(text)

    def notify(self, kind: str, incident: Incident, **extra: Any) -> None:
        """Queue a Slack message about ``incident`` (never blocks, never fails the caller)."""
        self.notifier.send(
            Event(
                kind=kind,
                incident_id=incident.id,
                host=self.config.host,
                alert=incident.alert_name,
                trigger=incident.trigger_id,
                reason=incident.reason,
                from_sha=incident.from_sha,
                to_sha=incident.to_sha,
                **extra,
            )
        )

    def in_progress(self) -> dict[str, Any] | None:
        """The operation holding the lock now (a rollback with its phase, or a deploy), or None."""
        if not is_held(self.config.lock_path):
            return None
        running = self.store.running_incidents()
        if running:
            inc = running[0]
            return {
                "kind": "rollback",
                "incident_id": inc.id,
                "alert": inc.alert_name,
                "phase": inc.phase,
                "progress": inc.progress,
                "started_at": inc.started_at,
                "from_sha": inc.from_sha,
                "to_sha": inc.to_sha,
                "runner_pid": inc.runner_pid,
            }
        holder = read_holder(self.config.lock_path) or {}
        return {
            "kind": holder.get("kind", "unknown"),
            "id": holder.get("id"),
            "pid": holder.get("pid"),
            "started_at": holder.get("since"),
        }
