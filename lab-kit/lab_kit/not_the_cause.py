"""`scripts/lab break --scenario not-the-cause`: an incident the release did not cause.

The agents cannot tell a bad release from a broken dependency; the closed loop can. The scenario:
  1. deploy the healthy release v2.1 over v2 (under load, like every break),
  2. stop Redis on the cache host: RedisConnectionFailure (a rollback trigger) fires,
  3. the agents roll v2.1 back to v2: the alert keeps firing,
  4. after guards.verify_window (lab: 3m) each agent reports `not_confirmed` and escalates
     (Slack with @here, a PagerDuty trigger), and rolls back nothing more (v2 was put in place by a
     rollback: only a person rolls it back),
  5. Redis is started again, whatever happened, and the scenario returns only once Prometheus shows
     the alerts the stop caused (RedisConnectionFailure, the rollback triggers that followed from it
     such as TransactionProcessingFailure, Redis' own alerts) resolved: the next scenario must not
     count them among its own (bounded: RESOLVE_TIMEOUT, then the scenario fails, naming them).
The Report is incident.py's, with the escalations the capture server received.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from lab_kit import alerts, deploys, incident, services
from lab_kit.inventory import Host, Lab
from lab_kit.paths import STATE
from lab_kit.podman import exec_in
from lab_kit.ui import event, step

RELEASE = "v2.1"
BASE = "v2"
ALERT = "RedisConnectionFailure"
REDIS_UNIT = "redis-server"
EXECUTED_NOT = ("blocked", "dry_run")  # incident statuses that ran nothing
RESOLVE_TIMEOUT = 300.0  # seconds for the alerts the stop caused to resolve once Redis runs again


def escalations(lab: Lab, after: int) -> list[str]:
    """The agents' escalations captured since message ``after``: Slack @here and PagerDuty triggers."""
    found = []
    for m in services.messages(lab, after=after):
        text = f"{m.get('title', '')}\n{m.get('text', '')}"
        if m["kind"] == "slack" and "<!here>" in text and "not_confirmed" in text:
            first = str(m.get("text") or "").strip().split("\n", 1)[0]  # "<!here> ...: INC-... on app1"
            found.append(f"slack {m.get('channel', '')}: {first[:140]}")
        elif m["kind"] == "pagerduty" and "did not clear" in text:
            found.append(f"pagerduty: {m.get('title', '')[:100]}")
    return found


def executed(report: incident.Report, host: str) -> list[dict[str, Any]]:
    return [i for i in report.incidents.get(host, {}).values() if i["status"] not in EXECUTED_NOT]


def verified(report: incident.Report, apps: list[Host]) -> bool:
    """Every app host's rollback has ended its verification (confirmed or not)."""
    return all(
        any(
            (i.get("verification") or {}).get("state") in ("confirmed", "not_confirmed")
            for i in executed(report, h.name)
        )
        for h in apps
    )


def wait_cooldown(lab: Lab, follower: incident.Follower) -> None:
    """The agents' cooldown (lab: 30 s) since their last rollback, so the trigger is judged on its own."""
    cooldown = last = 0.0
    for host in lab.group("app"):
        st = deploys.agent_status(lab, host) or {}
        cooldown = max(cooldown, float((st.get("guards") or {}).get("cooldown") or 0))
        last = max([last, *[float(i.get("ended_at") or 0) for i in st.get("history") or []]])
    while time.time() < last + cooldown + 2:
        follower.poll()
        time.sleep(1)


def run(
    lab: Lab, timeout: float = 600, rate: float = 15.0, warmup: float = 20.0, quiet_load: bool = False
) -> incident.Report:
    shas = deploys.host_release_shas(lab)
    apps = lab.group("app")
    current = {h.name: deploys.current_sha(deploys.agent_status(lab, h)) for h in apps}
    if None in current.values():
        raise SystemExit("lab: an agent does not answer: is the lab up? (make lab)")
    if any(sha != shas[BASE] for sha in current.values()):
        step(f"the app hosts do not all run {BASE} ({current}): deploying {BASE} first")
        if deploys.deploy(lab, BASE, force=True, quiet=True) != 0:
            raise SystemExit(f"lab: deploying {BASE} failed (see the newest log in {STATE / 'logs'})")
    cache = lab.group("cache")[0]
    step(
        f"not the cause: deploy the healthy {RELEASE} ({shas[RELEASE][:10]}) over {BASE} under load, "
        f"then stop Redis on {cache.name}; expected: {ALERT}, a rollback, not_confirmed, an escalation, "
        "no second rollback"
    )
    load = incident.steady_load(lab, timeout + warmup, rate, warmup, quiet_load)
    report = incident.Report(RELEASE, ALERT, shas[RELEASE], shas[BASE], time.time(), label="healthy release")
    follower = incident.Follower(lab, report, time.monotonic())
    follower.baseline()
    capture_from = follower.capture_after
    deadline = time.monotonic() + timeout
    redis_stopped = False
    before: set[tuple[tuple[str, str], ...]] = set()
    try:
        # --force: v2.1 is marked bad after an earlier run of this scenario (the agents rolled it back)
        follower.say(f"deploying {RELEASE} with playbooks/deploy.yml -e force=true", "1")
        report.deploy_rc = deploys.deploy(lab, RELEASE, force=True, quiet=True)
        report.mark("deploy_done")
        follower.poll()
        if report.deploy_rc != 0:
            report.reason = f"the deploy of {RELEASE} failed (rc {report.deploy_rc})"
        else:
            wait_cooldown(lab, follower)
            before = {alerts.key(a) for a in alerts.active(lab)}  # not the scenario's doing
            follower.say(f"stopping {REDIS_UNIT} on {cache.name}: the release is not the cause", "1;33")
            exec_in(cache, "systemctl", "stop", REDIS_UNIT)
            redis_stopped = True
            report.mark("cause")
            while time.monotonic() < deadline and not verified(report, apps):
                follower.poll()
                time.sleep(1)
            settle = time.monotonic() + 30  # the escalation's messages; time for a second rollback to show
            while time.monotonic() < settle:
                follower.poll()
                time.sleep(1)
    finally:
        load.terminate()
        load.wait(10)
        if redis_stopped:
            exec_in(cache, "systemctl", "start", REDIS_UNIT)
            follower.say(f"{REDIS_UNIT} on {cache.name} started again", "32")
            wait_caused_alerts(lab, report, follower, before)
    for host in apps:
        report.final_sha[host.name] = deploys.current_sha(deploys.agent_status(lab, host))
    found = report.escalations = escalations(lab, capture_from)
    problems = check(report, apps, found)
    incident.judge(report, problems)
    incident.summarize(report)
    print("    escalations captured:", flush=True)
    for line in found or ["none"]:
        print(f"      {line}", flush=True)
    event(f"report: {report.save()}")
    return report


def caused(before: set[tuple[tuple[str, str], ...]]) -> Callable[[alerts.Alert], bool]:
    """The alerts the stop of Redis caused: rollback triggers and Redis' alerts not active before it."""

    def concerned(alert: alerts.Alert) -> bool:
        labels = alert["labels"]
        related = labels.get("rollback") == "true" or "redis" in labels.get("alertname", "").lower()
        return related and alerts.key(alert) not in before

    return concerned


def wait_caused_alerts(
    lab: Lab, report: incident.Report, follower: incident.Follower, before: set[tuple[tuple[str, str], ...]]
) -> None:
    follower.say(f"waiting (at most {RESOLVE_TIMEOUT:.0f}s) for the alerts the stop caused to resolve", "33")
    try:
        took = alerts.wait_resolved(
            lab, caused(before), RESOLVE_TIMEOUT, f"the alerts caused by stopping {REDIS_UNIT}", follower.poll
        )
    except TimeoutError as exc:
        report.reason = str(exc)
        follower.say(str(exc), "1;31")
        return
    report.mark("caused_alerts_resolved")
    follower.say(f"Prometheus: the alerts the stop caused resolved {took:.0f}s after Redis started", "32")


def check(report: incident.Report, apps: list[Host], found: list[str]) -> list[str]:
    """What did not happen as the scenario expects (empty: everything did)."""
    problems = []
    if ALERT not in report.fired:
        problems.append(f"{ALERT} never fired (fired: {report.fired or 'none'})")
    for host in apps:
        done = executed(report, host.name)
        if len(done) != 1:
            problems.append(f"{host.name}: {len(done)} rollbacks (expected exactly one)")
            continue
        inc = done[0]
        state = (inc.get("verification") or {}).get("state")
        if inc.get("result") != "success" or state != "not_confirmed":
            problems.append(f"{host.name}: {inc['incident_id']} {inc.get('result')}, verification {state}")
        if report.final_sha.get(host.name) != report.good_sha:
            problems.append(f"{host.name}: ends on {str(report.final_sha.get(host.name))[:10]}, not {BASE}")
    if not any(line.startswith("slack") for line in found):
        problems.append("no Slack escalation (@here) captured")
    if not any(line.startswith("pagerduty") for line in found):
        problems.append("no PagerDuty escalation captured")
    return problems
