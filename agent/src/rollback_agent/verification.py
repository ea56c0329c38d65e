"""The closed loop: did a successful rollback clear the alerts that caused it?

After a rollback of alert instances succeeds, its incident verifies for ``guards.verify_window``:
every instance that triggered it or attached to it must resolve (Alertmanager's resolved webhook).
All resolved -> ``confirmed``; still firing at the deadline -> ``not_confirmed`` and an escalation
(Slack ``@here``, a PagerDuty trigger when configured). Each end is claimed in the database, so
several workers and the timer never announce it twice.
"""

from __future__ import annotations

import logging
from typing import Any

from rollback_agent import metrics
from rollback_agent.durations import format_duration
from rollback_agent.host import Host
from rollback_agent.state import SUCCESS, AlertInstance, Incident, Verification

log = logging.getLogger(__name__)

PENDING = "pending"
CONFIRMED = "confirmed"
NOT_CONFIRMED = "not_confirmed"


def check(host: Host, now: float | None = None) -> list[tuple[str, str]]:
    """Start the verification of new successful rollbacks and end the ones that are decided.

    Returns (incident id, state) for each verification this call ended.
    """
    now = host.now() if now is None else now
    store = host.store
    window = host.config.guards.verify_window
    for inc in store.unverified_successes():
        started = float(inc.ended_at or now)
        store.start_verification(inc.id, started, started + window)
        log.info("%s: verifying until the alerts resolve (at most %s)", inc.id, format_duration(window))
    ended: list[tuple[str, str]] = []
    for ver in store.pending_verifications():
        instances = store.instances_of(ver.incident_id)
        # Still firing, or resolved only after the deadline (nobody checked in time): not cleared.
        firing = [i for i in instances if i.resolved_at is None or i.resolved_at > ver.deadline]
        if not firing:
            if store.end_verification(ver.incident_id, CONFIRMED, now):
                _confirmed(host, ver, instances)
                ended.append((ver.incident_id, CONFIRMED))
        elif now >= ver.deadline and store.end_verification(ver.incident_id, NOT_CONFIRMED, now):
            _escalate(host, ver, firing)
            ended.append((ver.incident_id, NOT_CONFIRMED))
    return ended


def pending(host: Host, incident_id: str | None) -> bool:
    """The incident's rollback is being verified now (its alerts have not all resolved yet)."""
    if not incident_id:
        return False
    ver = host.store.verification(incident_id)
    if ver is not None:
        return ver.state == PENDING
    # Not started yet (the timer or the next webhook starts it): a recent success of alert instances.
    inc = host.store.incident(incident_id)
    if inc is None or inc.status != SUCCESS or inc.ended_at is None:
        return False
    triggered = any(i.role == "trigger" for i in host.store.instances_of(incident_id))
    return triggered and host.now() < float(inc.ended_at) + host.config.guards.verify_window


def view(host: Host, incident_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(verification, attached instances) of an incident, as the status and history show them."""
    instances = host.store.instances_of(incident_id)
    attached = [_instance(i) for i in instances if i.role == "attached"]
    ver = host.store.verification(incident_id)
    if ver is None:
        return None, attached
    return {
        "state": ver.state,
        "started_at": ver.started_at,
        "deadline": ver.deadline,
        "ended_at": ver.ended_at,
        "alerts": [_instance(i) for i in instances if i.role in ("trigger", "attached")],
    }, attached


def _instance(i: AlertInstance) -> dict[str, Any]:
    return {
        "alertname": i.alertname,
        "fingerprint": i.fingerprint,
        "starts_at": i.starts_at,
        "role": i.role,
        "decided_at": i.decided_at,
        "resolved_at": i.resolved_at,
    }


def _incident(host: Host, incident_id: str) -> Incident | None:
    return host.store.incident(incident_id)


def _confirmed(host: Host, ver: Verification, instances: list[AlertInstance]) -> None:
    metrics.VERIFICATIONS.labels(state=CONFIRMED).inc()
    inc = _incident(host, ver.incident_id)
    if inc is None:
        return
    last = max(float(i.resolved_at or ver.started_at) for i in instances)
    after = max(0.0, last - ver.started_at)
    names = ", ".join(sorted({i.alertname for i in instances}))
    text = f"confirmed: {names} resolved {round(after)}s after the rollback"
    log.info("%s: %s", inc.id, text)
    host.notify("confirmed", inc, progress=100, detail=text)


def _escalate(host: Host, ver: Verification, firing: list[AlertInstance]) -> None:
    metrics.VERIFICATIONS.labels(state=NOT_CONFIRMED).inc()
    inc = _incident(host, ver.incident_id)
    if inc is None:
        return
    names = ", ".join(sorted({i.alertname for i in firing}))
    window = format_duration(ver.deadline - ver.started_at)
    text = (
        f"not confirmed: {names} still firing {window} after the rollback "
        f"{(inc.from_sha or '?')[:10]} -> {(inc.to_sha or '?')[:10]}; the rollback did not clear the alert"
    )
    log.error("%s: %s", inc.id, text)
    host.notify(
        NOT_CONFIRMED,
        inc,
        progress=100,
        detail=f"*Verification:* {text}",
        follow_up=[
            "A person is needed: the release was probably not the cause (look at the dependencies)",
            "The agent will not roll back again: it never rolls back a release a rollback put in place",
        ],
    )
    host.page(
        inc, f"{host.config.host}: rollback {inc.id} did not clear {names}; a person is needed", detail=text
    )
