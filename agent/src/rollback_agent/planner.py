"""What a rollback would do right now, and which guards allow or block it."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from rollback_agent.durations import format_duration
from rollback_agent.gitops import GitError
from rollback_agent.migrations import MigrationError, release_revision

if TYPE_CHECKING:
    from rollback_agent.host import Host


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
    units: list[str] = field(default_factory=list)
    guards: list[Guard] = field(default_factory=list)

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


def build_plan(host: Host, *, manual: bool = False, to: str | None = None, now: float | None = None) -> Plan:
    """Evaluate the guards in order (window, cooldown, daily cap, target, dry run) and pick the target.

    ``manual`` (the CLI's ``rollback``): an operator decided, so the window, cooldown and daily-cap
    guards are reported but not enforced, and ``dry_run`` in the config does not apply.
    """
    with host.git_lock:
        return _build_plan(host, manual=manual, to=to, now=time.time() if now is None else now)


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

    # 4. a target: the most recent earlier release whose deploy was healthy (or the one asked for).
    plan.guards.append(_choose_target(host, plan, current, to))

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


def _choose_target(host: Host, plan: Plan, current: str, to: str | None) -> Guard:
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
        bad = store.bad_shas()
        found: str | None = None
        for candidate in store.healthy_releases():
            if candidate.sha != current and candidate.sha not in bad:
                found = candidate.sha
                break
        if found is None:
            return Guard(
                "target_release", False, "no earlier healthy release in the deploy ledger to go back to"
            )
        target = found
        source = f"{target[:10]} (the most recent earlier healthy release)"
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
