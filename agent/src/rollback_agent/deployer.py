"""``rollback-agent deploy REF``: how releases get onto a host, recorded in the ledger.

Preflight (git lock files, local changes, free space in ``state_dir``, the database's revision read
with ``alembic current``), check the release out, ``alembic upgrade head``, restart the units, check
health, move the deployment ref, record (sha, ref, revision, time, outcome). A failure before the
restart is undone: the schema is downgraded back to the revision the deploy started from (with the
new release's scripts, which know the new revisions), then the previous code is checked out again;
the ledger entry says so. Nothing is left half done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from rollback_agent import metrics, preflight
from rollback_agent.gitops import GitError
from rollback_agent.host import Host
from rollback_agent.locking import LockBusyError
from rollback_agent.migrations import (
    BASE,
    MigrationError,
    heads_of,
    is_below,
    release_graph,
    release_revision,
)
from rollback_agent.notify import short
from rollback_agent.recovery import recover
from rollback_agent.steps import Deadline, StepError
from rollback_agent.units import restart_units, verify

log = logging.getLogger(__name__)

# Exit codes of `rollback-agent deploy` (documented in README.md).
EXIT = {"deployed": 0, "unchanged": 0, "failed": 1, "refused": 3, "unhealthy": 4, "busy": 5}


@dataclass
class DeployResult:
    result: str  # deployed | unchanged | failed | refused | unhealthy | busy
    ref: str
    sha: str | None = None
    previous_sha: str | None = None
    revision: str | None = None
    changed: bool = False
    duration: float = 0.0
    error: str | None = None
    failed_step: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT[self.result]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["exit_code"] = self.exit_code
        return data


class Deployer:
    def __init__(self, host: Host, echo: Callable[[str], None] | None = None) -> None:
        self.host = host
        self.config = host.config
        self.echo = echo

    def _step(self, out: DeployResult, name: str, ok: bool, detail: str, started: float) -> None:
        out.steps.append(
            {"step": name, "ok": ok, "detail": detail, "seconds": round(time.monotonic() - started, 3)}
        )
        if self.echo is not None:
            self.echo(f"{'ok ' if ok else 'ERR'} {name}: {detail}")

    def deploy(self, ref: str, *, force: bool = False) -> DeployResult:
        started = time.monotonic()
        out = DeployResult(result="failed", ref=ref)
        try:
            lock = self.host.lock().acquire("deploy", ref)
        except LockBusyError as exc:
            out.result, out.error = "busy", f"cannot deploy now: {exc}"
            return out
        try:
            recover(self.host, lock)
            self._deploy(out, ref, force, lock_started=started)
        finally:
            lock.release()
            out.duration = round(time.monotonic() - started, 3)
        if out.result in ("deployed", "unhealthy", "failed"):
            metrics.DEPLOYS.labels(outcome={"deployed": "healthy"}.get(out.result, out.result)).inc()
        log.info("deploy %s: %s%s", ref, out.result, f" ({out.error})" if out.error else "")
        return out

    def _deploy(self, out: DeployResult, ref: str, force: bool, lock_started: float) -> None:
        host, store, deployment = self.host, self.host.store, self.host.deployment
        deadline = Deadline.after(self.config.deployment.timeout)
        t = time.monotonic()
        try:
            sha = deployment.resolve(ref, fetch=True, timeout=deadline.cap(120.0))
        except GitError as exc:
            out.result, out.error, out.failed_step = "failed", str(exc), "resolve"
            self._step(out, "resolve", False, str(exc), t)
            return
        out.sha = sha
        current = deployment.current_sha()
        out.previous_sha = current
        self._step(out, "resolve", True, f"{ref} is {short(sha)}", t)

        bad = store.bad_release(sha)
        if bad is not None and not force:
            out.result, out.failed_step = "refused", "bad_release"
            out.error = f"{short(sha)} is marked bad ({bad.get('reason')}); deploy it anyway with --force"
            self._step(out, "bad_release", False, out.error, time.monotonic())
            return
        latest = store.latest_deploy_of(sha) if sha == current else None
        if (
            not force
            and sha == current
            and deployment.head_sha() == sha
            and latest is not None
            and latest.outcome == "healthy"
        ):
            out.result, out.revision = "unchanged", latest.revision
            self._step(
                out, "compare", True, f"{short(sha)} is deployed already and was healthy", time.monotonic()
            )
            return
        t = time.monotonic()
        problems = preflight.change_problems(host)
        previous_head = deployment.head_sha()
        start_revision: str | None = None
        # A host's first deploy has no release checked out yet, hence no migration scripts to read
        # the database's revision with: the new release's scripts read it after the checkout.
        if not problems and host.migrations is not None and previous_head is not None:
            try:
                start_revision = host.migrations.current(deadline.cap(120.0))
            except MigrationError as exc:
                problems.append(f"the database's revision cannot be read: {exc}")
        if problems:
            out.result, out.failed_step = "failed", "preflight"
            out.error = "; ".join(problems) + "; nothing was changed"
            self._step(out, "preflight", False, out.error, t)
            return
        ledger = store.start_deploy(kind="deploy", sha=sha, ref=ref, previous_sha=current)
        revision: str | None = None
        downgraded_from: str | None = None
        before_upgrade = start_revision  # where the schema goes back to if the upgrade fails
        try:
            if host.migrations is not None and current is not None and previous_head == current:
                # An older release: its tree lacks the newer downgrade scripts, so step the schema
                # down from the current tree first (as a rollback does).
                t = time.monotonic()
                target = self._older_revision(current, sha)
                if target is not None:
                    downgraded_from, target_rev = target
                    result = host.migrations.downgrade(target_rev, deadline.remaining())
                    if not result.ok:
                        raise StepError(
                            "migrate",
                            f"alembic downgrade {target_rev} failed: {result.excerpt()}",
                            timed_out=result.timed_out,
                        )
                    before_upgrade = target_rev
                    self._step(out, "downgrade", True, f"alembic downgrade {target_rev} (older release)", t)
            t = time.monotonic()
            deployment.checkout(sha, deadline.remaining())
            out.changed = True
            self._step(out, "checkout", True, f"checked out {short(sha)}", t)
            if host.migrations is not None:
                t = time.monotonic()
                if previous_head is None:  # the first deploy: the revision its upgrade starts from
                    before_upgrade = host.migrations.current(deadline.cap(120.0))
                result = host.migrations.upgrade_head(deadline.remaining())
                if not result.ok:
                    raise StepError(
                        "migrate",
                        f"alembic upgrade head failed: {result.excerpt()}",
                        timed_out=result.timed_out,
                    )
                revision = self._revision_after_upgrade(sha, deadline)
                self._step(out, "migrate", True, f"alembic upgrade head -> {revision}", t)
        except Exception as exc:  # a step, or anything unexpected: undo what was done
            if isinstance(exc, StepError):
                step, message = exc.step, exc.message
            elif isinstance(exc, GitError):
                step, message = "checkout", str(exc)
            elif isinstance(exc, MigrationError):
                step, message = "migrate", str(exc)
            else:
                log.exception("deploy %s: unexpected error", ref)
                step, message = "deploy", f"{type(exc).__name__}: {exc}"
            message = host.redact(message)
            self._step(out, step, False, message, t)
            undone = self._downgrade_back(out, before_upgrade) if out.changed else []
            self._restore_code(out, previous_head)
            self._restore_schema(out, downgraded_from)
            if downgraded_from is not None:
                undone.append(f"schema upgraded back to {downgraded_from}")
            store.finish_deploy(
                ledger,
                outcome="failed",
                revision=None,
                deployed=False,
                detail=f"{step}: {message}" + "".join(f"; {u}" for u in undone),
            )
            out.result, out.failed_step, out.error = "failed", step, message
            return
        out.revision = revision

        # From here on the new code is live: the ref follows it whatever the health check says.
        outcome, error, failed_step = "healthy", None, None
        try:
            t = time.monotonic()
            units = restart_units(self.config, deadline, step="restart")
            self._step(out, "restart", True, "restarted " + ", ".join(units), t)
            t = time.monotonic()
            checks = verify(self.config, deadline, step="verify")
            self._step(out, "verify", True, ", ".join(f"{k} {v}" for k, v in checks.items()), t)
        except StepError as exc:
            outcome, error, failed_step = "unhealthy", host.redact(exc.message), exc.step
            self._step(out, exc.step, False, error, t)
        t = time.monotonic()
        try:
            deployment.move_ref(sha, current, f"rollback-agent: deploy {ref}")
            self._step(out, "ref", True, f"{self.config.deployment.ref} -> {short(sha)}", t)
            if deployment.remote:
                try:
                    deployment.push_ref(sha, deadline.cap(60.0))
                    self._step(out, "push", True, f"pushed to {deployment.remote}", t)
                except GitError as exc:
                    self._step(out, "push", False, f"WARNING: {host.redact(str(exc))}", t)
        except GitError as exc:
            outcome, error, failed_step = "unhealthy", str(exc), "ref"
            self._step(out, "ref", False, str(exc), t)
        store.finish_deploy(ledger, outcome=outcome, revision=revision, deployed=True, detail=error or "")
        if outcome == "healthy" and force and store.bad_release(sha) is not None:
            store.unmark_bad(sha)
            self._step(
                out,
                "bad_release",
                True,
                f"{short(sha)} deployed with --force and healthy: no longer marked bad",
                time.monotonic(),
            )
        out.result = "deployed" if outcome == "healthy" else "unhealthy"
        out.error, out.failed_step = error, failed_step

    def _revision_after_upgrade(self, sha: str, deadline: Deadline) -> str:
        """After ``upgrade head`` the database is at the release's head; ask alembic only if unsure."""
        assert self.host.migrations is not None and self.config.migrations is not None
        try:
            return release_revision(self.host.deployment, sha, self.config.migrations.config_file())
        except (MigrationError, GitError):
            current = self.host.migrations.current(deadline.cap(120.0))
            return current or BASE

    def _older_revision(self, live: str, sha: str) -> tuple[str, str] | None:
        """(current head, target revision) when ``sha`` runs on an older revision than what is live."""
        assert self.config.migrations is not None
        cfg = self.config.migrations.config_file()
        try:
            graph = release_graph(self.host.deployment, live, cfg)
            target_rev = release_revision(self.host.deployment, sha, cfg)
        except (MigrationError, GitError):
            return None  # let `upgrade head` of the new release speak for itself
        heads = heads_of(graph)
        if len(heads) == 1 and target_rev != heads[0] and is_below(graph, target_rev, heads[0]):
            return heads[0], target_rev
        return None

    def _restore_schema(self, out: DeployResult, revision: str | None) -> None:
        if revision is None or self.host.migrations is None:
            return
        t = time.monotonic()
        result = self.host.migrations.run(["upgrade", revision], timeout=120.0)
        self._step(
            out,
            "restore",
            result.ok,
            f"alembic upgrade {revision}"
            if result.ok
            else f"alembic upgrade {revision} FAILED: {result.excerpt()}",
            t,
        )

    def _downgrade_back(self, out: DeployResult, revision: str | None) -> list[str]:
        """After a failed upgrade, with the new release's scripts still checked out: back to ``revision``."""
        migrations = self.host.migrations
        if migrations is None or revision is None:
            return []
        t = time.monotonic()
        try:
            now = migrations.current(120.0)
        except MigrationError as exc:
            self._step(out, "restore", False, f"cannot read the database's revision: {exc}", t)
            return [f"schema NOT restored: revision unreadable ({exc})"]
        if now == revision:
            return []  # the failed migration rolled back its own transaction: nothing to undo
        result = migrations.downgrade(revision, 300.0)
        if result.ok:
            self._step(out, "restore", True, f"alembic downgrade {revision} (from {now})", t)
            return [f"schema downgraded back to {revision} (from {now})"]
        self._step(out, "restore", False, f"alembic downgrade {revision} FAILED: {result.excerpt()}", t)
        return [f"schema NOT restored: alembic downgrade {revision} failed, database at {now}"]

    def _restore_code(self, out: DeployResult, previous_head: str | None) -> None:
        if not out.changed or previous_head is None:
            return
        t = time.monotonic()
        try:
            self.host.deployment.checkout(previous_head, 60.0)
            out.changed = False
            self._step(out, "restore", True, f"previous code {short(previous_head)} checked out again", t)
        except GitError as exc:
            self._step(out, "restore", False, f"could not check {short(previous_head)} out again: {exc}", t)
