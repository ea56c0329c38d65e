"""The rollback itself, a transaction: initiated -> database -> application -> verify -> done.

The one way a rollback runs: ``spawn`` starts the rollback process (``rollback_agent.runner``) for
a webhook's incident, and that process and the CLI's ``rollback`` both call ``execute``.

* initiated (0%): the preflight changes nothing: git lock files, local changes, free space in
  ``state_dir``, the database's revision (read with ``alembic current``) and the target revision
  known to the migration scripts of both releases. A failure names what blocks.
* database (40%): ``alembic downgrade <target revision>`` from the *current* tree, which holds the
  downgrade scripts.
* application (60%): check the target sha out, move the deployment ref (push it to the remote when
  one is set), restart the units.
* verify (80%): the units are active and the health URL answers.

Any failure after the first change (a step, a signal, an unexpected exception such as a full state
disk) is compensated before the result is recorded: the live release's code is checked out again,
the ref moved back, the schema upgraded back to the revision read in the preflight, and the units
restarted if any was. The result says ``restored``; if the restore itself fails the host is
``stuck`` (``consistent: false``): a page goes out and no automatic rollback runs until a person
runs ``rollback-agent resolve``. Every failure message ends with the host as read at that moment.
A failure in verify leaves the target release consistently in place (code, ref, schema): no restore.

The whole run is bounded by ``guards.timeout``, and the restore by as long again.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from rollback_agent import datasafety, fleet, metrics, preflight, preview, procs
from rollback_agent.backup import prune_backups
from rollback_agent.durations import format_duration
from rollback_agent.gitops import GitError
from rollback_agent.host import Host
from rollback_agent.locking import OperationLock
from rollback_agent.migrations import MigrationError, release_revision
from rollback_agent.notify import short
from rollback_agent.observe import Observed, database_revision, observe
from rollback_agent.recovery import exit_cause, reaped
from rollback_agent.speculation import Speculation
from rollback_agent.state import ABORTED, BLOCKED, FAILED, INTERRUPTED, SUCCESS, TIMED_OUT, Incident
from rollback_agent.steps import Deadline, StepError
from rollback_agent.units import restart_units, verify

log = logging.getLogger(__name__)

# How long a result that cannot be written (full state disk) is retried before giving up.
RECORD_PATIENCE = 300.0
# How long the restore may take after SIGTERM/SIGINT (systemd's stop timeout is 90 s by default).
INTERRUPTED_RESTORE = 15.0

PHASES = (
    ("waiting_for_wave", 0),  # a host of wave N > 0: the earlier waves of the fleet first (fleet.py)
    ("initiated", 0),
    ("database", 40),
    ("application", 60),
    ("verify", 80),
    ("done", 100),
)
PROGRESS = dict(PHASES)


class RollbackInterruptedError(Exception):
    pass


class DowngradeBlockedError(StepError):
    """The downgrade would destroy rows (or the release forbids it): nothing was changed."""

    def __init__(self, message: str) -> None:
        super().__init__("initiated", message)


class WaveAbortedError(StepError):
    """An earlier wave of the fleet did not succeed (or did not answer, with abort): nothing changed."""

    def __init__(self, message: str) -> None:
        super().__init__("waiting_for_wave", message)


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
        self.code_only = False  # the schema stays (a blocked destructive downgrade, code declared compatible)
        self.code_switched = False
        self.ref_moved = False
        self.restarted = False  # a restart command ran (whatever it answered)
        self.switched = False  # code, ref and units all at the target: verify is what is left
        self.live_revision: str | None = None  # the database's revision, read in the preflight
        self.outcome: dict[str, Any] = {}  # restored / consistent / stuck / observed, into detail
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

    def _note(self, text: str) -> None:
        """``_detail`` for the restore: a state disk that cannot be written must not stop it."""
        try:
            self._detail(text)
        except (sqlite3.Error, OSError) as exc:
            log.error("%s: %s (not recorded: %s)", self.incident_id, text, exc)

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
            if fleet.waits(self.host, self.incident):
                self._wait_for_wave()
            self._enter("initiated")
            target_revision = self._prepare()
            preview.recorded()  # no preview to wait for after the preflight (no downgrade, or recorded)
            self._enter("database")
            self._database(target_revision)
            self._enter("application")
            self._application(target_revision)
            self.switched = True
            self._enter("verify")
            checks = verify(self.config, self.deadline)
            self._detail("checks: " + ", ".join(f"{k} {v}" for k, v in checks.items()))
            self._enter("done", notify=False)
        except StepError as exc:
            result = (
                TIMED_OUT
                if exc.timed_out
                else BLOCKED
                if isinstance(exc, DowngradeBlockedError)
                else ABORTED
                if isinstance(exc, WaveAbortedError)
                else FAILED
            )
            failed_step, error = exc.step, self.host.redact(exc.message)
            if exc.timed_out:
                error = f"guards.timeout ({format_duration(self.config.guards.timeout)}) reached: {error}"
        except RollbackInterruptedError as exc:
            result, failed_step, error = INTERRUPTED, self.phase, str(exc)
        except Exception as exc:
            log.exception("%s: unexpected error", self.incident_id)
            result, failed_step, error = FAILED, self.phase, self.host.redact(f"{type(exc).__name__}: {exc}")
        if self.handlers_installed:  # the restore runs and the result gets recorded whatever arrives now
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if result != SUCCESS:
            error = self._settle(error or "")
        self._finish(result, failed_step, error)
        return result

    def _wait_for_wave(self) -> None:
        """Phase ``waiting_for_wave``: the earlier waves of the fleet first (see ``fleet``)."""
        self._enter("waiting_for_wave", notify=False)
        wait = fleet.WaveWait(self.host, self.incident, self._detail)
        awaited = ", ".join(p.host for p in wait.awaited()) or "-"
        self.host.notify(
            "waiting_for_wave", self.incident, detail=f"*Wave:* {wait.fleet.wave} · waiting for: {awaited}"
        )
        outcome = wait.run()
        self._detail(outcome.message)
        if not outcome.proceed:
            raise WaveAbortedError(outcome.message)
        # guards.timeout bounds the rollback itself, not the wait for the earlier waves.
        self.deadline = Deadline.after(self.config.guards.timeout)

    # --- after a failure: compensate, then read the host --------------------------------------------
    def _changed(self) -> bool:
        return self.downgraded or self.code_switched or self.ref_moved or self.restarted

    def _settle(self, error: str) -> str:
        """Restore what changed (unless the switch was complete), read the host; the full message."""
        restored: bool | None = None
        if self._changed() and not self.switched:
            restored = self._compensate()
        seen = self._observe()
        if restored is None:
            consistent = not self._changed() or self.switched
            what = "nothing was changed" if not self._changed() else "the target release is in place"
        else:
            consistent = restored and self._matches_live(seen)
            what = (
                f"restored to {short(self.incident.from_sha)}"
                if consistent
                else f"the restore to {short(self.incident.from_sha)} FAILED: the host is inconsistent"
            )
        self.outcome = {
            "restored": bool(restored) and consistent,
            "consistent": consistent,
            "stuck": not consistent,
            "observed": seen.as_dict(),
        }
        return self.host.redact(f"{error}; {what}; now: {seen.describe()}")

    def _observe(self) -> Observed:
        try:
            return observe(self.host, timeout=60.0)
        except Exception as exc:  # the message must go out whatever happens
            log.exception("%s: reading the host failed", self.incident_id)
            return Observed(problems=[f"the host could not be read ({type(exc).__name__}: {exc})"])

    def _matches_live(self, seen: Observed) -> bool:
        live = self.incident.from_sha
        if seen.ref_sha != live or seen.head_sha != live:
            return False
        if self.host.migrations is not None and seen.database_revision != self.live_revision:
            return False
        return not self.restarted or all(state == "active" for state in seen.units.values())

    def _compensate(self) -> bool:
        """Put the live release back: code, ref, schema, units. True when every step worked."""
        budget = self.config.guards.timeout
        if self.stop_reason is not None:  # stopped by a signal: the stop has its own time limit
            budget = min(budget, INTERRUPTED_RESTORE)
        deadline = Deadline.after(budget)
        live = str(self.incident.from_sha)
        ok = True
        self._note(f"restoring {short(live)}")
        if self.code_switched:
            try:
                self.host.deployment.checkout(live, deadline.cap(120.0))
                self._note(f"restore: checked out {short(live)} again")
            except GitError as exc:
                ok = False
                self._note(f"restore: FAILED to check {short(live)} out again: {exc}")
        if self.ref_moved:
            try:
                self.host.deployment.move_ref(
                    live, self.incident.to_sha, f"rollback-agent: {self.incident_id} restore"
                )
                self._note(f"restore: {self.config.deployment.ref} -> {short(live)}")
            except GitError as exc:
                ok = False
                self._note(f"restore: FAILED to move {self.config.deployment.ref} back: {exc}")
        if self.downgraded and self.host.migrations is not None:
            target = self.live_revision or "head"
            result = self.host.migrations.run(["upgrade", target], timeout=max(1.0, deadline.remaining()))
            if result.ok:
                self._note(f"restore: schema upgraded back to {target}")
            else:
                ok = False
                self._note(f"restore: upgrading the schema back to {target} FAILED: {result.excerpt()}")
        if self.restarted:
            try:
                done = restart_units(self.config, deadline, step="restore")
                self._note("restore: restarted " + ", ".join(done))
            except StepError as exc:
                ok = False
                self._note(f"restore: {exc.message}")
        return ok

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
        if deployment.commit_info(to_sha) is None:
            raise StepError("initiated", f"target {short(to_sha)} is not in {self.config.deployment.repo}")
        problems = preflight.change_problems(self.host)
        if problems:
            raise StepError("initiated", "preflight: " + "; ".join(problems))
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
        if self.host.migrations is not None:
            self._check_time("initiated")
            with Speculation(self.host, inc.from_revision, target_revision, self.deadline) as rendered:
                try:
                    self.live_revision = database_revision(self.host, self.deadline.cap(120.0))
                except MigrationError as exc:
                    raise StepError(
                        "initiated",
                        f"preflight: the database's revision cannot be read with the scripts of "
                        f"{short(from_sha)}: {exc}",
                    ) from None
                problems = preflight.revision_problems(
                    self.host, from_sha, self.live_revision, to_sha, target_revision
                )
                if problems:
                    raise StepError("initiated", "preflight: " + "; ".join(problems))
                self._detail(f"preflight ok: database at {self.live_revision}")
                if target_revision and self.live_revision != target_revision:
                    self._data_safety(self.live_revision, target_revision, rendered)
        return target_revision

    def _data_safety(self, live_revision: str, target_revision: str, rendered: Speculation) -> None:
        """Before any change: the downgrade's SQL, what it drops and its rows, then the policy.

        Blocks (``DowngradeBlockedError``), backs up (a failing backup stops here), switches to a
        code-only rollback, or lets the downgrade run; everything is recorded in the incident.
        """
        migrations, inc = self.host.migrations, self.incident
        assert migrations is not None
        try:
            declaration = datasafety.release_declaration(self.host.deployment, str(inc.from_sha))
        except datasafety.DataSafetyError as exc:
            raise StepError("initiated", f"preflight: {exc}") from None
        overridden = declaration.downgrade == "forbidden" and bool(inc.detail.get("allow_forbidden"))
        if declaration.downgrade == "forbidden" and not overridden:
            raise DowngradeBlockedError(
                f"blocked: release {short(inc.from_sha)} declares downgrade: forbidden in "
                f"{datasafety.RELEASE_FILE}: it is never rolled back automatically; a person saves its data, "
                "then runs rollback-agent rollback --allow-forbidden"
            )
        if overridden:  # only `rollback-agent rollback --allow-forbidden` records it: a person decided
            self._detail(
                f"release {short(inc.from_sha)} declares downgrade: forbidden: overridden by hand "
                "(--allow-forbidden); migrations.destructive_downgrade still applies"
            )
        self._check_time("initiated")
        check = rendered.result(live_revision, target_revision)
        try:
            datasafety.count_rows(migrations, check, min(migrations.config.count_timeout, 120.0))
        except datasafety.DataSafetyError as exc:
            check.error = f"rows not counted: {exc}"
        policy = migrations.config.destructive_downgrade
        action, reason = datasafety.decide(policy, declaration, check)
        done = {"policy": policy, "action": action, "forbidden_overridden": overridden}
        record: dict[str, Any] = {"downgrade": check.as_dict() | done}
        self.store.merge_detail(self.incident_id, **record)
        preview.recorded()  # the webhook's answer shows it from here on
        self._detail(reason)
        if action == datasafety.BLOCK:
            raise DowngradeBlockedError(f"blocked: {reason}")
        if action == datasafety.CODE_ONLY:
            self.code_only = True
        elif action == datasafety.BACKUP:
            backups = self.config.state_dir / "backups"
            try:
                saved = datasafety.backup(
                    migrations, check, self.incident_id, backups, max(1.0, self.deadline.remaining())
                )
            except datasafety.DataSafetyError as exc:
                raise StepError("initiated", f"backup before the downgrade failed: {exc}") from None
            record["downgrade"]["backup"] = saved.as_dict()
            self.store.merge_detail(self.incident_id, **record)
            self._detail(f"backup {saved.path} ({saved.size} bytes, sha256 {saved.sha256})")
            self._prune_backups(backups)

    def _prune_backups(self, folder: Path) -> None:
        """migrations.backup_keep / backup_max_age; never the running or the last incident's backup."""
        cfg = self.host.migrations.config if self.host.migrations is not None else None
        if cfg is None:
            return
        running = self.store.running_incidents()
        protect = {self.incident_id, *(i.id for i in running), *(i.id for i in self.store.incidents(limit=2))}
        try:
            gone = prune_backups(folder, cfg.backup_keep, cfg.backup_max_age, protect, time.time())
        except OSError as exc:  # a backup left in place is no reason to stop the rollback
            self._detail(f"pruning old backups failed: {exc}")
            return
        if gone:
            self._detail(f"pruned {len(gone)} older backup(s): {', '.join(p.name for p in gone)}")

    def _database(self, target_revision: str | None) -> None:
        migrations = self.host.migrations
        if migrations is None:
            self._detail("no migrations configured: skipped")
            return
        assert target_revision is not None
        if self.code_only:
            self._detail(f"schema left at {self.live_revision} (code-only rollback): no downgrade")
            return
        from_revision = self.incident.from_revision
        if from_revision and from_revision == target_revision:
            self._detail(f"both releases run on revision {target_revision}: nothing to downgrade")
            return
        self._check_time("database")
        self.downgraded = True  # from here the schema may have moved, even if the command fails
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
        self._detail(f"alembic downgrade {target_revision}: ok ({result.duration:.2f}s)")

    def _application(self, target_revision: str | None) -> None:
        inc = self.incident
        deployment = self.host.deployment
        to_sha, from_sha = str(inc.to_sha), str(inc.from_sha)
        self._check_time("application")
        try:
            deployment.checkout(to_sha, self.deadline.remaining())
        except GitError as exc:
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
        self.ref_moved = True
        self._detail(f"{self.config.deployment.ref} -> {short(to_sha)}")
        if deployment.remote:
            try:
                deployment.push_ref(to_sha, self.deadline.cap(60.0))
                self._detail(f"pushed {self.config.deployment.ref} to {deployment.remote}")
            except GitError as exc:
                # The host is rolled back either way; a stale remote ref is reported, not fatal.
                self._detail(f"WARNING: {self.host.redact(str(exc))}")
                self.warnings.append(str(exc))
        self.restarted = True
        done = restart_units(self.config, self.deadline)
        self._detail("restarted " + ", ".join(done))

    def _finish(self, result: str, failed_step: str | None, error: str | None) -> None:
        duration = time.time() - self.started
        metrics.ROLLBACKS.labels(result=result).inc()
        metrics.ROLLBACK_DURATION.observe(duration)
        self._say(
            f"result: {result} after {format_duration(duration)}"
            + (f" ({failed_step}: {error})" if error else "")
        )
        try:
            self._record(result, failed_step, error)
        except (sqlite3.Error, OSError) as exc:
            # A full state disk: say what happened first (Slack needs no disk), then keep trying.
            log.error("%s: cannot record the result yet (%s); retrying", self.incident_id, exc)
            self._notify_result(result, duration, failed_step, error)
            self._record_patiently(result, failed_step, error)
            return
        self._notify_result(result, duration, failed_step, error)

    def _record(self, result: str, failed_step: str | None, error: str | None) -> None:
        """Write the result (each write can be repeated: retried as a whole on a full disk)."""
        if self.phase_id is not None:
            self.store.end_phase(self.phase_id, SUCCESS if result == SUCCESS else result, error or "")
            self.phase_id = None
        if self.outcome:
            self.store.merge_detail(self.incident_id, **self.outcome)
        if self.ledger_id is not None:
            outcome = "healthy" if result == SUCCESS else "unhealthy"
            # The target went live only if the switch completed (or could not be undone).
            live = self.switched or (self.code_switched and not self.outcome.get("restored"))
            self.store.finish_deploy(
                self.ledger_id,
                outcome=outcome if live else "failed",
                revision=self.live_revision if self.code_only else self.incident.to_revision,
                deployed=live,
                detail=f"{self.incident_id}: {result}" + ("" if live else " (restored)"),
            )
            self.ledger_id = None
        self.store.finish_incident(
            self.incident_id,
            result,
            progress=100 if result == SUCCESS else None,
            failed_step=failed_step,
            error=error,
        )

    def _record_patiently(self, result: str, failed_step: str | None, error: str | None) -> None:
        until = time.monotonic() + RECORD_PATIENCE
        while True:
            time.sleep(1.0)
            try:
                self._record(result, failed_step, error)
                log.info("%s: result recorded", self.incident_id)
                return
            except (sqlite3.Error, OSError) as exc:
                if time.monotonic() >= until:
                    log.error("%s: the result could not be recorded (%s): %s", self.incident_id, exc, error)
                    return

    def _current(self) -> Incident:
        try:
            return self.store.incident(self.incident_id) or self.incident
        except (sqlite3.Error, OSError):
            return self.incident

    def _notify_result(
        self, result: str, duration: float, failed_step: str | None, error: str | None
    ) -> None:
        inc = self._current()
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
        kind = {TIMED_OUT: "timed_out", INTERRUPTED: "interrupted", ABORTED: "aborted"}.get(result, "failure")
        follow_up = ["`rollback-agent status` shows each phase and its output, and the host as it is now"]
        stuck = bool(self.outcome.get("stuck"))
        if stuck:
            follow_up.append(
                "The host is STUCK (code, ref and schema out of step): no automatic rollback runs until "
                f"a person repairs it and runs `rollback-agent resolve {self.incident_id} --note TEXT`"
            )
        elif self.switched:
            follow_up.append(
                f"The code is at {short(inc.to_sha)}: check the services "
                f"(`systemctl status {' '.join(self.config.services.units)}`, `git -C {repo} log -1`)"
            )
        elif not self.code_switched:
            follow_up.append(f"The code was not switched; the host still runs {short(inc.from_sha)}")
        if self.outcome.get("restored"):
            follow_up.append(f"Restored: code, ref and schema of {short(inc.from_sha)} are back in place")
        self.host.notify(
            kind,
            inc,
            progress=int(inc.progress or 0),
            duration=duration,
            failed_step=failed_step,
            error=error,
            follow_up=follow_up,
        )
        if stuck:
            self._page(inc, error or "")
        elif result == BLOCKED:
            self.host.page(inc, f"rollback {inc.id} on {self.config.host} {error or 'blocked'}"[:400])

    def _page(self, inc: Incident, error: str) -> None:
        """Slack ``@here`` and, when configured, PagerDuty: a person is needed on this host."""
        resolve = f"`rollback-agent resolve {inc.id} --note TEXT` once the host is repaired"
        self.host.notify(
            "stuck",
            inc,
            progress=int(inc.progress or 0),
            error=error,
            follow_up=["Repair code, ref and schema by hand (see the error: the host as read now)", resolve],
        )
        self.host.page(
            inc, f"rollback {inc.id} on {self.config.host} left the host inconsistent: {error[:300]}"
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


def _reap(host: Host, incident_id: str, proc: subprocess.Popen[bytes]) -> None:
    """Wait for the rollback process; if it ended without a result, say so now (not at the next look)."""
    returncode = proc.wait()
    preview.forget(incident_id)
    try:
        if reaped(host, incident_id, returncode):
            log.error(
                "%s: the rollback process ended without a result (%s)", incident_id, exit_cause(returncode)
            )
    except Exception:
        log.exception("%s: reaping the rollback process failed", incident_id)


def spawn(host: Host, incident_id: str, lock: OperationLock) -> None:
    """Start ``incident_id``'s rollback in its own process, handing the lock over to it.

    The process is not tied to the gunicorn worker that started it: a worker restart does not stop it.
    """
    if lock.fd is None:
        raise OSError("the operation lock is not held")
    if not host.config.source:
        raise OSError("the configuration has no file the rollback process could read")
    # The process closes its end of this pipe once the downgrade's preview is recorded (or it
    # exits): the webhook's answer waits for that instead of polling the store (preview.py).
    ready_r, ready_w = os.pipe()
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
        "--ready-fd",
        str(ready_w),
    ]
    try:
        proc = subprocess.Popen(argv, pass_fds=(lock.fd, ready_w), stdin=subprocess.DEVNULL, close_fds=True)
    except OSError:
        os.close(ready_r)
        raise
    finally:
        os.close(ready_w)
    preview.expect(incident_id, ready_r)
    lock.describe("rollback", incident_id, pid=proc.pid)
    host.store.update_incident(incident_id, runner_pid=proc.pid)
    lock.detach()
    threading.Thread(
        target=_reap, args=(host, incident_id, proc), name=f"reap-{proc.pid}", daemon=True
    ).start()
    log.info("%s: rollback running in process %d", incident_id, proc.pid)
