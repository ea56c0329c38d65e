"""The agent: decisions on webhooks, the background rollback, recovery, status.

Shared by the HTTP API and the CLI so both behave the same.
"""

from __future__ import annotations

import logging
import os
import secrets as pysecrets
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollback_agent import __version__, metrics
from rollback_agent.config import Config, ConfigError
from rollback_agent.gitops import Deployment, GitError
from rollback_agent.locking import LockBusyError, OperationLock, is_held, read_holder
from rollback_agent.migrations import Migrations, build
from rollback_agent.notify import Event, Notifier
from rollback_agent.payload import Alert, WebhookPayload
from rollback_agent.planner import Plan, build_plan
from rollback_agent.secretfiles import Secrets, load_secrets
from rollback_agent.state import BLOCKED, DRY_RUN, INTERRUPTED, RUNNING, Store

log = logging.getLogger(__name__)

# Webhook answers
ACCEPTED = "accepted"
IGNORED = "ignored"
DUPLICATE = "duplicate"
IN_PROGRESS = "in_progress"


def new_incident_id() -> str:
    return time.strftime("INC-%Y%m%d-%H%M%S-", time.gmtime()) + pysecrets.token_hex(2)


@dataclass
class Decision:
    status: str
    reason: str
    incident_id: str | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    plan: Plan | None = None

    @property
    def http_status(self) -> int:
        return 202 if self.status == ACCEPTED else 200

    def as_dict(self, host: str) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status, "reason": self.reason, "host": host}
        if self.incident_id:
            body["incident_id"] = self.incident_id
        body["alerts"] = self.alerts
        if self.plan is not None:
            plan = self.plan.as_dict()
            body["plan"] = {k: plan[k] for k in ("from_sha", "to_sha", "to_revision", "units")}
            body["guards"] = plan["guards"]
        return body


class Agent:
    def __init__(self, config: Config, secrets: Secrets | None = None) -> None:
        self.config = config
        self.secrets = secrets if secrets is not None else load_secrets(config)
        self.store = Store(config.db_path, config.retention)
        self.deployment = Deployment(config.deployment.repo, config.deployment.ref, config.deployment.remote)
        self.migrations: Migrations | None = build(config)
        self.notifier = Notifier(config.notify.slack, self.secrets.slack_url)
        self._git_lock = threading.Lock()
        try:
            self.store.initialize()  # creates state_dir (0750) and the database when missing
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(config.source or "<config>", [f"state_dir {config.state_dir}: {exc}"]) from None

    # --- small helpers ------------------------------------------------------------------------------
    def lock(self) -> OperationLock:
        return OperationLock(self.config.lock_path)

    def redact(self, text: str) -> str:
        return self.secrets.redact(text)

    def event(self, kind: str, incident: dict[str, Any], **extra: Any) -> Event:
        return Event(
            kind=kind,
            incident_id=incident["id"],
            host=self.config.host,
            alert=incident.get("alert_name"),
            trigger=incident.get("trigger_id"),
            reason=incident.get("reason"),
            from_sha=incident.get("from_sha"),
            to_sha=incident.get("to_sha"),
            **extra,
        )

    def current_release(self) -> dict[str, Any]:
        """The deployed release as git and the ledger know it."""
        cfg = self.config.deployment
        info: dict[str, Any] = {"ref": cfg.ref, "repo": str(cfg.repo), "sha": None}
        try:
            with self._git_lock:
                sha = self.deployment.current_sha()
                head = self.deployment.head_sha()
                commit = self.deployment.commit_info(sha) if sha else None
        except GitError as exc:
            info["error"] = str(exc)
            return info
        info.update(sha=sha, head_sha=head, subject=commit.subject if commit else None)
        if sha and head and sha != head:
            info["warning"] = f"the working tree (HEAD {head[:10]}) is not at {cfg.ref}"
        if sha:
            record = self.store.latest_deploy_of(sha)
            info["deployed_at"] = record.deployed_at if record else None
            info["deployed_by"] = record.kind if record else None
            info["alembic_revision"] = record.revision if record else None
            info["bad"] = self.store.bad_release(sha) is not None
        return info

    def in_progress(self) -> dict[str, Any] | None:
        """The operation running now (a rollback with its phase, or a deploy), or None."""
        if not is_held(self.config.lock_path):
            return None
        running = self.store.running_incidents()
        if running:
            inc = running[0]
            return {
                "kind": "rollback",
                "incident_id": inc["id"],
                "alert": inc["alert_name"],
                "phase": inc["phase"],
                "progress": inc["progress"],
                "started_at": inc["started_at"],
                "from_sha": inc["from_sha"],
                "to_sha": inc["to_sha"],
                "runner_pid": inc["runner_pid"],
            }
        holder = read_holder(self.config.lock_path) or {}
        return {
            "kind": holder.get("kind", "unknown"),
            "id": holder.get("id"),
            "pid": holder.get("pid"),
            "started_at": holder.get("since"),
        }

    def plan(self, *, manual: bool = False, to: str | None = None) -> Plan:
        with self._git_lock:
            return build_plan(self, manual=manual, to=to)

    # --- recovery -------------------------------------------------------------------------------------
    def recover(self, lock: OperationLock | None = None) -> list[str]:
        """Mark incidents and deploys left "running" by a process that died as interrupted.

        Safe to call from anywhere: without the lock nothing is touched (someone is working).
        """
        if not self.store.running_incidents() and not self.store.running_deploys():
            return []
        owned = lock is None
        if lock is None:
            try:
                lock = self.lock().acquire("recovery")
            except LockBusyError:
                return []
        try:
            marked = []
            for inc in self.store.running_incidents():
                phase = inc.get("phase") or "initiated"
                error = (
                    f"the agent stopped while the rollback was in phase '{phase}' "
                    f"({inc.get('progress', 0)}%); no process runs it any more"
                )
                self.store.finish_incident(inc["id"], INTERRUPTED, failed_step=phase, error=error)
                metrics.ROLLBACKS.labels(result=INTERRUPTED).inc()
                log.error("incident %s marked interrupted (%s)", inc["id"], error)
                repo = self.config.deployment.repo
                self.notifier.send(
                    self.event(
                        "interrupted",
                        inc,
                        progress=int(inc.get("progress") or 0),
                        failed_step=phase,
                        error=error,
                        follow_up=[
                            f"See what was done: `rollback-agent status` and `git -C {repo} log -1`",
                            f"Finish it: `rollback-agent rollback --to {(inc.get('to_sha') or '?')[:12]}`",
                            "Or go back: `rollback-agent deploy "
                            f"{(inc.get('from_sha') or '?')[:12]} --force`",
                        ],
                    )
                )
                marked.append(inc["id"])
            for dep in self.store.running_deploys():
                self.store.finish_deploy(
                    dep.id,
                    outcome=INTERRUPTED,
                    revision=dep.revision,
                    deployed=False,
                    detail="the process running it stopped",
                )
                log.error("%s of %s marked interrupted", dep.kind, dep.sha[:10])
            return marked
        finally:
            if owned:
                lock.release()

    # --- webhooks ---------------------------------------------------------------------------------------
    def _classify(self, alert: Alert, current: str) -> dict[str, Any]:
        item: dict[str, Any] = {"alertname": alert.name, "fingerprint": alert.key(), "status": alert.status}
        trigger = self.config.triggers.get(alert.name)
        if trigger is not None:
            item["trigger"] = trigger.trigger
            item["confidence"] = trigger.confidence
        if alert.status != "firing":
            item.update(decision=IGNORED, reason="resolved alert: recorded, no action")
        elif trigger is None:
            item.update(decision=IGNORED, reason=f"{alert.name} is not a rollback trigger")
        elif not trigger.auto_rollback:
            item.update(decision=IGNORED, reason=f"trigger {trigger.trigger} has auto_rollback: false")
        elif (why := self.config.scope.mismatch(alert.labels)) is not None:
            item.update(decision=IGNORED, reason=f"out of scope for {self.config.host}: {why}")
        elif (seen := self.store.handled(item["fingerprint"], current)) is not None:
            item.update(
                decision=DUPLICATE,
                incident_id=seen["incident_id"],
                reason=f"already handled against {current[:10]} ({seen['status']} {seen['incident_id']})",
            )
        else:
            item.update(decision="candidate", reason="rollback trigger")
        return item

    def handle_webhook(self, payload: WebhookPayload, remote: str | None = None) -> Decision:
        current = self._current_key()
        items: list[dict[str, Any]] = []
        seen_fps: set[str] = set()
        for alert in payload.alerts:
            item = self._classify(alert, current)
            if item["decision"] == "candidate" and item["fingerprint"] in seen_fps:
                item.update(decision=DUPLICATE, reason="the same alert appears twice in this webhook")
            seen_fps.add(item["fingerprint"])
            items.append(item)
        candidates = [i for i in items if i["decision"] == "candidate"]
        if candidates:
            decision = self._decide(candidates, items, payload)
        elif any(i["decision"] == DUPLICATE for i in items):
            first = next(i for i in items if i["decision"] == DUPLICATE)
            decision = Decision(DUPLICATE, first["reason"], first.get("incident_id"), items)
        else:
            reason = "; ".join(dict.fromkeys(i["reason"] for i in items)) or "the webhook carries no alerts"
            decision = Decision(IGNORED, reason, None, items)
        for item in items:
            metrics.ALERT_DECISIONS.labels(decision=item["decision"]).inc()
        metrics.WEBHOOKS.labels(outcome=decision.status).inc()
        self.store.record_webhook(
            remote=remote,
            receiver=payload.receiver,
            group_key=payload.groupKey,
            alert_count=len(payload.alerts),
            status=decision.status,
            incident_id=decision.incident_id,
            reason=decision.reason,
            decisions=items,
        )
        log.info(
            "webhook from %s (%d alerts): %s%s - %s",
            remote or "?",
            len(payload.alerts),
            decision.status,
            f" {decision.incident_id}" if decision.incident_id else "",
            decision.reason,
        )
        return decision

    def _current_key(self) -> str:
        """What an alert is deduplicated against: the live sha *and* the deploy that put it live.

        Alertmanager resends a firing alert for as long as it fires; those resends must never roll
        back twice. But when the same release is deployed again later (``deploy --force``) and
        breaks again, that is a new incident: keying on the deploy, not only the sha, allows it.
        """
        try:
            with self._git_lock:
                sha = self.deployment.current_sha()
        except GitError:
            return "-"
        if not sha:
            return "-"
        live = self.store.latest_deploy_of(sha)
        return f"{sha}@{live.id}" if live is not None else sha

    def _decide(
        self, candidates: list[dict[str, Any]], items: list[dict[str, Any]], payload: WebhookPayload
    ) -> Decision:
        try:
            lock = self.lock().acquire("decision", "on a webhook")
        except LockBusyError as busy:
            running = self.in_progress()
            if running and running.get("kind") == "rollback" and running.get("incident_id"):
                reason = (
                    f"rollback {running['incident_id']} is running (phase {running['phase']}, "
                    f"{running['progress']}%)"
                )
                incident = running["incident_id"]
            else:
                reason = f"another operation holds the lock: {busy}"
                incident = None
            for item in candidates:
                item.update(decision=IN_PROGRESS, reason=reason)
            return Decision(IN_PROGRESS, reason, incident, items)
        try:
            self.recover(lock)
            current = self._current_key()
            fresh = []
            for item in candidates:
                seen = self.store.handled(item["fingerprint"], current)
                if seen is not None:
                    item.update(
                        decision=DUPLICATE,
                        incident_id=seen["incident_id"],
                        reason=f"already handled against {current[:10]} ({seen['status']} "
                        f"{seen['incident_id']})",
                    )
                else:
                    fresh.append(item)
            if not fresh:
                return Decision(DUPLICATE, candidates[0]["reason"], candidates[0].get("incident_id"), items)
            return self._open_incident(fresh, items, payload, lock)
        finally:
            lock.release()  # a no-op when the lock went to the runner

    def _open_incident(
        self,
        fresh: list[dict[str, Any]],
        items: list[dict[str, Any]],
        payload: WebhookPayload,
        lock: OperationLock,
    ) -> Decision:
        plan = self.plan()
        current = self._current_key()
        primary = fresh[0]
        trigger = self.config.triggers[primary["alertname"]]
        incident_id = new_incident_id()
        blocked = plan.blocked_by
        if blocked is not None:
            status, reason = BLOCKED, f"blocked by {blocked.name}: {blocked.detail}"
        elif self.config.dry_run:
            status = DRY_RUN
            reason = (
                f"dry run: would roll back {(plan.from_sha or '?')[:10]} -> {(plan.to_sha or '?')[:10]}"
                f" for {primary['alertname']}"
            )
        else:
            status = RUNNING
            reason = (
                f"rolling back {(plan.from_sha or '?')[:10]} -> {(plan.to_sha or '?')[:10]}: {trigger.reason}"
            )
        names = sorted({i["alertname"] for i in fresh})
        detail = {
            "plan": plan.as_dict(),
            "alerts": names,
            "group_key": payload.groupKey[:512],
            "labels": dict(next(a.labels for a in payload.alerts if a.key() == primary["fingerprint"])),
        }
        with self.store.transaction() as conn:
            self.store.create_incident(
                conn,
                incident_id=incident_id,
                source="webhook",
                status=status,
                alert_name=primary["alertname"],
                fingerprint=primary["fingerprint"],
                trigger_id=trigger.trigger,
                confidence=trigger.confidence,
                reason=trigger.reason if status == RUNNING else reason,
                from_sha=plan.from_sha,
                to_sha=plan.to_sha,
                from_revision=plan.from_revision,
                to_revision=plan.to_revision,
                detail=detail,
            )
            self.store.mark_handled(conn, [i["fingerprint"] for i in fresh], current, incident_id, status)
            if status == RUNNING and plan.from_sha:
                self.store.mark_bad(
                    conn, plan.from_sha, incident_id, f"rolled back by {incident_id}: {primary['alertname']}"
                )
        final = {RUNNING: ACCEPTED, BLOCKED: BLOCKED, DRY_RUN: DRY_RUN}[status]
        for item in fresh:
            item.update(decision=final, incident_id=incident_id, reason=reason)
        incident = self.store.incident(incident_id) or {}
        if status == RUNNING:
            try:
                self.spawn_runner(incident_id, lock)
            except OSError as exc:
                error = f"cannot start the rollback process: {exc}"
                self.store.finish_incident(incident_id, "failed", failed_step="initiated", error=error)
                metrics.ROLLBACKS.labels(result="failed").inc()
                self.notifier.send(self.event("failure", incident, failed_step="initiated", error=error))
                log.error("%s: %s", incident_id, error)
        else:
            incident["reason"] = trigger.reason
            self.notifier.send(
                self.event(
                    status,
                    incident,
                    progress=0,
                    detail=f"*Decision:* {reason}",
                    follow_up=[
                        "A human decides: `rollback-agent test " + primary["alertname"] + "` shows the plan, "
                        "`rollback-agent rollback` runs it"
                    ],
                )
            )
        return Decision(final, reason, incident_id, items, plan)

    def spawn_runner(self, incident_id: str, lock: OperationLock) -> None:
        """Start the rollback in its own process, handing the lock over to it.

        The process is not tied to the gunicorn worker that started it: a worker restart does not stop it.
        """
        if lock.fd is None:
            raise OSError("the operation lock is not held")
        if not self.config.source:
            raise OSError("the configuration has no file the rollback process could read")
        argv = [
            sys.executable,
            "-m",
            "rollback_agent.runner",
            "--config",
            self.config.source,
            "--incident",
            incident_id,
            "--lock-fd",
            str(lock.fd),
        ]
        proc = subprocess.Popen(argv, pass_fds=(lock.fd,), stdin=subprocess.DEVNULL, close_fds=True)
        lock.describe("rollback", incident_id, pid=proc.pid)
        self.store.update_incident(incident_id, runner_pid=proc.pid)
        lock.detach()
        threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
        log.info("%s: rollback running in process %d", incident_id, proc.pid)

    # --- simulation, checks, status ----------------------------------------------------------------------
    def simulate(self, alert_name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        """What a firing ``alert_name`` would cause now; executes and records nothing."""
        trigger = self.config.triggers.get(alert_name)
        alert_labels = {**self.config.scope.match_labels, **(labels or {}), "alertname": alert_name}
        checks = self.checks()
        plan = self.plan()
        would, reason = ACCEPTED, "a rollback would start"
        running = self.in_progress()
        if trigger is None:
            would, reason = (
                IGNORED,
                f"{alert_name} is not a rollback trigger (known: {', '.join(self.config.triggers)})",
            )
        elif not trigger.auto_rollback:
            would, reason = IGNORED, f"trigger {trigger.trigger} has auto_rollback: false"
        elif (why := self.config.scope.mismatch(alert_labels)) is not None:
            would, reason = IGNORED, f"out of scope: {why}"
        elif running is not None:
            would, reason = (
                IN_PROGRESS,
                f"{running.get('kind')} {running.get('incident_id') or running.get('id')} is running",
            )
        elif (blocked := plan.blocked_by) is not None:
            would, reason = BLOCKED, f"blocked by {blocked.name}: {blocked.detail}"
        elif self.config.dry_run:
            would, reason = DRY_RUN, "dry_run is on: the decision would be recorded and notified only"
        return {
            "alert_name": alert_name,
            "labels": alert_labels,
            "trigger": trigger.model_dump() if trigger else None,
            "would": would,
            "reason": reason,
            "plan": plan.as_dict(),
            "checks": checks,
            "config_ok": all(c["ok"] for c in checks),
            "executed": False,
        }

    def checks(self) -> list[dict[str, Any]]:
        """Everything the agent needs on this host, checked without changing anything."""
        out: list[dict[str, Any]] = [
            {"name": "config", "ok": True, "detail": self.config.source or "in memory"}
        ]

        def add(name: str, ok: bool, detail: str) -> None:
            out.append({"name": name, "ok": ok, "detail": detail})

        state_dir = self.config.state_dir
        add(
            "state_dir",
            os.access(state_dir, os.W_OK | os.X_OK),
            f"{state_dir} "
            + ("is writable" if os.access(state_dir, os.W_OK | os.X_OK) else "is not writable"),
        )
        try:
            with self._git_lock:
                sha = self.deployment.current_sha()
                dirty = self.deployment.dirty_files()
            add("deployment.repo", True, f"{self.config.deployment.repo} is a git working tree")
            add(
                "deployment.ref",
                sha is not None,
                f"{self.config.deployment.ref} -> {sha[:10]}"
                if sha
                else f"{self.config.deployment.ref} does not exist",
            )
            add(
                "working_tree",
                not dirty,
                "clean" if not dirty else "local changes in " + ", ".join(dirty[:5]),
            )
        except GitError as exc:
            add("deployment.repo", False, str(exc))
        if self.config.migrations is not None:
            add(
                "migrations.command",
                _executable(self.config.migrations.command[0]),
                f"{self.config.migrations.command[0]} "
                + (
                    "found"
                    if _executable(self.config.migrations.command[0])
                    else "not found or not executable"
                ),
            )
            env_file = self.config.migrations.environment_file
            if env_file is not None:
                add(
                    "migrations.environment_file",
                    os.access(env_file, os.R_OK),
                    f"{env_file} " + ("is readable" if os.access(env_file, os.R_OK) else "is not readable"),
                )
        for key, argv in (
            ("services.restart_command", self.config.services.restart_command),
            ("services.status_command", self.config.services.status_command),
        ):
            add(key, _executable(argv[0]), f"{argv[0]} " + ("found" if _executable(argv[0]) else "not found"))
        add(
            "notify.slack",
            True,
            "configured" if self.notifier.enabled else "not configured (no notifications)",
        )
        return out

    def status(self, history: int = 10) -> dict[str, Any]:
        self.recover()
        return {
            "agent": {
                "version": __version__,
                "host": self.config.host,
                "mode": self.config.mode,
                "pid": os.getpid(),
            },
            "monitored_triggers": {
                name: t.model_dump() for name, t in sorted(self.config.triggers.items()) if t.auto_rollback
            },
            "scope": self.config.scope.model_dump(),
            "guards": self.config.guards.model_dump(),
            "deployment": self.current_release(),
            "in_progress": self.in_progress(),
            "history": [_history_item(i) for i in self.store.incidents(limit=history)],
            "recent_webhooks": [_webhook_item(w) for w in self.store.recent_webhooks(limit=history)],
        }


def _executable(command: str) -> bool:
    if "/" in command:
        return os.access(command, os.X_OK) and Path(command).is_file()
    return shutil.which(command) is not None


def _webhook_item(row: dict[str, Any]) -> dict[str, Any]:
    """A received webhook as the status shows it: what came in and what was decided, per alert."""
    return {
        "received_at": row["received_at"],
        "receiver": row["receiver"],
        "alert_count": row["alert_count"],
        "status": row["status"],
        "incident_id": row["incident_id"],
        "reason": row["reason"],
        "alerts": [
            {k: d.get(k) for k in ("alertname", "fingerprint", "status", "decision")}
            for d in row["decisions"]
            if isinstance(d, dict)
        ],
    }


def _history_item(inc: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "id",
        "source",
        "alert_name",
        "trigger_id",
        "confidence",
        "reason",
        "status",
        "result",
        "phase",
        "progress",
        "from_sha",
        "to_sha",
        "from_revision",
        "to_revision",
        "created_at",
        "started_at",
        "ended_at",
        "duration",
        "failed_step",
        "error",
        "phases",
    )
    item = {k: inc.get(k) for k in keys}
    item["incident_id"] = item.pop("id")
    return item
