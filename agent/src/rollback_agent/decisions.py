"""What an alert causes: the one decision path of webhooks, ``POST .../test`` and ``rollback-agent test``.

``classify`` (is this alert a rollback trigger for this host?) and ``verdict`` (given the plan and
its guards, what happens?) are used by all three; ``handle_webhook`` adds deduplication, the lock,
the incident and the rollback process, ``simulate`` only reads.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from rollback_agent import metrics, preflight
from rollback_agent.config import Config, TriggerConfig
from rollback_agent.gitops import GitError
from rollback_agent.host import Host
from rollback_agent.locking import LockBusyError, OperationLock
from rollback_agent.payload import Alert, WebhookPayload
from rollback_agent.planner import Plan, build_plan
from rollback_agent.recovery import recover
from rollback_agent.rollback import spawn
from rollback_agent.state import BLOCKED, DRY_RUN, RUNNING, new_incident_id

log = logging.getLogger(__name__)

# Answers (per webhook and per alert)
ACCEPTED = "accepted"
IGNORED = "ignored"
DUPLICATE = "duplicate"
IN_PROGRESS = "in_progress"
CANDIDATE = "candidate"  # a rollback trigger for this host, not decided yet
# The incident status each final answer records.
INCIDENT_STATUS = {ACCEPTED: RUNNING, BLOCKED: BLOCKED, DRY_RUN: DRY_RUN}


@dataclass
class Decision:
    """The answer to a webhook."""

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


@dataclass
class Simulation:
    """What an alert would cause now (``test``): nothing executed, nothing recorded."""

    alert_name: str
    labels: dict[str, str]
    trigger: TriggerConfig | None
    would: str
    reason: str
    plan: Plan
    checks: list[dict[str, Any]]

    @property
    def config_ok(self) -> bool:
        return all(c["ok"] for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "alert_name": self.alert_name,
            "labels": self.labels,
            "trigger": self.trigger.model_dump() if self.trigger else None,
            "would": self.would,
            "reason": self.reason,
            "plan": self.plan.as_dict(),
            "checks": self.checks,
            "config_ok": self.config_ok,
            "executed": False,
        }


# --- the rules ------------------------------------------------------------------------------------
def classify(config: Config, name: str, status: str, labels: dict[str, str]) -> tuple[str, str]:
    """(IGNORED, why) or (CANDIDATE, "rollback trigger"): firing, a trigger, auto_rollback, in scope."""
    trigger = config.triggers.get(name)
    if status != "firing":
        return IGNORED, "resolved alert: recorded, no action"
    if trigger is None:
        return IGNORED, f"{name} is not a rollback trigger"
    if not trigger.auto_rollback:
        return IGNORED, f"trigger {trigger.trigger} has auto_rollback: false"
    why = config.scope.mismatch(labels)
    if why is not None:
        return IGNORED, f"out of scope for {config.host}: {why}"
    return CANDIDATE, "rollback trigger"


def verdict(config: Config, plan: Plan, name: str, trigger: TriggerConfig) -> tuple[str, str]:
    """For a candidate when no operation runs: ACCEPTED, BLOCKED (a guard) or DRY_RUN, with why."""
    blocked = plan.blocked_by
    if blocked is not None:
        return BLOCKED, f"blocked by {blocked.name}: {blocked.detail}"
    releases = f"{(plan.from_sha or '?')[:10]} -> {(plan.to_sha or '?')[:10]}"
    if config.dry_run:
        return DRY_RUN, f"dry run: would roll back {releases} for {name}"
    return ACCEPTED, f"rolling back {releases}: {trigger.reason}"


def running(host: Host, busy: LockBusyError | None = None) -> tuple[str, str | None] | None:
    """(why, incident id) when an operation holds the lock, else None."""
    now = host.in_progress()
    if now and now.get("kind") == "rollback" and now.get("incident_id"):
        return f"rollback {now['incident_id']} is running (phase {now['phase']}, {now['progress']}%)", now[
            "incident_id"
        ]
    if busy is None:
        if now is None:
            return None
        busy = LockBusyError(now)
    return f"another operation holds the lock: {busy}", None


# --- POST .../test and `rollback-agent test` -------------------------------------------------------
def simulate(
    host: Host, alert_name: str, labels: dict[str, str] | None = None, status: str = "firing"
) -> Simulation:
    """What an ``alert_name`` alert (firing unless told) would cause now; executes and records nothing."""
    config = host.config
    trigger = config.triggers.get(alert_name)
    alert_labels = {**config.scope.match_labels, **(labels or {}), "alertname": alert_name}
    checks = preflight.checks(host)
    plan = build_plan(host)
    would, reason = classify(config, alert_name, status, alert_labels)
    if would == IGNORED and trigger is None and status == "firing":
        reason += f" (known: {', '.join(config.triggers)})"
    elif would == CANDIDATE and trigger is not None:
        busy = running(host)
        if busy is not None:
            would, reason = IN_PROGRESS, busy[0]
        else:
            would, reason = verdict(config, plan, alert_name, trigger)
    return Simulation(alert_name, alert_labels, trigger, would, reason, plan, checks)


# --- POST .../trigger (Alertmanager) ---------------------------------------------------------------
def handle_webhook(host: Host, payload: WebhookPayload, remote: str | None = None) -> Decision:
    current = dedup_key(host)
    items: list[dict[str, Any]] = []
    seen_fps: set[str] = set()
    for alert in payload.alerts:
        item = _alert_item(host, alert, current)
        if item["decision"] == CANDIDATE and item["fingerprint"] in seen_fps:
            item.update(decision=DUPLICATE, reason="the same alert appears twice in this webhook")
        seen_fps.add(item["fingerprint"])
        items.append(item)
    candidates = [i for i in items if i["decision"] == CANDIDATE]
    if candidates:
        decision = _decide(host, candidates, items, payload)
    elif any(i["decision"] == DUPLICATE for i in items):
        first = next(i for i in items if i["decision"] == DUPLICATE)
        decision = Decision(DUPLICATE, first["reason"], first.get("incident_id"), items)
    else:
        reason = "; ".join(dict.fromkeys(i["reason"] for i in items)) or "the webhook carries no alerts"
        decision = Decision(IGNORED, reason, None, items)
    for item in items:
        metrics.ALERT_DECISIONS.labels(decision=item["decision"]).inc()
    metrics.WEBHOOKS.labels(outcome=decision.status).inc()
    host.store.record_webhook(
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


def dedup_key(host: Host) -> str:
    """What an alert is deduplicated against: the live sha *and* the deploy that put it live.

    Alertmanager resends a firing alert for as long as it fires; those resends must never roll
    back twice. But when the same release is deployed again later (``deploy --force``) and
    breaks again, that is a new incident: keying on the deploy, not only the sha, allows it.
    """
    try:
        with host.git_lock:
            sha = host.deployment.current_sha()
    except GitError:
        return "-"
    if not sha:
        return "-"
    live = host.store.latest_deploy_of(sha)
    return f"{sha}@{live.id}" if live is not None else sha


def _alert_item(host: Host, alert: Alert, current: str) -> dict[str, Any]:
    item: dict[str, Any] = {"alertname": alert.name, "fingerprint": alert.key(), "status": alert.status}
    trigger = host.config.triggers.get(alert.name)
    if trigger is not None:
        item["trigger"] = trigger.trigger
        item["confidence"] = trigger.confidence
    decision, reason = classify(host.config, alert.name, alert.status, alert.labels)
    item.update(decision=decision, reason=reason)
    if decision == CANDIDATE:
        _handled_already(host, item, current)
    return item


def _handled_already(host: Host, item: dict[str, Any], current: str) -> bool:
    """Mark ``item`` a duplicate when its alert was decided against ``current`` before."""
    seen = host.store.handled(item["fingerprint"], current)
    if seen is None:
        return False
    item.update(
        decision=DUPLICATE,
        incident_id=seen.incident_id,
        reason=f"already handled against {current[:10]} ({seen.status} {seen.incident_id})",
    )
    return True


def _decide(
    host: Host, candidates: list[dict[str, Any]], items: list[dict[str, Any]], payload: WebhookPayload
) -> Decision:
    try:
        lock = host.lock().acquire("decision", "on a webhook")
    except LockBusyError as busy:
        reason, incident = running(host, busy) or (f"another operation holds the lock: {busy}", None)
        for item in candidates:
            item.update(decision=IN_PROGRESS, reason=reason)
        return Decision(IN_PROGRESS, reason, incident, items)
    try:
        recover(host, lock)
        current = dedup_key(host)
        fresh = [item for item in candidates if not _handled_already(host, item, current)]
        if not fresh:
            return Decision(DUPLICATE, candidates[0]["reason"], candidates[0].get("incident_id"), items)
        return _open_incident(host, fresh, items, payload, lock)
    finally:
        lock.release()  # a no-op when the lock went to the rollback process


def _open_incident(
    host: Host,
    fresh: list[dict[str, Any]],
    items: list[dict[str, Any]],
    payload: WebhookPayload,
    lock: OperationLock,
) -> Decision:
    config = host.config
    plan = build_plan(host)
    current = dedup_key(host)
    primary = fresh[0]
    trigger = config.triggers[primary["alertname"]]
    answer, reason = verdict(config, plan, primary["alertname"], trigger)
    status = INCIDENT_STATUS[answer]
    incident_id = new_incident_id()
    incident = host.store.open_incident(
        incident_id,
        source="webhook",
        status=status,
        alert_name=primary["alertname"],
        fingerprint=primary["fingerprint"],
        trigger_id=trigger.trigger,
        confidence=trigger.confidence,
        reason=trigger.reason if status == RUNNING else reason,
        **plan.releases(),
        detail={
            "plan": plan.as_dict(),
            "alerts": sorted({i["alertname"] for i in fresh}),
            "group_key": payload.groupKey[:512],
            "labels": dict(next(a.labels for a in payload.alerts if a.key() == primary["fingerprint"])),
        },
        handled=([i["fingerprint"] for i in fresh], current),
        bad_reason=f"rolled back by {incident_id}: {primary['alertname']}" if status == RUNNING else None,
    )
    for item in fresh:
        item.update(decision=answer, incident_id=incident_id, reason=reason)
    if status == RUNNING:
        try:
            spawn(host, incident_id, lock)
        except OSError as exc:
            error = f"cannot start the rollback process: {exc}"
            host.store.finish_incident(incident_id, "failed", failed_step="initiated", error=error)
            metrics.ROLLBACKS.labels(result="failed").inc()
            host.notify("failure", incident, failed_step="initiated", error=error)
            log.error("%s: %s", incident_id, error)
    else:
        host.notify(
            status,
            dataclasses.replace(incident, reason=trigger.reason),
            progress=0,
            detail=f"*Decision:* {reason}",
            follow_up=[
                "A human decides: `rollback-agent test " + primary["alertname"] + "` shows the plan, "
                "`rollback-agent rollback` runs it"
            ],
        )
    return Decision(answer, reason, incident_id, items, plan)
