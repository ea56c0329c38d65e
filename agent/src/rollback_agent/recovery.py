"""Incidents and deploys whose process died (kill -9, OOM, reboot): found and closed as interrupted.

The lock tells them apart from live ones: the kernel drops it when its holder dies, so whoever
gets the lock and still finds something "running" knows nobody runs it any more.
"""

from __future__ import annotations

import logging

from rollback_agent import metrics
from rollback_agent.host import Host
from rollback_agent.locking import LockBusyError, OperationLock
from rollback_agent.state import INTERRUPTED, Incident

log = logging.getLogger(__name__)


def recover(host: Host, lock: OperationLock | None = None) -> list[str]:
    """Mark incidents and deploys left "running" by a process that died as interrupted.

    Safe to call from anywhere: without the lock nothing is touched (someone is working).
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
            return []
    try:
        marked = [_interrupt(host, inc) for inc in store.running_incidents()]
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


def _interrupt(host: Host, inc: Incident) -> str:
    phase = inc.phase or "initiated"
    error = (
        f"the agent stopped while the rollback was in phase '{phase}' "
        f"({inc.progress or 0}%); no process runs it any more"
    )
    host.store.finish_incident(inc.id, INTERRUPTED, failed_step=phase, error=error)
    metrics.ROLLBACKS.labels(result=INTERRUPTED).inc()
    log.error("incident %s marked interrupted (%s)", inc.id, error)
    repo = host.config.deployment.repo
    host.notify(
        "interrupted",
        inc,
        progress=int(inc.progress or 0),
        failed_step=phase,
        error=error,
        follow_up=[
            f"See what was done: `rollback-agent status` and `git -C {repo} log -1`",
            f"Finish it: `rollback-agent rollback --to {(inc.to_sha or '?')[:12]}`",
            f"Or go back: `rollback-agent deploy {(inc.from_sha or '?')[:12]} --force`",
        ],
    )
    return inc.id
