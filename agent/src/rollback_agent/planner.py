"""What a rollback would do right now, and which guards allow or block it."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

import git

from rollback_agent import datasafety
from rollback_agent.durations import format_duration
from rollback_agent.gitops import GitError
from rollback_agent.migrations import MigrationError, release_revision
from rollback_agent.stuck import stuck_problem

if TYPE_CHECKING:
    from rollback_agent.host import Host
    from rollback_agent.state import Deploy


class Releases(TypedDict):
    from_sha: str | None
    to_sha: str | None
    from_revision: str | None
    to_revision: str | None


@dataclass
class Guard:
    name: str
    ok: bool
    detail: str
    enforced: bool = True


@dataclass
class Plan:
    from_sha: str | None = None
    from_revision: str | None = None
    deployed_at: float | None = None
    to_sha: str | None = None
    to_subject: str | None = None
    to_revision: str | None = None
    to_revision_source: str | None = None  # ledger | derived | none
    live_since: float | None = None  # when the deploy (or rollback) that put it live began
    arrived_by: str | None = None  # deploy | rollback: how the live release got there
    arrival_incident: str | None = None  # the rollback that put it in place
    units: list[str] = field(default_factory=list)
    guards: list[Guard] = field(default_factory=list)
    downgrade: dict[str, Any] | None = None  # preview_downgrade: SQL, dropped objects, rows, action

    @property
    def blocked_by(self) -> Guard | None:
        for guard in self.guards:
            if not guard.ok and guard.enforced and guard.name != "dry_run":
                return guard
        return None

    def releases(self) -> Releases:
        """From and to release and revision, as an incident records them."""
        return {
            "from_sha": self.from_sha,
            "to_sha": self.to_sha,
            "from_revision": self.from_revision,
            "to_revision": self.to_revision,
        }

    def guard(self, name: str) -> Guard | None:
        return next((g for g in self.guards if g.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        blocked = self.blocked_by
        data["blocked_by"] = blocked.name if blocked else None
        return data


def _ago(seconds: float) -> str:
    return f"{format_duration(seconds)} ago"


def utc(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


def freeze_guard(host: Host, now: float, enforced: bool = True) -> Guard:
    """Frozen (planned maintenance): no automated rollback until the freeze ends."""
    freeze = host.store.freeze()
    if freeze is not None and float(freeze["until"]) > now:
        until = utc(float(freeze["until"]))
        return Guard("freeze", False, f"frozen until {until}: {freeze['reason']}", enforced)
    return Guard("freeze", True, "not frozen", enforced)


def build_plan(host: Host, *, manual: bool = False, to: str | None = None, now: float | None = None) -> Plan:
    """Evaluate the guards in order and pick the target.

    Freeze, arrived by deploy (never roll back what a rollback put in place), window, cooldown,
    daily cap, target (the deploy chain), dry run.

    ``manual`` (the CLI's ``rollback``): an operator decided, so the window, cooldown and daily-cap
    guards are reported but not enforced, and ``dry_run`` in the config does not apply.
    """
    with host.git_lock:
        return _build_plan(host, manual=manual, to=to, now=host.now() if now is None else now)


def _build_plan(host: Host, *, manual: bool, to: str | None, now: float) -> Plan:
    config = host.config
    guards_cfg = config.guards
    plan = Plan(units=list(config.services.units))

    try:
        current = host.deployment.current_sha()
    except GitError as exc:
        plan.guards.append(Guard("deployment", False, str(exc)))
        return plan
    if current is None:
        plan.guards.append(
            Guard(
                "deployment",
                False,
                f"no deployed release: {config.deployment.ref} does not exist in {config.deployment.repo} "
                "(deploy with 'rollback-agent deploy REF' first)",
            )
        )
        return plan
    plan.from_sha = current
    plan.guards.append(Guard("deployment", True, f"{config.deployment.ref} is at {current[:10]}"))
    record = host.store.latest_deploy_of(current)
    if record is not None:
        plan.deployed_at = record.deployed_at
        plan.from_revision = record.revision
        plan.live_since = record.started_at
        plan.arrived_by = record.kind
        plan.arrival_incident = record.incident_id

    # 0. a freeze (planned maintenance), then the loop breaker: only a release that arrived by a
    # deploy may be rolled back automatically, never one a rollback put in place.
    plan.guards.append(freeze_guard(host, now, enforced=not manual))
    stuck = stuck_problem(host)  # a rollback could not restore this host: a person first
    plan.guards.append(Guard("stuck", stuck is None, stuck or "consistent", enforced=not manual))
    if record is not None and record.kind != "deploy":
        plan.guards.append(
            Guard(
                "arrived_by_deploy",
                False,
                f"release {current[:10]} was put in place by the rollback {record.incident_id or '?'} "
                f"{_ago(now - float(record.deployed_at or now))}: the agent never rolls back a rollback; "
                "a person decides (rollback-agent rollback)",
                enforced=not manual,
            )
        )
    else:
        plan.guards.append(Guard("arrived_by_deploy", True, "arrived by a deploy", enforced=not manual))

    # 1. rollback window: a release that has been live for long is probably not the cause.
    window = guards_cfg.rollback_window
    if plan.deployed_at is None:
        plan.guards.append(
            Guard(
                "rollback_window",
                False,
                f"the deployed release {current[:10]} has no deploy in the ledger, "
                "so its deploy time is unknown",
                enforced=not manual,
            )
        )
    else:
        age = now - plan.deployed_at
        ok = age <= window
        plan.guards.append(
            Guard(
                "rollback_window",
                ok,
                f"release {current[:10]} was deployed {_ago(age)} "
                + (
                    f"(within the {format_duration(window)} window)"
                    if ok
                    else f"(more than {format_duration(window)}): the deploy is probably not the cause"
                ),
                enforced=not manual,
            )
        )

    # 2. cooldown after the last rollback.
    last = host.store.last_executed()
    cooldown = guards_cfg.cooldown
    if last and last.started_at and now - float(last.started_at) < cooldown:
        since = now - float(last.started_at)
        plan.guards.append(
            Guard(
                "cooldown",
                False,
                f"the last rollback {last.id} started {_ago(since)} ({last.status}); "
                f"cooldown is {format_duration(cooldown)}",
                enforced=not manual,
            )
        )
    else:
        plan.guards.append(
            Guard(
                "cooldown", True, f"no rollback in the last {format_duration(cooldown)}", enforced=not manual
            )
        )

    # 3. daily cap (a rolling 24 hours).
    count = host.store.executed_since(now - 86400)
    cap = guards_cfg.max_rollbacks_per_day
    plan.guards.append(
        Guard(
            "daily_cap", count < cap, f"{count} rollback(s) in the last 24h (cap {cap})", enforced=not manual
        )
    )

    # 4. a target: the release live before the current one arrived (the deploy chain), or the one
    # asked for.
    plan.guards.append(_choose_target(host, plan, current, to, record))

    # 5. dry run.
    if not manual:
        plan.guards.append(
            Guard(
                "dry_run",
                not config.dry_run,
                "dry_run is on: decisions are recorded and notified, nothing is executed"
                if config.dry_run
                else "live mode",
            )
        )
    return plan


def preview_downgrade(host: Host, plan: Plan, timeout: float = 60.0) -> Plan:
    """Fill ``plan.downgrade``: the downgrade's offline SQL, what it drops, the rows, the policy's answer.

    alembic renders the SQL and the rows are counted: seconds, so the plans of ``test`` and
    ``rollback --dry-run`` show it, not every webhook (the incident records the one that ran).
    """
    if host.migrations is None or not (plan.from_sha and plan.from_revision and plan.to_revision):
        return plan
    if plan.from_revision != plan.to_revision:
        plan.downgrade = datasafety.preview(
            host.migrations, host.deployment, plan.from_sha, plan.from_revision, plan.to_revision, timeout
        )
    return plan


def _chain_target(host: Host, current: str, arrival: Deploy | None) -> tuple[str | None, str]:
    """The release live before ``current`` arrived, going back, skipping bad ones; (None, why) if none.

    Never a descendant of ``current`` (that would be a roll *forward*) and never a sha that was not
    deployed healthy on this host.
    """
    store = host.store
    bad = store.bad_shas()
    healthy = {d.sha for d in store.healthy_releases()}
    seen = {current}
    skipped: list[str] = []
    for row in store.live_history():
        if arrival is not None and row.id >= arrival.id:
            continue
        sha = row.sha
        if sha in seen:
            continue
        seen.add(sha)
        if sha in bad:
            skipped.append(f"{sha[:10]} is marked bad")
        elif sha not in healthy:
            skipped.append(f"{sha[:10]} was never deployed healthy here")
        elif _descends(host, current, sha):
            skipped.append(f"{sha[:10]} is newer than {current[:10]} (a descendant)")
        else:
            why = f"{sha[:10]} (live before {current[:10]} arrived"
            return sha, why + (f"; skipped {', '.join(skipped)})" if skipped else ")")
    detail = "no earlier good release to go back to: no earlier healthy release in the deploy chain"
    return None, detail + (f" (skipped {', '.join(skipped)})" if skipped else "")


def _descends(host: Host, current: str, sha: str) -> bool:
    """``sha`` is a descendant of ``current`` (or cannot be told: then it is not a safe target)."""
    try:
        host.deployment.repo.git.merge_base("--is-ancestor", current, sha)
    except git.GitCommandError as exc:
        return exc.status != 1  # 1: not a descendant; anything else: it cannot be told
    except GitError:
        return True
    return True


def _choose_target(host: Host, plan: Plan, current: str, to: str | None, arrival: Deploy | None) -> Guard:
    store = host.store
    if to is not None:
        try:
            target = host.deployment.resolve(to)
        except GitError as exc:
            return Guard("target_release", False, str(exc))
        if target == current:
            return Guard("target_release", False, f"{to} is the deployed release already")
        source = f"{target[:10]} (asked for)"
    else:
        found, source = _chain_target(host, current, arrival)
        if found is None:
            return Guard("target_release", False, source)
        target = found
    plan.to_sha = target
    info = host.deployment.commit_info(target)
    if info is None:
        return Guard(
            "target_release", False, f"release {target[:10]} is no longer in {host.config.deployment.repo}"
        )
    plan.to_subject = info.subject
    if host.migrations is None:
        plan.to_revision_source = "none"
        return Guard("target_release", True, source)
    record = store.latest_deploy_of(target)
    if record is not None and record.revision:
        plan.to_revision = record.revision
        plan.to_revision_source = "ledger"
        return Guard("target_release", True, source)
    assert host.config.migrations is not None
    try:
        plan.to_revision = release_revision(host.deployment, target, host.config.migrations.config_file())
    except (MigrationError, GitError) as exc:
        return Guard("target_release", False, f"cannot tell the alembic revision of {target[:10]}: {exc}")
    plan.to_revision_source = "derived"
    return Guard("target_release", True, source)
