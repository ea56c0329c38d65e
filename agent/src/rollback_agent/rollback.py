"""The rollback itself: initiated -> database -> application -> verify -> done.

The one way a rollback runs: ``spawn`` starts the rollback process (``rollback_agent.runner``) for
a webhook's incident, and that process and the CLI's ``rollback`` both call ``execute``.

* database (40%): ``alembic downgrade <target revision>`` from the *current* tree, which holds the
  downgrade scripts. If it fails the code is not switched.
* application (60%): check the target sha out, move the deployment ref (push it to the remote when
  one is set), restart the units. If the checkout fails after a downgrade, the schema is upgraded
  back so the running code keeps its schema.
* verify (80%): the units are active and the health URL answers.

The whole run is bounded by ``guards.timeout``: the command running when time is up is stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

from rollback_agent import metrics, procs
from rollback_agent.durations import format_duration
from rollback_agent.gitops import GitError
from rollback_agent.host import Host
from rollback_agent.locking import OperationLock
from rollback_agent.migrations import MigrationError, release_revision
from rollback_agent.notify import short
from rollback_agent.state import FAILED, INTERRUPTED, SUCCESS, TIMED_OUT, Incident
from rollback_agent.steps import Deadline, StepError
from rollback_agent.units import restart_units, verify

log = logging.getLogger(__name__)

PHASES = (("initiated", 0), ("database", 40), ("application", 60), ("verify", 80), ("done", 100))
PROGRESS = dict(PHASES)


class RollbackInterruptedError(Exception):
    pass


class RollbackRun:
    """Runs one incident's rollback in this process (the caller holds the operation lock)."""

    def __init__(self, host: Host, incident_id: str, *, echo: Callable[[str], None] | None = None) -> None:
        self.host = host
        self.config = host.config
        self.store = host.store
        self.incident_id = incident_id
        incident = self.store.incident(incident_id)
        if incident is None:
            raise LookupError(f"no incident {incident_id}")
        self.incident: Incident = incident
        self.warnings: list[str] = []
        self.echo = echo  # the CLI prints phases as they happen
        self.deadline = Deadline.after(self.config.guards.timeout)
        self.started = time.time()
        self.phase_id: int | None = None
        self.phase = "initiated"
        self.downgraded = False
        self.code_switched = False
        self.ledger_id: int | None = None
        self.stop_reason: str | None = None
        self.handlers_installed = False

    # --- signals -------------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            self.stop_reason = f"the rollback process received {signal.Signals(signum).name}"
            procs.stop_all()
            raise RollbackInterruptedError(self.stop_reason)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.handlers_installed = True

    # --- helpers -------------------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        log.info("%s: %s", self.incident_id, text)
        if self.echo is not None:
            self.echo(text)

    def _enter(self, name: str, notify: bool = True) -> None:
        if self.phase_id is not None:
            self.store.end_phase(self.phase_id, SUCCESS)
        self.phase = name
        self.phase_id = self.store.start_phase(self.incident_id, name, PROGRESS[name])
        self._say(f"[{PROGRESS[name]:3d}%] {name}")
        if notify and name != "done":
            eta = None
            if name == "initiated":
                typical = self.store.typical_duration()
                limit = format_duration(self.config.guards.timeout)
                eta = f"about {format_duration(typical)} (at most {limit})" if typical else f"at most {limit}"
            self.host.notify(name, self.incident, progress=PROGRESS[name], eta=eta)

    def _detail(self, text: str) -> None:
        if self.phase_id is not None:
            self.store.add_phase_detail(self.phase_id, text)
        self._say(f"      {text}")

    def _check_time(self, step: str) -> None:
        if self.deadline.expired():
            raise StepError(
                step,
                f"guards.timeout ({format_duration(self.config.guards.timeout)}) reached",
                timed_out=True,
            )

    # --- the run --------------------------------------------------------------------------------------
    def run(self) -> str:
        result, failed_step, error = SUCCESS, None, None
        try:
            self._enter("initiated")
            target_revision = self._prepare()
            self._enter("database")
            self._database(target_revision)
            self._enter("application")
            self._application(target_revision)
            self._enter("verify")
            checks = verify(self.config, self.deadline)
            self._detail("checks: " + ", ".join(f"{k} {v}" for k, v in checks.items()))
            self._enter("done", notify=False)
        except StepError as exc:
            result = TIMED_OUT if exc.timed_out else FAILED
            failed_step, error = exc.step, self.host.redact(exc.message)
            if exc.timed_out:
                error = f"guards.timeout ({format_duration(self.config.guards.timeout)}) reached: {error}"
        except RollbackInterruptedError as exc:
            result, failed_step, error = INTERRUPTED, self.phase, str(exc)
        except Exception as exc:
            log.exception("%s: unexpected error", self.incident_id)
            result, failed_step, error = FAILED, self.phase, self.host.redact(f"{type(exc).__name__}: {exc}")
        if self.handlers_installed:  # the result gets recorded whatever arrives now
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        self._finish(result, failed_step, error)
        return result

    def _prepare(self) -> str | None:
        inc = self.incident
        deployment = self.host.deployment
        to_sha, from_sha = inc.to_sha, inc.from_sha
        if not to_sha or not from_sha:
            raise StepError("initiated", "the incident has no release to go back to")
        current = deployment.current_sha()
        if current != from_sha:
            raise StepError(
                "initiated",
                f"{self.config.deployment.ref} moved to {short(current)} since the decision "
                f"(expected {short(from_sha)}): nothing done",
            )
        dirty = deployment.dirty_files()
        if dirty:
            raise StepError(
                "initiated",
                "the working tree has local changes ("
                + ", ".join(dirty[:5])
                + "): nothing done; commit or discard them",
            )
        if deployment.commit_info(to_sha) is None:
            raise StepError("initiated", f"target {short(to_sha)} is not in {self.config.deployment.repo}")
        target_revision = inc.to_revision
        if self.host.migrations is not None and not target_revision:
            assert self.config.migrations is not None
            try:
                target_revision = release_revision(deployment, to_sha, self.config.migrations.config_file())
            except (MigrationError, GitError) as exc:
                raise StepError(
                    "initiated", f"cannot tell the alembic revision of {short(to_sha)}: {exc}"
                ) from None
            self.store.update_incident(self.incident_id, to_revision=target_revision)
            self._detail(f"target revision {target_revision} (derived from the release's migration scripts)")
        return target_revision

    def _database(self, target_revision: str | None) -> None:
        migrations = self.host.migrations
        if migrations is None:
            self._detail("no migrations configured: skipped")
            return
        assert target_revision is not None
        from_revision = self.incident.from_revision
        if from_revision and from_revision == target_revision:
            self._detail(f"both releases run on revision {target_revision}: nothing to downgrade")
            return
        self._check_time("database")
        try:
            result = migrations.downgrade(target_revision, self.deadline.remaining())
        except MigrationError as exc:
            raise StepError("database", str(exc)) from None
        if not result.ok:
            raise StepError(
                "database",
                f"alembic downgrade {target_revision} failed: {result.excerpt()}",
                timed_out=result.timed_out,
            )
        self.downgraded = True
        self._detail(f"alembic downgrade {target_revision}: ok ({result.duration:.2f}s)")

    def _application(self, target_revision: str | None) -> None:
        inc = self.incident
        deployment = self.host.deployment
        to_sha, from_sha = str(inc.to_sha), str(inc.from_sha)
        self._check_time("application")
        try:
            deployment.checkout(to_sha, self.deadline.remaining())
        except GitError as exc:
            self._restore_schema()
            raise StepError("application", str(exc), timed_out=self.deadline.expired()) from None
        self.code_switched = True
        self._detail(f"checked out {short(to_sha)}")
        self.ledger_id = self.store.start_deploy(
            kind="rollback",
            sha=to_sha,
            ref=self.config.deployment.ref,
            previous_sha=from_sha,
            incident_id=self.incident_id,
        )
        try:
            deployment.move_ref(to_sha, from_sha, f"rollback-agent: {self.incident_id} rollback")
        except GitError as exc:
            raise StepError("application", str(exc)) from None
        self._detail(f"{self.config.deployment.ref} -> {short(to_sha)}")
        if deployment.remote:
            try:
                deployment.push_ref(to_sha, self.deadline.cap(60.0))
                self._detail(f"pushed {self.config.deployment.ref} to {deployment.remote}")
            except GitError as exc:
                # The host is rolled back either way; a stale remote ref is reported, not fatal.
                self._detail(f"WARNING: {self.host.redact(str(exc))}")
                self.warnings.append(str(exc))
        done = restart_units(self.config, self.deadline)
        self._detail("restarted " + ", ".join(done))

    def _restore_schema(self) -> None:
        """After a downgrade, if the code could not be switched, put the schema back for the old code."""
        migrations = self.host.migrations
        from_revision = self.incident.from_revision
        if not self.downgraded or migrations is None:
            return
        target = from_revision or "head"
        result = migrations.run(["upgrade", target], timeout=max(60.0, self.deadline.remaining()))
        if result.ok:
            self._detail(f"code not switched: schema upgraded back to {target}")
        else:
            self._detail(
                f"code not switched and upgrading the schema back to {target} FAILED: {result.excerpt()}"
            )

    def _finish(self, result: str, failed_step: str | None, error: str | None) -> None:
        duration = time.time() - self.started
        if self.phase_id is not None:
            self.store.end_phase(self.phase_id, SUCCESS if result == SUCCESS else result, error or "")
            self.phase_id = None
        if self.ledger_id is not None:
            outcome = "healthy" if result == SUCCESS else "unhealthy"
            now = self.store.incident(self.incident_id) or self.incident
            self.store.finish_deploy(
                self.ledger_id,
                outcome=outcome,
                revision=now.to_revision,
                deployed=self.code_switched,
                detail=f"{self.incident_id}: {result}",
            )
        self.store.finish_incident(
            self.incident_id,
            result,
            progress=100 if result == SUCCESS else None,
            failed_step=failed_step,
            error=error,
        )
        metrics.ROLLBACKS.labels(result=result).inc()
        metrics.ROLLBACK_DURATION.observe(duration)
        self._say(
            f"result: {result} after {format_duration(duration)}"
            + (f" ({failed_step}: {error})" if error else "")
        )
        self._notify_result(result, duration, failed_step, error)

    def _notify_result(
        self, result: str, duration: float, failed_step: str | None, error: str | None
    ) -> None:
        inc = self.store.incident(self.incident_id) or self.incident
        repo = self.config.deployment.repo
        if result == SUCCESS:
            follow_up = [
                f"Release {short(inc.from_sha)} is marked bad: `rollback-agent deploy` refuses it "
                "without --force",
                "Check that the alert resolves, then find the cause in the bad release",
            ]
            follow_up += [f"Warning: {w}" for w in self.warnings]
            health = "units active" + (", health check OK" if self.config.health else "")
            self.host.notify(
                "success", inc, progress=100, duration=duration, health=health, follow_up=follow_up
            )
            return
        kind = {TIMED_OUT: "timed_out", INTERRUPTED: "interrupted"}.get(result, "failure")
        follow_up = ["`rollback-agent status` shows each phase and its output"]
        if failed_step in ("initiated", "database") and not self.code_switched:
            follow_up.append(f"The code was not switched; the host still runs {short(inc.from_sha)}")
        else:
            follow_up.append(
                f"The code is at {short(inc.to_sha)}: check the services "
                f"(`systemctl status {' '.join(self.config.services.units)}`, `git -C {repo} log -1`)"
            )
        self.host.notify(
            kind,
            inc,
            progress=int(inc.progress or 0),
            duration=duration,
            failed_step=failed_step,
            error=error,
            follow_up=follow_up,
        )


def execute(
    host: Host, incident_id: str, lock: OperationLock, *, echo: Callable[[str], None] | None = None
) -> str:
    """Run ``incident_id``'s rollback in this process, which holds ``lock``; returns the result.

    Used by the rollback process (webhooks) and by the CLI's ``rollback``. SIGTERM and SIGINT stop
    the step running and record ``interrupted``. The caller releases the lock.
    """
    lock.describe("rollback", incident_id)
    host.store.update_incident(incident_id, runner_pid=os.getpid())
    run = RollbackRun(host, incident_id, echo=echo)
    run.install_signal_handlers()
    return run.run()


def spawn(host: Host, incident_id: str, lock: OperationLock) -> None:
    """Start ``incident_id``'s rollback in its own process, handing the lock over to it.

    The process is not tied to the gunicorn worker that started it: a worker restart does not stop it.
    """
    if lock.fd is None:
        raise OSError("the operation lock is not held")
    if not host.config.source:
        raise OSError("the configuration has no file the rollback process could read")
    argv = [
        sys.executable,
        "-m",
        "rollback_agent.runner",
        "--config",
        host.config.source,
        "--incident",
        incident_id,
        "--lock-fd",
        str(lock.fd),
    ]
    proc = subprocess.Popen(argv, pass_fds=(lock.fd,), stdin=subprocess.DEVNULL, close_fds=True)
    lock.describe("rollback", incident_id, pid=proc.pid)
    host.store.update_incident(incident_id, runner_pid=proc.pid)
    lock.detach()
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    log.info("%s: rollback running in process %d", incident_id, proc.pid)
