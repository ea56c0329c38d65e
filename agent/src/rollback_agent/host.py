"""The host the agent works on: its configuration, secrets, state, deployment, migrations,
notifications and operation lock, wired once and shared by the HTTP API, the CLI and the
rollback process.

Nothing here decides or runs anything; the modules that do take a ``Host`` (or its parts).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from rollback_agent.config import Config, ConfigError
from rollback_agent.gitops import Deployment
from rollback_agent.locking import OperationLock, is_held, read_holder
from rollback_agent.logs import mask_in_logs
from rollback_agent.migrations import Migrations, build
from rollback_agent.notify import Event, Notifier
from rollback_agent.secretfiles import Secrets, _read_secret, load_secrets
from rollback_agent.state import Incident, Store


class Host:
    def __init__(
        self, config: Config, secrets: Secrets | None = None, *, clock: Callable[[], float] | None = None
    ) -> None:
        self.config = config
        self.secrets = secrets if secrets is not None else load_secrets(config)
        # The agent's sense of time for its decisions (tests move it instead of sleeping).
        self.clock: Callable[[], float] = clock or time.time
        self.store = Store(config.db_path, config.retention)
        self.deployment = Deployment(config.deployment.repo, config.deployment.ref, config.deployment.remote)
        self.migrations: Migrations | None = build(config)
        self.notifier = _notifier(config, self.secrets, self.store)
        # GitPython objects are not thread-safe: one git conversation at a time per process.
        self.git_lock = threading.Lock()
        try:
            self.store.initialize()  # creates state_dir (0750) and the database when missing
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(config.source or "<config>", [f"state_dir {config.state_dir}: {exc}"]) from None

    def now(self) -> float:
        return self.clock()

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

    def page(self, incident: Incident, summary: str, **extra: Any) -> None:
        """Queue a PagerDuty trigger about ``incident`` (when ``notify.pagerduty`` is set)."""
        self.notifier.page(
            Event(
                kind="not_confirmed",
                incident_id=incident.id,
                host=self.config.host,
                alert=incident.alert_name,
                from_sha=incident.from_sha,
                to_sha=incident.to_sha,
                **extra,
            ),
            summary,
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
                # waiting_for_wave: the host's wave and the peers it waits for (fleet.py)
                "fleet": inc.detail.get("fleet"),
            }
        holder = read_holder(self.config.lock_path) or {}
        return {
            "kind": holder.get("kind", "unknown"),
            "id": holder.get("id"),
            "pid": holder.get("pid"),
            "started_at": holder.get("since"),
        }


def _notifier(config: Config, secrets: Secrets, store: Store) -> Notifier:
    """Slack (flat messages from a webhook URL, or threads with a bot token) and PagerDuty."""
    source = config.source or "<config>"
    slack, pagerduty = config.notify.slack, config.notify.pagerduty
    token = routing_key = None
    if slack is not None and slack.bot_token_file is not None:
        token = _read_secret(slack.bot_token_file, "notify.slack.bot_token_file", source)
    if pagerduty is not None:
        routing_key = _read_secret(pagerduty.routing_key_file, "notify.pagerduty.routing_key_file", source)
    mask_in_logs(v for v in (token, routing_key) if v)
    return Notifier(
        slack,
        secrets.slack_url,
        token=token,
        threads=store,
        pagerduty=pagerduty,
        routing_key=routing_key,
    )
