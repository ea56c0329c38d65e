"""End to end on the lab: a bad release under load is rolled back by the product itself.

Real Prometheus (mon1, mon2) evaluates the rules on the sample service's metrics, real
Alertmanager (a two-node cluster) routes the alert to `rollback-trigger`, the real agents on
app1 and app2 roll back (app1 with the database), and the capture server records what Slack,
PagerDuty and email would have received. Each incident runs once per module (fixtures) and the
tests check its outcome from every side.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest
from lab_kit import deploys, incident, services
from lab_kit.inventory import Lab
from lab_kit.podman import exec_in as in_host
from testkit.lab import INCIDENT_TIMEOUT, ensure_good, new_incidents, wait_cooldown

pytestmark = pytest.mark.e2e

@pytest.fixture(scope="module")
def v3(lab: Lab, shas: dict[str, str]) -> incident.Report:
    ensure_good(lab, shas)
    wait_cooldown(lab)
    report = incident.run(lab, "v3", timeout=INCIDENT_TIMEOUT, quiet_load=True)
    time.sleep(20)  # Alertmanager resends while the alert resolves: give duplicates time to arrive
    return report


def test_prometheus_fires_and_alertmanager_routes_to_rollback_trigger(v3: incident.Report) -> None:
    assert "CriticalErrorRate" in v3.fired, v3.fired
    assert "pending" in v3.marks and "firing" in v3.marks, v3.events
    assert v3.marks["pending"] <= v3.marks["firing"]
    assert "rollback-trigger" in v3.am_receivers, v3.am_receivers
    assert "critical-alerts" in v3.am_receivers, v3.am_receivers


def test_both_agents_roll_back_exactly_once(lab: Lab, v3: incident.Report) -> None:
    assert v3.success, v3.reason
    for host in ("app1", "app2"):
        incs = new_incidents(v3, host)
        executed = [i for i in incs if i["status"] not in ("blocked", "dry_run")]
        assert len(executed) == 1, f"{host}: {incs}"
        assert executed[0]["result"] == "success"
        assert executed[0]["from_sha"] == v3.bad_sha and executed[0]["to_sha"] == v3.good_sha
        # every later webhook of the same alert was recognised, none started another rollback
        st = deploys.agent_status(lab, lab.hosts[host]) or {}
        later = [
            i
            for i in st.get("history") or []
            if i["incident_id"] not in {x["incident_id"] for x in incs}
            and (i.get("created_at") or 0) > v3.started_at
        ]
        assert not [i for i in later if i["status"] not in ("blocked", "dry_run")], later


def test_app1_downgrades_the_database_and_app2_does_not(v3: incident.Report) -> None:
    (app1,) = [i for i in new_incidents(v3, "app1") if i["result"]]
    (app2,) = [i for i in new_incidents(v3, "app2") if i["result"]]
    assert (app1["from_revision"], app1["to_revision"]) == ("0003", "0002")
    phases1 = {p["name"]: p for p in app1["phases"]}
    assert phases1["database"]["status"] in ("success", "done", "ok"), phases1["database"]
    assert "alembic downgrade 0002" in (phases1["database"]["detail"] or "")
    phases2 = {p["name"]: p for p in app2["phases"]}
    assert app2["to_revision"] is None
    assert "database" not in phases2 or "skipped" in (phases2["database"]["detail"] or ""), phases2
    assert {"application"} <= set(phases1) and {"application"} <= set(phases2)


def test_app1_wave_0_rolls_back_first_and_app2_waits_for_it(lab: Lab, v3: incident.Report) -> None:
    """Issue 13: the lab's agents roll back in waves; the order is read from their own records."""
    for host, wave in (("app1", 0), ("app2", 1)):
        st = deploys.agent_status(lab, lab.hosts[host]) or {}
        assert (st.get("fleet") or {}).get("wave") == wave, (host, st.get("fleet"))
        assert v3.waves[host] == wave, v3.waves
    (app1,) = [i for i in new_incidents(v3, "app1") if i["result"]]
    (app2,) = [i for i in new_incidents(v3, "app2") if i["result"]]
    phases1 = {p["name"]: p for p in app1["phases"]}
    phases2 = {p["name"]: p for p in app2["phases"]}
    assert "waiting_for_wave" not in phases1, phases1  # the canary acts at once
    waited = phases2["waiting_for_wave"]
    assert app2["phases"][0]["name"] == "waiting_for_wave", app2["phases"]
    # app2 was waiting while app1 rolled back, and changed nothing before app1 had succeeded
    assert waited["started_at"] < app1["ended_at"] <= waited["ended_at"], (waited, app1["ended_at"])
    assert phases2["initiated"]["started_at"] >= app1["ended_at"], (phases2["initiated"], app1["ended_at"])
    fleet = app2["detail"]["fleet"]
    assert fleet["outcome"] == "proceed" and fleet["wave"] == 1, fleet
    assert fleet["peers"]["app1"]["state"] == "succeeded" and fleet["peers"]["app1"]["wave"] == 0, fleet
    # the summary's timeline shows the same order
    lines = incident.wave_lines(v3)
    assert [line.split(" ")[0] for line in lines] == ["app1", "app2"], lines
    assert "waiting_for_wave" in lines[1] and "waiting_for_wave" not in lines[0], lines


def test_hosts_run_v2_with_the_deployment_ref_moved(
    lab: Lab, v3: incident.Report, shas: dict[str, str]
) -> None:
    for host in lab.group("app"):
        ref = in_host(host, "git", "-C", "/srv/sample-app", "rev-parse", "refs/heads/deployed").stdout.strip()
        head = in_host(host, "git", "-C", "/srv/sample-app", "rev-parse", "HEAD").stdout.strip()
        assert ref == head == shas["v2"], host.name
        with urllib.request.urlopen(f"http://{host.address}:8000/version", timeout=5) as resp:
            assert json.loads(resp.read())["release"] == "v2"


def app_sql(lab: Lab, query: str) -> list[str]:
    """The rows of a query on the sample service's database (app1), one string each."""
    out = in_host(lab.hosts["app1"], "runuser", "-u", "postgres", "--", "psql", "-At", "-d", "sampleapp",
                  "-c", query)
    return out.stdout.split()


def test_database_is_at_v2s_revision(lab: Lab, v3: incident.Report) -> None:
    assert app_sql(lab, "SELECT version_num FROM alembic_version") == ["0002"]
    columns = app_sql(
        lab, "SELECT column_name FROM information_schema.columns WHERE table_name='transactions'"
    )
    assert "fee" not in columns and "category" in columns


def test_units_restarted_and_healthy(lab: Lab, v3: incident.Report) -> None:
    for host in lab.group("app"):
        (inc,) = [i for i in new_incidents(v3, host.name) if i["result"]]
        show = in_host(
            host,
            "systemctl",
            "show",
            "sample-app.service",
            "-p",
            "ActiveState",
            "-p",
            "ExecMainStartTimestamp",
            "--timestamp=unix",
        ).stdout
        props = dict(line.split("=", 1) for line in show.split("\n") if "=" in line)
        assert props["ActiveState"] == "active"
        started = float(props["ExecMainStartTimestamp"].lstrip("@"))
        assert started >= inc["started_at"] - 1, f"{host.name}: the unit was not restarted by the rollback"
        with urllib.request.urlopen(f"http://{host.address}:8000/health", timeout=5) as resp:
            assert json.loads(resp.read())["status"] == "healthy"


def test_the_alert_resolves(lab: Lab, v3: incident.Report) -> None:
    assert "resolved" in v3.marks, v3.events
    url = f"http://127.0.0.1:{lab.hosts['mon1'].port('prometheus')}/api/v1/alerts"
    alerts = incident.get_json(url)["data"]["alerts"]
    assert not [a for a in alerts if a["labels"]["alertname"] == "CriticalErrorRate"]


def test_slack_shows_every_phase_with_one_incident_id(lab: Lab, v3: incident.Report) -> None:
    agent_paths = ("/slack/rollback-agent", "/slack-api/chat.postMessage")  # flat, or one thread each
    msgs = [m for m in services.messages(lab, "slack") if m["meta"]["path"] in agent_paths]
    for host, wanted in (
        ("app1", ["initiated", "database", "application", "success"]),
        ("app2", ["initiated", "application", "success"]),
    ):
        (inc,) = [i for i in new_incidents(v3, host) if i["result"]]
        # the messages about this incident: "<stage title>: INC-... on <host>"
        mine = [m for m in msgs if str(m["raw"].get("text", "")).endswith(f"{inc['incident_id']} on {host}")]
        kinds = [m["raw"]["attachments"][0]["footer"].split("· ")[-1] for m in mine]
        positions = [kinds.index(k) for k in wanted if k in kinds]
        assert positions == sorted(positions) and len(positions) == len(wanted), f"{host}: {kinds}"
        # one incident id per message header and attachment title line
        for m in mine:
            header = m["raw"]["attachments"][0]["text"].splitlines()[0]
            assert re.findall(r"INC-[A-Za-z0-9-]+", header) == [inc["incident_id"]], header
        assert re.search(r"\[#+\.*\]|█", mine[0]["text"]) or "Progress" in mine[0]["text"]


def test_the_critical_alert_also_reached_pagerduty_and_email(lab: Lab, v3: incident.Report) -> None:
    after = v3.started_at
    pd = [m for m in services.messages(lab, "pagerduty") if m["time"] >= after]
    mail = [m for m in services.messages(lab, "email") if m["time"] >= after]
    for name in v3.fired:  # every rollback trigger is critical: it pages and mails too
        assert any(name in json.dumps(m["raw"]) for m in pd), (name, [m["title"] for m in pd])
        assert any(name in (m["title"] + m["text"]) for m in mail), (name, [m["title"] for m in mail])


def test_deploying_v3_again_is_refused_without_force(lab: Lab, v3: incident.Report) -> None:
    proc = in_host(lab.hosts["app1"], "/usr/local/sbin/rollback-agent", "deploy", "v3", check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "bad" in (proc.stdout + proc.stderr).lower()
    st = deploys.agent_status(lab, lab.hosts["app1"]) or {}
    assert st["deployment"]["sha"] == v3.good_sha  # nothing moved


def test_one_incident_per_host_no_blocked_message_and_the_rollback_confirmed(
    lab: Lab, v3: incident.Report
) -> None:
    """Issue 11: later triggers of the bad release are attached or duplicates, never a second
    incident or a "blocked" message; the alerts resolved, so each rollback is confirmed."""
    for host in ("app1", "app2"):
        incs = new_incidents(v3, host)
        assert [i["status"] for i in incs] == ["success"], f"{host}: {incs}"
        assert (incs[0].get("verification") or {}).get("state") == "confirmed", incs[0]
    later = [m for m in services.messages(lab, "slack") if m["time"] >= v3.started_at]
    assert not [m for m in later if "Automated rollback blocked" in m.get("text", "")], later
