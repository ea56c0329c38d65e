"""Incidents and deploys whose process died (kill -9, OOM, reboot): found and closed as interrupted.

The lock tells them apart from live ones: the kernel drops it when its holder dies, so whoever
gets the lock and still finds something "running" knows nobody runs it any more.

Who looks: the web process that spawned a rollback process reaps it and acts at once when it
ended without a result (``reaped``, with its exit status); every web process also runs ``recover``
at start and every 30 s (``PeriodicRecovery``, a ticker job); status and webhooks run it too.
The message says what is known, read from the host at that moment: what stopped the process,
in which phase, where the code, the ref and the database are. A host left out of step (neither
the live release nor the target in place) is ``stuck``, as after a failed restore.
"""

from __future__ import annotations

import logging
import signal
import time

from rollback_agent import metrics
from rollback_agent.host import Host
from rollback_agent.locking import LockBusyError, OperationLock, is_held, read_holder
from rollback_agent.observe import Observed, observe
from rollback_agent.state import INTERRUPTED, RUNNING, Incident

# The periodic recovery of each web process (a ticker job).
RECOVERY_INTERVAL = 30.0
UNKNOWN_CAUSE = "no process runs the rollback any more (its process or the whole agent was stopped)"

log = logging.getLogger(__name__)


def recover(host: Host, lock: OperationLock | None = None, causes: dict[str, str] | None = None) -> list[str]:
    """Mark incidents and deploys left "running" by a process that died as interrupted.

    Safe to call from anywhere: without the lock nothing is touched (someone is working).
    ``causes``: what is known about why an incident's process ended (its exit status).
    Returns the ids of the incidents marked.
    """
    store = host.store
    if not store.running_incidents() and not store.running_deploys():
        return []
    owned = lock is None
    if lock is None:
        try:
            lock = host.lock().acquire("recovery")
        except LockBusyError:
            _wait_for_other_recovery(host)  # its result, not a half-marked incident, is what we show
            return []
    try:
        marked = [_interrupt(host, inc, (causes or {}).get(inc.id)) for inc in store.running_incidents()]
        for dep in store.running_deploys():
            store.finish_deploy(
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


def _wait_for_other_recovery(host: Host, limit: float = 60.0) -> None:
    """While another process recovers (it reads the host, a few seconds), wait for it to finish."""
    start = time.monotonic()
    until = start + limit
    while time.monotonic() < until and is_held(host.config.lock_path):
        kind = (read_holder(host.config.lock_path) or {}).get("kind")
        if kind is None and time.monotonic() < start + 2.0:
            # Taken a moment ago and its holder not written yet (flock, then describe): look again.
            time.sleep(0.02)
            continue
        if kind != "recovery":
            return
        time.sleep(0.1)


def exit_cause(returncode: int) -> str:
    """``runner exited with signal 9`` / ``runner exited with code 1 without recording a result``."""
    if returncode < 0:
        return f"runner exited with signal {-returncode} ({signal.Signals(-returncode).name})"
    return f"runner exited with code {returncode} without recording a result"


def reaped(host: Host, incident_id: str, returncode: int, patience: float = 10.0) -> bool:
    """The rollback process of ``incident_id`` ended: if it left no result, mark it now.

    Called by the web process that spawned it, as soon as it exits. True when it was marked.
    """
    until = time.monotonic() + patience
    while True:
        inc = host.store.incident(incident_id)
        if inc is None or inc.status != RUNNING:
            return False  # it recorded its result: nothing to do
        try:
            lock = host.lock().acquire("recovery", incident_id)
        except LockBusyError:
            if time.monotonic() >= until:
                log.warning(
                    "%s: runner gone but the lock is busy; the periodic recovery will see to it", incident_id
                )
                return False
            time.sleep(0.2)
            continue
        try:
            return incident_id in recover(host, lock, {incident_id: exit_cause(returncode)})
        finally:
            lock.release()


class PeriodicRecovery:
    """A ticker job: ``recover`` at the first tick and then every ``interval`` seconds."""

    def __init__(self, interval: float = RECOVERY_INTERVAL) -> None:
        self.interval = interval
        self.last: float | None = None

    def __call__(self, host: Host, now: float) -> list[str] | None:
        if self.last is not None and now - self.last < self.interval:
            return None
        self.last = now
        return recover(host)


def _consistent(host: Host, inc: Incident, seen: Observed) -> bool:
    """Code, ref and schema all of one release (the live one or the target)."""
    for sha, revision in ((inc.from_sha, inc.from_revision), (inc.to_sha, inc.to_revision)):
        same_code = bool(sha) and seen.ref_sha == sha and seen.head_sha == sha
        same_schema = host.migrations is None or revision is None or seen.database_revision == revision
        if same_code and same_schema:
            return True
    return False


def _interrupt(host: Host, inc: Incident, cause: str | None = None) -> str:
    phase = inc.phase or "initiated"
    try:
        seen = observe(host, timeout=30.0)  # we hold the lock: nothing else changes the host now
    except Exception as exc:
        seen = Observed(problems=[f"the host could not be read ({type(exc).__name__}: {exc})"])
    consistent = _consistent(host, inc, seen)
    error = (
        f"{cause or UNKNOWN_CAUSE} during {phase} ({inc.progress or 0}%); code at "
        f"{(seen.head_sha or '?')[:10]}, ref at {(seen.ref_sha or '?')[:10]}"
        + (f", database at {seen.database_revision}" if seen.database_revision is not None else "")
        + "".join(f", {unit} {state}" for unit, state in seen.units.items())
        + ("" if consistent else "; code, ref and schema are OUT OF STEP: the host is stuck")
    )
    host.store.merge_detail(inc.id, consistent=consistent, stuck=not consistent, observed=seen.as_dict())
    host.store.finish_incident(inc.id, INTERRUPTED, failed_step=phase, error=error)
    metrics.ROLLBACKS.labels(result=INTERRUPTED).inc()
    log.error("incident %s marked interrupted (%s)", inc.id, error)
    repo = host.config.deployment.repo
    follow_up = [
        f"See what was done: `rollback-agent status` and `git -C {repo} log -1`",
        f"Finish it: `rollback-agent rollback --to {(inc.to_sha or '?')[:12]}`",
        f"Or go back: `rollback-agent deploy {(inc.from_sha or '?')[:12]} --force`",
    ]
    if not consistent:
        follow_up.append(
            f"Then `rollback-agent resolve {inc.id} --note TEXT`: until then no automatic rollback"
        )
    host.notify(
        "interrupted",
        inc,
        progress=int(inc.progress or 0),
        failed_step=phase,
        error=error,
        follow_up=follow_up,
    )
    if not consistent:
        host.notify("stuck", inc, progress=int(inc.progress or 0), error=error, follow_up=follow_up[-1:])
        host.page(inc, f"rollback {inc.id} on {host.config.host} was interrupted out of step: {error[:300]}")
    return inc.id
