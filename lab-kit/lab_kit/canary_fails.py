"""`scripts/lab break --scenario canary-fails`: the canary's rollback fails, the next wave changes nothing.

The lab's agents roll back in waves (inventories/lab/group_vars/app.yml): app1, the migration host,
is wave 0; app2 waits for it. The scenario:
  1. deploy the bad release v3 under load, like every break;
  2. as soon as app1 runs v3, leave a ref lock file in app1's repository
     (`.git/refs/heads/deployed.lock`, what a git process killed while moving the ref leaves):
     the rollback's preflight refuses to change a repository with one;
  3. CriticalErrorRate fires: app1's rollback ends `failed` (at initiated: the lock file), app2's
     wave wait ends `aborted` ("canary app1 failed at initiated: ..."): code, ref, units and the
     database of app2 are read and must be untouched (v3 still live, no restart);
  4. the cleanup an operator would do: remove the lock file, `rollback-agent resolve` any incident
     that left a host stuck, deploy the good release v2 again, and wait until Prometheus shows
     the alerts of v3 resolved (the next scenario starts clean).
The Report is incident.py's; ``checks`` holds what was read on the hosts before the cleanup.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from lab_kit import alerts, deploys, incident
from lab_kit.inventory import Host, Lab
from lab_kit.paths import STATE
from lab_kit.podman import exec_in
from lab_kit.ui import event, step

RELEASE = "v3"
BASE = "v2"
ALERT = "CriticalErrorRate"
REPO = "/srv/sample-app"
LOCK_FILE = f"{REPO}/.git/refs/heads/deployed.lock"
RESOLVE_TIMEOUT = 240.0  # seconds for v3's alerts to resolve once v2 is back


def results(report: incident.Report, host: str) -> list[dict[str, Any]]:
    """The host's incidents that ended (oldest first)."""
    done = [i for i in report.incidents.get(host, {}).values() if i.get("result")]
    return sorted(done, key=lambda i: float(i.get("started_at") or 0))


def plant_lock(canary: Host) -> None:
    """A ref lock file owned like the repository, as a git process that died mid-update leaves it."""
    exec_in(canary, "sh", "-c", f"touch {LOCK_FILE} && chown --reference={REPO}/.git {LOCK_FILE}")


def read_host(lab: Lab, host: Host) -> dict[str, Any]:
    """What a rollback would have changed on ``host``: ref, HEAD, the unit's start, the schema."""
    git = ("git", "-c", "safe.directory=*", "-C", REPO, "rev-parse")
    started = exec_in(host, "systemctl", "show", "sample-app.service", "-p", "ExecMainStartTimestamp",
                      "--timestamp=unix", "--value").stdout.strip()
    return {
        "ref": exec_in(host, *git, "refs/heads/deployed").stdout.strip(),
        "head": exec_in(host, *git, "HEAD").stdout.strip(),
        "unit_started_at": float(started.lstrip("@") or 0),
    }


def schema_revision(lab: Lab) -> str:
    db = lab.group("database")[0]
    return exec_in(db, "runuser", "-u", "postgres", "--", "psql", "-At", "-d", "sampleapp", "-c",
                   "SELECT version_num FROM alembic_version").stdout.strip()


def stuck_ids(lab: Lab, host: Host) -> list[str]:
    return [s["incident_id"] for s in (deploys.agent_status(lab, host) or {}).get("stuck") or []]


def run(
    lab: Lab, timeout: float = 480, rate: float = 15.0, warmup: float = 20.0, quiet_load: bool = False
) -> incident.Report:
    shas = deploys.host_release_shas(lab)
    apps = lab.group("app")
    statuses = {h.name: deploys.agent_status(lab, h) for h in apps}
    if any(s is None for s in statuses.values()):
        raise SystemExit("lab: an agent does not answer: is the lab up? (make lab)")
    waves = {name: (st.get("fleet") or {}).get("wave") for name, st in statuses.items() if st}
    canary = next((h for h in apps if waves.get(h.name) == 0), None)
    if canary is None or not any((w or 0) > 0 for w in waves.values()):
        raise SystemExit(f"lab: the agents do not roll back in waves ({waves}): converge the lab (make lab)")
    if any(deploys.current_sha(s) != shas[BASE] for s in statuses.values()):
        step(f"the app hosts do not all run {BASE}: deploying {BASE} first")
        if deploys.deploy(lab, BASE, force=True, quiet=True) != 0:
            raise SystemExit(f"lab: deploying {BASE} failed (see the newest log in {STATE / 'logs'})")
    step(
        f"canary fails: deploy {RELEASE} ({shas[RELEASE][:10]}) under load, then leave a ref lock file in "
        f"{canary.name}'s repository; expected: {ALERT}, {canary.name} (wave 0) failed, the later waves "
        "aborted and untouched"
    )
    load = incident.steady_load(lab, timeout + warmup, rate, warmup, quiet_load)
    report = incident.Report(RELEASE, ALERT, shas[RELEASE], shas[BASE], time.time())
    follower = incident.Follower(lab, report, time.monotonic())
    follower.baseline()
    result: dict[str, int] = {}
    deployer = threading.Thread(
        target=lambda: result.update(rc=deploys.deploy(lab, RELEASE, force=True, quiet=True)), daemon=True
    )
    follower.say(f"deploying {RELEASE} with playbooks/deploy.yml -e force=true", "1")
    deployer.start()
    deadline = time.monotonic() + timeout
    planted = False
    try:
        while time.monotonic() < deadline:
            follower.poll()
            st = deploys.agent_status(lab, canary) or {}
            if not planted and deploys.current_sha(st) == report.bad_sha and st.get("in_progress") is None:
                plant_lock(canary)
                planted = True
                report.mark("cause")
                follower.say(f"{canary.name}: ref lock file left in the repository ({LOCK_FILE})", "1;33")
            if not deployer.is_alive() and "deploy_done" not in report.marks:
                report.mark("deploy_done")
                report.deploy_rc = result.get("rc", -1)
                follower.say(f"deploy.yml finished (rc {report.deploy_rc})", "1")
                if report.deploy_rc != 0:
                    report.reason = f"the deploy of {RELEASE} failed (rc {report.deploy_rc})"
                    break
            if all(results(report, h.name) for h in apps):
                break
            time.sleep(1)
        for host in apps:  # before the cleanup: what the failed wave left on each host
            report.checks[host.name] = read_host(lab, host)
        report.checks["schema"] = schema_revision(lab)
        for host in apps:
            report.final_sha[host.name] = deploys.current_sha(deploys.agent_status(lab, host))
    finally:
        load.terminate()
        load.wait(10)
        if planted:
            cleanup(lab, report, follower, canary)
    problems = check(report, apps, canary)
    incident.judge(report, problems)
    incident.summarize(report)
    event(f"report: {report.save()}")
    return report


def cleanup(lab: Lab, report: incident.Report, follower: incident.Follower, canary: Host) -> None:
    """What the operator does: remove the fault, resolve a stuck host, put v2 back, let the alerts go."""
    exec_in(canary, "rm", "-f", LOCK_FILE)
    follower.say(f"{canary.name}: lock file removed", "32")
    for host in lab.group("app"):
        for incident_id in stuck_ids(lab, host):
            exec_in(host, "/usr/local/sbin/rollback-agent", "resolve", incident_id, "--note",
                    "lab canary-fails: the ref lock file was removed")
            follower.say(f"{host.name}: rollback-agent resolve {incident_id}", "32")
    follower.say(f"deploying {BASE} again (playbooks/deploy.yml -e force=true)", "1")
    if deploys.deploy(lab, BASE, force=True, quiet=True) != 0:
        report.reason = f"the cleanup's deploy of {BASE} failed (see the newest log in {STATE / 'logs'})"
        return
    report.mark("good_again")
    try:
        took = alerts.wait_resolved(
            lab, lambda a: a["labels"].get("rollback") == "true", RESOLVE_TIMEOUT,
            f"the rollback triggers {RELEASE} fired", follower.poll,
        )
    except TimeoutError as exc:
        report.reason = str(exc)
        return
    report.mark("resolved_after_cleanup")
    follower.say(f"Prometheus: every rollback trigger resolved {took:.0f}s after {BASE} was back", "32")


def check(report: incident.Report, apps: list[Host], canary: Host) -> list[str]:
    """What did not happen as the scenario expects (empty: everything did)."""
    problems = []
    if ALERT not in report.fired:
        problems.append(f"{ALERT} never fired (fired: {report.fired or 'none'})")
    for host in apps:
        done = results(report, host.name)
        if not done:
            problems.append(f"{host.name}: no rollback ended")
            continue
        inc = done[0]
        what = f"{host.name}: {inc['result']} at {inc.get('failed_step')}: {inc.get('error')}"
        if host is canary:
            failed = (inc["result"], inc.get("failed_step")) == ("failed", "initiated")
            if len(done) != 1 or not failed or "lock" not in str(inc.get("error")):
                problems.append(f"{what} ({len(done)} ended; expected one, failed at initiated: lock file)")
            continue
        # Each later trigger of the bad release (TransactionProcessingFailure after CriticalErrorRate)
        # may start another wait on app2: every one stops on the canary, the first on its failure.
        if not str(inc.get("error")).startswith(f"canary {canary.name} failed at initiated"):
            problems.append(f"{what} (expected aborted by the canary's failure)")
        others = [i for i in done if i["result"] != "aborted" or not str(i.get("error")).startswith("canary")]
        if others:
            problems.append(f"{host.name}: not aborted by the canary: {others}")
        seen = report.checks.get(host.name) or {}
        if not (seen.get("ref") == seen.get("head") == report.bad_sha):
            problems.append(f"{host.name}: ref/HEAD moved: {seen}")
        if float(seen.get("unit_started_at") or 0) >= float(inc.get("started_at") or 0):
            problems.append(f"{host.name}: sample-app was restarted during the incident: {seen}")
    if report.checks.get("schema") != "0003":
        problems.append(f"the schema is at {report.checks.get('schema')}, not v3's 0003")
    if "resolved_after_cleanup" not in report.marks:
        problems.append("the alerts did not resolve after the cleanup")
    return problems
