"""What an alert causes: the one decision path of webhooks, the timer, ``test`` (HTTP and CLI).

The rules, in order (README "Decisions, in order"):

1. a resolved alert is recorded (it cancels a waiting decision and counts for verification);
2. not a trigger, ``auto_rollback: false`` or out of scope: ``ignored``;
3. an alert instance (fingerprint, startsAt) is decided once, for ever: a resend is ``duplicate``;
4. an operation holds the lock: ``in_progress`` (not recorded: the resend is decided later);
5. it started before the live release went live (minus ``guards.clock_skew``): ``attached`` to the
   incident of the release it concerned, or ``ignored``;
6. the live release was put in place by a rollback still verifying: ``attached`` to that rollback;
7. the guards of the plan (freeze, arrived by deploy, window, cooldown, daily cap, target, dry run):
   ``blocked`` or ``dry_run``;
8. a medium-confidence trigger not corroborated yet: ``waiting`` (the timer decides again);
9. otherwise ``accepted``: one incident, one rollback.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rollback_agent import datasafety, fleet, metrics, preflight, preview, verification
from rollback_agent.config import Config, TriggerConfig
from rollback_agent.durations import format_duration
from rollback_agent.host import Host
from rollback_agent.locking import LockBusyError, OperationLock
from rollback_agent.payload import Alert, WebhookPayload
from rollback_agent.planner import Plan, build_plan, preview_downgrade, utc
from rollback_agent.recovery import recover
from rollback_agent.rollback import spawn
from rollback_agent.state import BLOCKED, DRY_RUN, RUNNING, AlertInstance, new_incident_id
from rollback_agent.steps import Deadline
from rollback_agent.units import health_problem

log = logging.getLogger(__name__)

# Answers (per webhook and per alert)
ACCEPTED = "accepted"
IGNORED = "ignored"
DUPLICATE = "duplicate"
IN_PROGRESS = "in_progress"
ATTACHED = "attached"
WAITING = "waiting"
CANDIDATE = "candidate"  # a rollback trigger for this host, not decided yet
# The incident status each final answer records.
INCIDENT_STATUS = {ACCEPTED: RUNNING, BLOCKED: BLOCKED, DRY_RUN: DRY_RUN}
# How long an accepted webhook's answer waits for the rollback's downgrade preview.
WEBHOOK_PREVIEW_TIMEOUT = 15.0
# Which alert's answer a webhook carrying several gives, most important first.
PRIORITY = (ACCEPTED, BLOCKED, DRY_RUN, WAITING, ATTACHED, IN_PROGRESS, DUPLICATE, IGNORED)


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
            if self.plan.downgrade is not None:  # what the database phase will do, SQL shortened
                body["plan"]["downgrade"] = datasafety.brief(self.plan.downgrade)
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


@dataclass
class Seen:
    """One alert of a webhook (or a waiting instance the timer decides again) and its answer."""

    item: dict[str, Any]
    starts_ts: float | None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return self.item["fingerprint"], self.item["starts_at"]

    def instance(self, host: Host, now: float, release: str | None, role: str | None = None) -> AlertInstance:
        item = self.item
        return AlertInstance(
            fingerprint=item["fingerprint"],
            starts_at=item["starts_at"],
            starts_ts=self.starts_ts,
            alertname=item["alertname"],
            trigger_id=item.get("trigger"),
            confidence=item.get("confidence"),
            decision=item["decision"],
            role=role,
            incident_id=item.get("incident_id"),
            reason=item.get("reason"),
            release_sha=release,
            decided_at=now,
            resolved_at=None,
        )


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


def after_rollback(host: Host, plan: Plan) -> tuple[str, str] | None:
    """(incident id, why) when the live release was put in place by a rollback still verifying."""
    incident_id = plan.arrival_incident
    if plan.arrived_by != "rollback" or not verification.pending(host, incident_id):
        return None
    assert incident_id is not None
    return incident_id, (
        f"fired after the rollback {incident_id} put {(plan.from_sha or '?')[:10]} in place: "
        "attached to its verification (no second rollback)"
    )


def corroborated(
    host: Host, seen: list[Seen], now: float, current: str | None, trigger: TriggerConfig
) -> str | None:
    """Why a medium-confidence decision may act now, or None (it waits)."""
    if trigger.confidence != "medium" or any(s.item.get("confidence") != "medium" for s in seen):
        return "high confidence"
    mine = {s.item["fingerprint"] for s in seen}
    others = [
        i
        for i in host.store.waiting_instances()
        if i.fingerprint not in mine and (i.release_sha == current or current is None)
    ]
    names = sorted({s.item["alertname"] for s in seen} | {i.alertname for i in others})
    if len(mine) + len({i.fingerprint for i in others}) >= 2:
        return f"corroborated: {', '.join(names)} fire for this release"
    window = host.config.guards.corroboration_window
    oldest = min((s.starts_ts for s in seen if s.starts_ts is not None), default=now)
    if now - oldest >= window:
        return f"corroborated: still firing {format_duration(now - oldest)} after it started"
    if host.config.health is not None:
        problem = health_problem(host.config.health.url, Deadline.after(min(5.0, host.config.health.timeout)))
        if problem is not None:
            return f"corroborated: the health check fails ({problem})"
    return None


def _waiting_reason(host: Host, seen: list[Seen], now: float) -> str:
    window = host.config.guards.corroboration_window
    oldest = min((s.starts_ts for s in seen if s.starts_ts is not None), default=now)
    return (
        "confidence medium: waiting for corroboration (another trigger for this release, a failing "
        f"health check, or still firing at {utc(oldest + window)}, {format_duration(window)} after it "
        "started)"
    )


# --- POST .../test and `rollback-agent test` -------------------------------------------------------
def simulate(
    host: Host, alert_name: str, labels: dict[str, str] | None = None, status: str = "firing"
) -> Simulation:
    """What an ``alert_name`` alert (firing now unless told) would cause; executes and records nothing."""
    config = host.config
    trigger = config.triggers.get(alert_name)
    alert_labels = {**config.scope.match_labels, **(labels or {}), "alertname": alert_name}
    checks = preflight.checks(host)
    now = host.now()
    plan = build_plan(host, now=now)
    would, reason = classify(config, alert_name, status, alert_labels)
    if would == IGNORED and trigger is None and status == "firing":
        reason += f" (known: {', '.join(config.triggers)})"
    elif would == CANDIDATE and trigger is not None:
        busy = running(host)
        attach = after_rollback(host, plan)
        if busy is not None:
            would, reason = IN_PROGRESS, busy[0]
        elif attach is not None:
            would, reason = ATTACHED, attach[1]
        else:
            would, reason = verdict(config, plan, alert_name, trigger)
            item = {
                "alertname": alert_name,
                "fingerprint": "-",
                "starts_at": "",
                "confidence": trigger.confidence,
            }
            if (
                would in (ACCEPTED, DRY_RUN)
                and corroborated(host, [Seen(item, now)], now, plan.from_sha, trigger) is None
            ):
                would, reason = WAITING, _waiting_reason(host, [Seen(item, now)], now)
    if would in (ACCEPTED, DRY_RUN):  # what the database phase would do (alembic renders the SQL)
        preview_downgrade(host, plan)
    return Simulation(alert_name, alert_labels, trigger, would, reason, plan, checks)


# --- POST .../trigger (Alertmanager) ---------------------------------------------------------------
def handle_webhook(host: Host, payload: WebhookPayload, remote: str | None = None) -> Decision:
    now = host.now()
    seen: list[Seen] = []
    keys: set[tuple[str, str]] = set()
    resolved = False
    for alert in payload.alerts:
        one = _look(host, alert, now)
        if one.item["decision"] == CANDIDATE and one.key in keys:
            one.item.update(decision=DUPLICATE, reason="the same alert appears twice in this webhook")
        keys.add(one.key)
        resolved = resolved or alert.status == "resolved"
        seen.append(one)
    candidates = [s for s in seen if s.item["decision"] == CANDIDATE]
    plan = _decide(host, candidates, now, group_key=payload.groupKey) if candidates else None
    if resolved:
        verification.check(host, now)
    items = [s.item for s in seen]
    decision = _overall(items, plan)
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
    if decision.status == ACCEPTED and decision.plan is not None and decision.incident_id:
        _await_downgrade(host, decision.incident_id, decision.plan)
    return decision


def _await_downgrade(host: Host, incident_id: str, plan: Plan) -> None:
    """The answer shows what the rollback's database phase found (SQL, objects, rows, action), as the
    runner records it before any change; bounded: the rollback goes on whatever the answer holds.

    The rollback process says when it is recorded (``preview``): no polling, no worker held longer."""
    if host.migrations is None or not plan.to_revision or plan.from_revision == plan.to_revision:
        preview.forget(incident_id)
        return
    inc = host.store.incident(incident_id)
    if inc is None or fleet.waits(host, inc):  # a later wave: its database phase comes much later
        preview.forget(incident_id)
        return
    preview.wait(incident_id, WEBHOOK_PREVIEW_TIMEOUT)
    inc = host.store.incident(incident_id)
    if inc is not None and inc.detail.get("downgrade"):
        plan.downgrade = inc.detail["downgrade"]


def decide_waiting(host: Host, now: float | None = None) -> list[dict[str, Any]]:
    """The timer: decide again the waiting alerts whose corroboration window has passed."""
    now = host.now() if now is None else now
    window = host.config.guards.corroboration_window
    due = [i for i in host.store.waiting_instances() if i.starts_ts is None or now - i.starts_ts >= window]
    if not due:
        return []
    seen = [
        _from_waiting(i, decision=CANDIDATE, reason="rollback trigger")
        for i in due
        if i.alertname in host.config.triggers
    ]
    _decide(host, seen, now, group_key="timer", source="timer")
    return [s.item for s in seen]


def _parse_time(text: str | None) -> float | None:
    """Alertmanager's RFC 3339 time (nanoseconds allowed) as epoch seconds; None when absent or odd."""
    if not text or text.startswith("0001-"):
        return None
    value = re.sub(r"(\.\d{6})\d+", r"\1", text.strip()).replace("Z", "+00:00").replace("z", "+00:00")
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        return None
    return stamp.timestamp()


def _look(host: Host, alert: Alert, now: float) -> Seen:
    """Rules 1 to 3 for one alert: recorded if resolved, ignored, a duplicate, or a candidate."""
    item: dict[str, Any] = {
        "alertname": alert.name,
        "fingerprint": alert.key(),
        "starts_at": (alert.startsAt or "")[:64],
        "status": alert.status,
    }
    one = Seen(item, _parse_time(alert.startsAt), dict(alert.labels))
    trigger = host.config.triggers.get(alert.name)
    if trigger is not None:
        item["trigger"] = trigger.trigger
        item["confidence"] = trigger.confidence
    decision, reason = classify(host.config, alert.name, alert.status, alert.labels)
    item.update(decision=decision, reason=reason)
    if alert.status == "resolved":
        known = host.store.resolve_instance(item["fingerprint"], item["starts_at"], now)
        if known is not None and known.incident_id:
            item.update(
                incident_id=known.incident_id, reason=f"resolved alert: recorded for {known.incident_id}"
            )
        elif known is not None and known.decision == "cancelled":
            item.update(reason="resolved alert: the waiting decision is cancelled")
    elif decision == CANDIDATE:
        _decided_already(host, one)
    return one


def _decided_already(host: Host, one: Seen) -> bool:
    """Mark ``one`` a duplicate when its alert instance was decided before (waiting is not decided)."""
    known = host.store.instance(*one.key)
    if known is None or known.decision == WAITING:
        return False
    what = f"{known.decision} {known.incident_id}" if known.incident_id else known.decision
    one.item.update(
        decision=DUPLICATE,
        incident_id=known.incident_id,
        reason=f"this alert instance (started {one.item['starts_at'] or '?'}) was decided already: {what}",
    )
    return True


def _overall(items: list[dict[str, Any]], plan: Plan | None) -> Decision:
    if not items:
        return Decision(IGNORED, "the webhook carries no alerts", None, items)
    rank = {status: n for n, status in enumerate(PRIORITY)}
    first = min(items, key=lambda i: rank.get(i["decision"], len(PRIORITY)))
    status = first["decision"]
    if status == IGNORED:
        return Decision(IGNORED, "; ".join(dict.fromkeys(i["reason"] for i in items)), None, items)
    with_plan = plan if status in (ACCEPTED, BLOCKED, DRY_RUN) else None
    return Decision(status, first["reason"], first.get("incident_id"), items, with_plan)


def _decide(
    host: Host, candidates: list[Seen], now: float, *, group_key: str, source: str = "webhook"
) -> Plan | None:
    try:
        lock = host.lock().acquire("decision", f"on a {source}")
    except LockBusyError as busy:
        reason, incident = running(host, busy) or (f"another operation holds the lock: {busy}", None)
        for one in candidates:
            one.item.update(decision=IN_PROGRESS, reason=reason)
            if incident:
                one.item["incident_id"] = incident
        return None
    try:
        recover(host, lock)
        fresh = [one for one in candidates if not _decided_already(host, one)]
        if not fresh:
            return None
        return _decide_locked(host, fresh, now, lock, group_key)
    finally:
        lock.release()  # a no-op when the lock went to the rollback process


def _decide_locked(host: Host, fresh: list[Seen], now: float, lock: OperationLock, group_key: str) -> Plan:
    """Rules 5 to 9, under the operation lock."""
    config = host.config
    verification.check(host, now)
    plan = build_plan(host, now=now)
    current = plan.from_sha
    skew = config.guards.clock_skew
    concerning: list[Seen] = []
    attach = after_rollback(host, plan)
    for one in fresh:
        since = plan.live_since
        if one.starts_ts is not None and since is not None and one.starts_ts < since - skew:
            _earlier(host, one, now, since)
        elif attach is not None:
            _attach(host, one, now, attach[0], attach[1], current)
        else:
            concerning.append(one)
    if not concerning:
        return plan
    primary = concerning[0]
    trigger = config.triggers[primary.item["alertname"]]
    answer, reason = verdict(config, plan, primary.item["alertname"], trigger)
    if answer in (ACCEPTED, DRY_RUN):
        why = corroborated(host, concerning, now, current, trigger)
        if why is None:
            waiting = _waiting_reason(host, concerning, now)
            for one in concerning:
                one.item.update(decision=WAITING, reason=waiting)
            host.store.save_instances([one.instance(host, now, current) for one in concerning])
            return plan
        if why != "high confidence":
            reason += f" ({why})"
            concerning += _joining(host, concerning, current)
    _open_incident(host, concerning, plan, answer, reason, now, lock, group_key)
    return plan


def _joining(host: Host, concerning: list[Seen], current: str | None) -> list[Seen]:
    """Waiting instances of the same release that corroborate: they trigger the incident too."""
    mine = {one.key for one in concerning}
    joining = []
    for i in host.store.waiting_instances():
        if (i.fingerprint, i.starts_at) in mine or i.release_sha != current:
            continue
        joining.append(_from_waiting(i))
    return joining


def _from_waiting(i: AlertInstance, **extra: str) -> Seen:
    """A waiting alert instance as the decision path sees a firing alert of a webhook."""
    item = {
        "alertname": i.alertname,
        "fingerprint": i.fingerprint,
        "starts_at": i.starts_at,
        "status": "firing",
        "trigger": i.trigger_id,
        "confidence": i.confidence,
        **extra,
    }
    return Seen(item, i.starts_ts)


def _earlier(host: Host, one: Seen, now: float, live_since: float) -> None:
    """Rule 5: the alert started before the live release went live; it concerns an earlier one."""
    assert one.starts_ts is not None
    skew = host.config.guards.clock_skew
    started = utc(one.starts_ts)
    before = (
        f"started at {started}, before the live release started going live at {utc(live_since)} "
        f"(guards.clock_skew {format_duration(skew)}): not evidence against it"
    )
    release = next((d for d in host.store.live_history() if d.started_at <= one.starts_ts + skew), None)
    incident = host.store.latest_incident_of(release.sha, release.started_at - skew) if release else None
    if incident is None:
        what = f"release {release.sha[:10]}" if release else "the release live then"
        one.item.update(decision=IGNORED, reason=f"{before}; no incident of {what} to attach it to")
        host.store.save_instances([one.instance(host, now, release.sha if release else None)])
        return
    _attach(host, one, now, incident.id, f"{before}; attached to {incident.id}", incident.from_sha)


def _attach(host: Host, one: Seen, now: float, incident_id: str, reason: str, release: str | None) -> None:
    one.item.update(decision=ATTACHED, incident_id=incident_id, reason=reason)
    host.store.save_instances([one.instance(host, now, release, role="attached")])
    incident = host.store.incident(incident_id)
    if incident is not None:
        host.notify(
            "attached",
            incident,
            detail=f"{one.item['alertname']} (started {one.item['starts_at'] or '?'}) "
            f"attached to `{incident_id}`",
        )


def _open_incident(
    host: Host,
    concerning: list[Seen],
    plan: Plan,
    answer: str,
    reason: str,
    now: float,
    lock: OperationLock,
    group_key: str,
) -> None:
    config = host.config
    primary = concerning[0]
    name = primary.item["alertname"]
    trigger = config.triggers[name]
    status = INCIDENT_STATUS[answer]
    incident_id = new_incident_id()
    for one in concerning:
        one.item.update(decision=answer, incident_id=incident_id, reason=reason)
    incident = host.store.open_incident(
        incident_id,
        source="webhook",
        status=status,
        alert_name=name,
        fingerprint=primary.item["fingerprint"],
        trigger_id=trigger.trigger,
        confidence=trigger.confidence,
        reason=trigger.reason if status == RUNNING else reason,
        **plan.releases(),
        detail={
            "plan": plan.as_dict(),
            "alerts": sorted({one.item["alertname"] for one in concerning}),
            "group_key": group_key[:512],
            "labels": primary.labels,
        },
        instances=[one.instance(host, now, plan.from_sha, role="trigger") for one in concerning],
        bad_reason=f"rolled back by {incident_id}: {name}" if status == RUNNING else None,
    )
    if status == RUNNING:
        try:
            spawn(host, incident_id, lock)
        except OSError as exc:
            error = f"cannot start the rollback process: {exc}"
            host.store.finish_incident(incident_id, "failed", failed_step="initiated", error=error)
            metrics.ROLLBACKS.labels(result="failed").inc()
            host.notify("failure", incident, failed_step="initiated", error=error)
            log.error("%s: %s", incident_id, error)
        return
    host.notify(
        status,
        dataclasses.replace(incident, reason=trigger.reason),
        progress=0,
        detail=f"*Decision:* {reason}",
        follow_up=[
            "A human decides: `rollback-agent test " + name + "` shows the plan, "
            "`rollback-agent rollback` runs it"
        ],
    )
