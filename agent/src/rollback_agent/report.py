"""Read-only views: the current release, the status, the history, and the gauges of /metrics."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from rollback_agent import __version__, datasafety, verification
from rollback_agent.gitops import GitError
from rollback_agent.host import Host
from rollback_agent.observe import observe
from rollback_agent.planner import utc
from rollback_agent.recovery import recover
from rollback_agent.state import Incident
from rollback_agent.stuck import stuck

# The keys of an incident in the status and the history, in order.
HISTORY_KEYS = (
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


def current_release(host: Host) -> dict[str, Any]:
    """The deployed release as git and the ledger know it."""
    cfg = host.config.deployment
    info: dict[str, Any] = {"ref": cfg.ref, "repo": str(cfg.repo), "sha": None}
    try:
        with host.git_lock:
            sha = host.deployment.current_sha()
            head = host.deployment.head_sha()
            commit = host.deployment.commit_info(sha) if sha else None
    except GitError as exc:
        info["error"] = str(exc)
        return info
    info.update(sha=sha, head_sha=head, subject=commit.subject if commit else None)
    if sha and head and sha != head:
        info["warning"] = f"the working tree (HEAD {head[:10]}) is not at {cfg.ref}"
    if sha:
        record = host.store.latest_deploy_of(sha)
        info["deployed_at"] = record.deployed_at if record else None
        info["deployed_by"] = record.kind if record else None
        info["alembic_revision"] = record.revision if record else None
        info["bad"] = host.store.bad_release(sha) is not None
    return info


def status(host: Host, history: int = 10) -> dict[str, Any]:
    """``GET .../status`` and ``rollback-agent status``."""
    recover(host)
    verification.check(host)
    config = host.config
    busy = host.in_progress()
    return {
        "agent": {"version": __version__, "host": config.host, "mode": config.mode, "pid": os.getpid()},
        "monitored_triggers": {
            name: t.model_dump() for name, t in sorted(config.triggers.items()) if t.auto_rollback
        },
        "scope": config.scope.model_dump(),
        "guards": config.guards.model_dump(),
        "deployment": current_release(host),
        "in_progress": busy,
        "fleet": fleet_config(host),
        # Read now, not remembered: ref, HEAD, database revision and units; stuck incidents.
        "observed": observe(host, timeout=30.0, database=busy is None).as_dict(),
        "stuck": stuck(host),
        "freeze": freeze(host),
        "waiting": [i.as_dict() for i in host.store.waiting_instances()],
        "history": incident_history(host, history),
        "recent_webhooks": [_webhook_item(w) for w in host.store.recent_webhooks(limit=history)],
    }


def fleet_config(host: Host) -> dict[str, Any] | None:
    """This host's wave and peers (None: no fleet, the host rolls back on its own)."""
    fleet = host.config.fleet
    if fleet is None:
        return None
    data = fleet.model_dump(mode="json")
    data["peers"] = [{"host": p.host, "url": p.url} for p in fleet.peers]
    return data


def history(host: Host, limit: int = 50) -> dict[str, Any]:
    """``GET .../history`` and ``rollback-agent history``: incidents and the deploy ledger."""
    recover(host)
    return {
        "incidents": incident_history(host, limit),
        "deploys": [d.as_dict() for d in host.store.deploys(limit)],
    }


def freeze(host: Host) -> dict[str, Any] | None:
    """The freeze in force now (planned maintenance), or None."""
    found = host.store.freeze()
    if found is None or float(found["until"]) <= host.now():
        return None
    return {**found, "until_utc": utc(float(found["until"]))}


def incident_history(host: Host, limit: int) -> list[dict[str, Any]]:
    return [history_item(host, i) for i in host.store.incidents(limit=limit)]


def history_item(host: Host, inc: Incident) -> dict[str, Any]:
    data = inc.as_dict()
    item = {k: data[k] for k in HISTORY_KEYS}
    item["incident_id"] = item.pop("id")
    item["verification"], item["attached"] = verification.view(host, inc.id)
    item["downgrade"] = datasafety.brief(inc.detail.get("downgrade"))  # classification, rows, backup
    return item


def incident_detail(host: Host, inc: Incident) -> dict[str, Any]:
    """``GET .../incidents/<id>``: the incident, its phases, verification and attached alerts."""
    data = inc.as_dict()
    data["verification"], data["attached"] = verification.view(host, inc.id)
    return data


def incident_summary(inc: Incident) -> dict[str, Any]:
    """How ``rollback-agent rollback --json`` reports the incident it ran."""
    return {
        "incident_id": inc.id,
        "status": inc.status,
        "phase": inc.phase,
        "progress": inc.progress,
        "failed_step": inc.failed_step,
        "error": inc.error,
        "from_sha": inc.from_sha,
        "to_sha": inc.to_sha,
        "from_revision": inc.from_revision,
        "to_revision": inc.to_revision,
        "duration": inc.duration,
        "phases": [p.as_dict() for p in inc.phases],
    }


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


# --- /metrics -------------------------------------------------------------------------------------
class StateCollector(Collector):
    """Gauges computed from the state database and the lock when scraped."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def collect(self) -> Iterator[GaugeMetricFamily | InfoMetricFamily]:
        config = self.host.config
        info = InfoMetricFamily("rollback_agent", "Agent version, host and mode.")
        info.add_metric([], {"version": __version__, "host": config.host, "mode": config.mode})
        yield info
        yield GaugeMetricFamily(
            "rollback_agent_rollback_in_progress",
            "1 while a rollback runs on this host.",
            value=1 if self.host.in_progress() else 0,
        )
        incidents = GaugeMetricFamily(
            "rollback_agent_incidents",
            "Incidents by state: running (a rollback process works on it), stuck (its restore failed or it "
            "was interrupted out of step; no automatic rollback until `rollback-agent resolve`).",
            labels=["state"],
        )
        incidents.add_metric(["running"], len(self.host.store.running_incidents()))
        incidents.add_metric(["stuck"], len(self.host.store.stuck_incidents()))
        yield incidents
        last = self.host.store.last_executed()
        stamp = GaugeMetricFamily(
            "rollback_agent_last_rollback_timestamp_seconds",
            "Start time of the last rollback that ran (0 when none), with its result.",
            labels=["result"],
        )
        if last:
            stamp.add_metric([last.status], float(last.started_at or 0))
        yield stamp
        current = current_release(self.host)
        deployed = GaugeMetricFamily(
            "rollback_agent_release_deployed_timestamp_seconds",
            "When the current release went live (ledger).",
        )
        if current.get("deployed_at"):
            deployed.add_metric([], float(current["deployed_at"]))
        yield deployed


def render_metrics(host: Host) -> bytes:
    state = CollectorRegistry(auto_describe=False)
    state.register(StateCollector(host))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        shared = CollectorRegistry()
        multiprocess.MultiProcessCollector(shared)
        return generate_latest(shared) + generate_latest(state)
    return generate_latest(REGISTRY) + generate_latest(state)
