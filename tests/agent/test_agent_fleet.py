"""Rollbacks in waves: three real agents (gunicorn on loopback, real git and alembic), app1 the canary.

Each agent has its own copy of the repository (v1, v2, v3 deployed) and database; the Slack capture
server is shared. The agents ask each other over HTTP (``GET /api/admin/rollback/fleet``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_gunicorn import Gunicorn
from agent_support import AgentEnv, CaptureServer, _copy_template, payload, run_cli
from testkit.net import wait_for

pytestmark = pytest.mark.agent

REPO = Path(__file__).resolve().parents[2]
HOSTS = ("app1", "app2", "app3")


class Fleet:
    """Three agents of one fleet; ``waves`` maps host -> wave, ``down`` hosts are never started."""

    def __init__(self, root: Path, template: dict[str, Any], capture: CaptureServer) -> None:
        self.envs: dict[str, AgentEnv] = {}
        self.servers: dict[str, Gunicorn] = {}
        for name in HOSTS:
            (root / name).mkdir()
            _copy_template(template["root"], root / name)
            db = root / name / "db" / "app.db"
            env = AgentEnv(root / name, template["shas"], capture, f"sqlite:///{db}")
            env.clear_calls()
            self.envs[name] = env
            self.servers[name] = Gunicorn(env, workers=2)
            env.write_config(host=name)

    def configure(self, waves: dict[str, int], **fleet: Any) -> None:
        for name, env in self.envs.items():
            peers = [{"host": other, "url": self.servers[other].base} for other in HOSTS if other != name]
            settings = {"wave": waves[name], "peers": peers, "wave_timeout": "3m", "poll_interval": "0.2s"}
            settings.update(fleet.get(name, {}))
            env.write_config(fleet=settings)

    def start(self, *names: str) -> None:
        for name in names:
            self.servers[name].start()

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


@pytest.fixture
def fleet(tmp_path: Path, deployed_template: dict[str, Any], capture: CaptureServer) -> Iterator[Fleet]:
    group = Fleet(tmp_path, deployed_template, capture)
    try:
        yield group
    finally:
        group.stop()


def phase(incident: dict[str, Any], name: str) -> dict[str, Any]:
    found = [p for p in incident["phases"] if p["name"] == name]
    assert found, f"no phase {name} in {[p['name'] for p in incident['phases']]}"
    return found[0]


def trigger_all(fleet: Fleet, *names: str) -> dict[str, str]:
    """Alertmanager sends the same webhook to every agent at once."""
    ids = {}
    for name in names:
        answer = fleet.servers[name].trigger()
        assert answer.status_code == 202, answer.text
        ids[name] = answer.json()["incident_id"]
    return ids


def unchanged(env: AgentEnv) -> None:
    """The host still runs v3: ref, code, schema, and no restart was asked for."""
    assert env.deployed_sha() == env.shas["v3"]
    assert env.head_sha() == env.shas["v3"]
    assert env.db_revision() == "c3000003"
    assert env.restarts() == []


def test_canary_first_then_the_rest_in_order(fleet: Fleet) -> None:
    fleet.configure({"app1": 0, "app2": 1, "app3": 1})
    fleet.start(*HOSTS)
    # The later waves get the webhook first: they must still wait for the canary.
    ids = trigger_all(fleet, "app2", "app3", "app1")
    done = {name: fleet.envs[name].wait_incident(ids[name], timeout=90) for name in HOSTS}
    assert {name: inc["status"] for name, inc in done.items()} == dict.fromkeys(HOSTS, "success")
    canary = done["app1"]
    assert canary["phases"][0]["name"] == "initiated"  # wave 0 never waits
    for name in ("app2", "app3"):
        inc = done[name]
        waiting = phase(inc, "waiting_for_wave")
        started = phase(inc, "initiated")["started_at"]
        # The timestamps prove the order: wave 1 changed nothing before the canary had succeeded.
        assert started >= canary["ended_at"], (started, canary["ended_at"])
        assert waiting["started_at"] < canary["ended_at"]
        record = inc["detail"]["fleet"]
        assert record["outcome"] == "proceed" and record["wave"] == 1
        assert record["reason"] == "earlier waves succeeded: app1" and "unreachable" not in record
        assert record["peers"]["app1"]["state"] == "succeeded"
        assert record["peers"]["app1"]["wave"] == 0
        other = "app3" if name == "app2" else "app2"
        assert record["peers"][other]["state"] == "not_earlier"
        assert "earlier waves succeeded: app1" in waiting["detail"]
        assert fleet.envs[name].deployed_sha() == fleet.envs[name].shas["v2"]
        assert fleet.envs[name].db_revision() == "b2000002"
    # Each host's view for the fleet (what fleet-status prints).
    view = fleet.servers["app2"].get("/api/admin/rollback/fleet").json()
    assert view["host"] == "app2" and view["wave"] == 1
    assert view["release"]["sha"] == fleet.envs["app2"].shas["v2"]
    assert view["incident"]["incident_id"] == ids["app2"] and view["incident"]["result"] == "success"
    texts = "\n".join(fleet.envs["app1"].server.texts())  # type: ignore[union-attr]
    assert "waiting for the earlier waves" in texts


def test_canary_failure_aborts_the_rest_and_changes_nothing(fleet: Fleet) -> None:
    fleet.configure({"app1": 0, "app2": 1, "app3": 1})
    fleet.envs["app1"].control_file("fail-restart")
    fleet.start(*HOSTS)
    ids = trigger_all(fleet, "app1", "app2", "app3")
    canary = fleet.envs["app1"].wait_incident(ids["app1"], timeout=90)
    assert canary["status"] == "failed" and canary["failed_step"] == "application"
    for name in ("app2", "app3"):
        env = fleet.envs[name]
        inc = env.wait_incident(ids[name], timeout=60)
        assert inc["status"] == "aborted" and inc["result"] == "aborted", inc
        assert inc["failed_step"] == "waiting_for_wave"
        assert inc["error"].startswith("canary app1 failed at application: "), inc["error"]
        assert "nothing was changed" in inc["error"]
        assert [p["name"] for p in inc["phases"]] == ["waiting_for_wave"]
        assert inc["detail"]["fleet"]["outcome"] == "aborted"
        unchanged(env)
        status = fleet.servers[name].get("/api/admin/rollback/status").json()
        assert status["history"][0]["result"] == "aborted"
        assert status["fleet"]["wave"] == 1
    server = fleet.envs["app1"].server
    assert server is not None
    aborted = [t for k, t in zip(server.kinds(), server.texts(), strict=True) if k == "aborted"]
    wait_for(
        lambda: len([k for k in server.kinds() if k == "aborted"]) == 2, 20, "two 'aborted' Slack messages"
    )
    aborted = [t for k, t in zip(server.kinds(), server.texts(), strict=True) if k == "aborted"]
    assert all("canary app1 failed at application" in t for t in aborted), aborted
    assert all("The code was not switched" in t for t in aborted)


def test_canary_unreachable_follows_on_peer_unreachable(fleet: Fleet) -> None:
    fleet.configure(
        {"app1": 0, "app2": 1, "app3": 1},
        app2={"wave_timeout": "2s", "on_peer_unreachable": "proceed"},
        app3={"wave_timeout": "2s", "on_peer_unreachable": "abort"},
    )
    fleet.start("app2", "app3")  # app1, the canary, is down
    ids = trigger_all(fleet, "app2", "app3")
    went = fleet.envs["app2"].wait_incident(ids["app2"], timeout=90)
    assert went["status"] == "success", went
    record = went["detail"]["fleet"]
    assert record["outcome"] == "proceed" and record["unreachable"] == ["app1"]
    assert "on_peer_unreachable=proceed" in record["reason"] and "no answer" in record["reason"]
    assert record["waited"] >= 2.0
    assert fleet.envs["app2"].deployed_sha() == fleet.envs["app2"].shas["v2"]
    stopped = fleet.envs["app3"].wait_incident(ids["app3"], timeout=60)
    assert stopped["status"] == "aborted", stopped
    assert "on_peer_unreachable=abort" in stopped["error"]
    assert stopped["detail"]["fleet"]["unreachable"] == ["app1"]
    unchanged(fleet.envs["app3"])


def test_duplicate_and_agent_restart_during_the_wait(fleet: Fleet) -> None:
    fleet.configure({"app1": 0, "app2": 1, "app3": 1}, app2={"wave_timeout": "5m"})
    fleet.start(*HOSTS)
    app2 = fleet.servers["app2"]
    body = payload()
    first = app2.trigger(body)
    assert first.status_code == 202, first.text
    incident_id = first.json()["incident_id"]

    def waiting() -> dict[str, Any] | None:
        busy = app2.get("/api/admin/rollback/status").json()["in_progress"]
        return busy if busy and busy.get("phase") == "waiting_for_wave" and busy.get("fleet") else None

    busy = wait_for(waiting, 20, "app2 to wait for its wave")
    assert busy["incident_id"] == incident_id
    assert busy["fleet"]["wave"] == 1 and busy["fleet"]["awaiting"] == ["app1"]
    assert busy["fleet"]["peers"]["app1"]["detail"] == "no rollback of this release yet"
    resend = app2.trigger(body)  # Alertmanager repeats the same notification (same alert instance)
    assert resend.status_code == 200 and resend.json()["status"] == "duplicate", resend.text
    # The agent restarts (systemctl restart of gunicorn): the rollback process keeps waiting.
    app2.stop()
    app2.start()
    assert waiting() is not None
    # The canary rolls back; app2 follows.
    canary_id = trigger_all(fleet, "app1")["app1"]
    canary = fleet.envs["app1"].wait_incident(canary_id, timeout=90)
    assert canary["status"] == "success"
    inc = fleet.envs["app2"].wait_incident(incident_id, timeout=90)
    assert inc["status"] == "success", inc
    assert phase(inc, "initiated")["started_at"] >= canary["ended_at"]
    unchanged(fleet.envs["app3"])  # never triggered: its wave does not start it


def test_kill_9_during_the_wait_is_interrupted(fleet: Fleet) -> None:
    fleet.configure({"app1": 0, "app2": 1, "app3": 1})
    fleet.start("app2")
    app2 = fleet.servers["app2"]
    incident_id = trigger_all(fleet, "app2")["app2"]
    busy = wait_for(
        lambda: (
            (app2.get("/api/admin/rollback/status").json()["in_progress"] or {}).get("phase")
            == "waiting_for_wave"
            and fleet.envs["app2"].agent().in_progress()
        ),
        20,
        "app2 to wait for its wave",
    )
    runner = busy["runner_pid"]
    os.kill(runner, signal.SIGKILL)
    killed = time.monotonic()
    inc = fleet.envs["app2"].wait_incident(incident_id, timeout=10)
    assert time.monotonic() - killed < 5
    assert inc["status"] == "interrupted"
    error = inc["error"]
    assert error.startswith("runner exited with signal 9 (SIGKILL) during waiting_for_wave"), error
    unchanged(fleet.envs["app2"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(runner, 0)
        raise AssertionError("the runner still runs")


def test_the_canary_s_rollback_of_an_earlier_deploy_of_the_release_is_not_this_one(fleet: Fleet) -> None:
    """The same release deployed again is a new occurrence: app1's failed rollback of the earlier
    deploy of v3 neither stops app2 nor answers for app1's rollback of the new one."""
    fleet.configure({"app1": 0, "app2": 1, "app3": 1})
    for env in fleet.envs.values():
        env.write_config(guards={"cooldown": "1s", "clock_skew": "1s"})
    fleet.envs["app1"].control_file("fail-restart")
    fleet.start(*HOSTS)  # app3 (wave 1) answers but is never triggered
    ids = trigger_all(fleet, "app1", "app2")
    assert fleet.envs["app1"].wait_incident(ids["app1"], timeout=90)["status"] == "failed"
    assert fleet.envs["app2"].wait_incident(ids["app2"], timeout=60)["status"] == "aborted"
    (fleet.envs["app1"].control / "fail-restart").unlink()
    from rollback_agent.stuck import resolve

    resolve(fleet.envs["app1"].agent(), ids["app1"], "the unit restarts again")  # what the operator does
    time.sleep(2)  # the cooldown, and the old incident ends more than clock_skew before the new deploy
    for name in ("app1", "app2"):  # v3 deployed again (forced: it is marked bad)
        assert fleet.envs[name].deploy("v3", force=True).result == "deployed"
    app2 = fleet.servers["app2"]
    second = app2.trigger(payload(fingerprint="fp-error-rate-2"))  # a new firing, after the deploy
    assert second.status_code == 202, second.text

    def waiting() -> dict[str, Any] | None:
        busy = app2.get("/api/admin/rollback/status").json()["in_progress"]
        asked = ((busy or {}).get("fleet") or {}).get("peers", {}).get("app1", {}).get("answered")
        return busy if asked else None

    busy = wait_for(waiting, 20, "app2 to have asked app1")
    assert busy["phase"] == "waiting_for_wave", busy  # not aborted by the earlier failure
    assert busy["fleet"]["peers"]["app1"]["detail"] == "no rollback of this release yet", busy["fleet"]
    time.sleep(1)
    assert app2.get("/api/admin/rollback/status").json()["in_progress"]["phase"] == "waiting_for_wave"
    canary_id = fleet.servers["app1"].trigger(payload(fingerprint="fp-error-rate-2")).json()["incident_id"]
    canary = fleet.envs["app1"].wait_incident(canary_id, timeout=90)
    assert canary["status"] == "success", (canary.status, canary.reason)
    inc = fleet.envs["app2"].wait_incident(second.json()["incident_id"], timeout=90)
    assert inc["status"] == "success", inc
    assert phase(inc, "initiated")["started_at"] >= canary["ended_at"]


def test_fleet_configuration_is_validated(tmp_path: Path) -> None:
    from rollback_agent.config import ConfigError, parse_config

    base: dict[str, Any] = {
        "host": "app2",
        "auth": {"password_file": "/etc/x"},
        "deployment": {"repo": "/srv/app"},
        "services": {"units": ["app.service"]},
    }

    def problems(fleet: Any) -> str:
        with pytest.raises(ConfigError) as caught:
            parse_config({**base, "fleet": fleet})
        return caught.value.render()

    assert parse_config(base).fleet is None  # no fleet: today's behaviour
    ok = parse_config(
        {**base, "fleet": {"wave": 1, "peers": [{"host": "app1", "url": "https://app1:9095/"}]}}
    )
    assert ok.fleet is not None and ok.fleet.peers[0].url == "https://app1:9095"
    assert ok.fleet.wave_timeout == 300.0 and ok.fleet.on_peer_unreachable == "proceed"
    assert "fleet.wave" in problems({"wave": -1})
    peer = {"host": "app1", "url": "http://app1:9095"}
    assert "listed twice" in problems({"peers": [peer, peer]})
    assert "http:// or https://" in problems({"peers": [{"host": "app1", "url": "ftp://app1"}]})
    assert "fleet.wave_timeout" in problems({"wave_timeout": "inf"})
    assert "fleet.wave_timeout" in problems({"wave_timeout": 0})
    assert "on_peer_unreachable" in problems({"on_peer_unreachable": "maybe"})
    assert "itself" in problems({"peers": [{"host": "app2", "url": "http://app2:9095"}]})
    assert "unknown key 'wave_timout'" in problems({"wave_timout": "5m"})


def test_cli_rollback_fleet_and_fleet_status(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    fleet.configure({"app1": 0, "app2": 1, "app3": 1})
    fleet.start("app1", "app3")
    app2 = fleet.envs["app2"]
    canary_id = trigger_all(fleet, "app1")["app1"]
    canary = fleet.envs["app1"].wait_incident(canary_id, timeout=90)
    assert canary["status"] == "success"
    code, out, err = run_cli(app2, capsys, "--json", "rollback", "--fleet", "--reason", "follow the canary")
    assert code == 0, (out, err)
    data = json.loads(out)
    assert data["result"] == "success"
    names = [p["name"] for p in data["phases"]]
    assert names[:2] == ["waiting_for_wave", "initiated"], names
    assert "earlier waves succeeded: app1" in data["phases"][0]["detail"]
    assert data["phases"][1]["started_at"] >= canary["ended_at"]
    assert app2.deployed_sha() == app2.shas["v2"]

    fleet.servers["app3"].stop()
    code, out, _ = run_cli(app2, capsys, "fleet-status")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["host", "wave", "release", "last", "incident", "result", "verification"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == ["app1", "app2", "app3"]  # by wave, then name
    assert canary_id in rows["app1"] and "success" in rows["app1"] and app2.shas["v2"][:10] in rows["app1"]
    assert data["incident_id"] in rows["app2"] and rows["app2"].split()[1] == "1"
    assert "NO ANSWER" in rows["app3"] and "ConnectionError" in rows["app3"]
    code, out, _ = run_cli(app2, capsys, "--json", "fleet-status")
    status = json.loads(out)
    assert status["ok"] is False
    assert [h["host"] for h in status["hosts"] if h["answered"]] == ["app1", "app2"]

    # Without a fleet: --fleet is a usage error, nothing runs.
    fleet.envs["app3"].overrides.pop("fleet")
    fleet.envs["app3"].write_config()
    code, _, err = run_cli(fleet.envs["app3"], capsys, "rollback", "--fleet")
    assert code == 2 and "--fleet needs a fleet: section" in err
    unchanged(fleet.envs["app3"])


def test_fleet_status_playbook_prints_the_table(fleet: Fleet, tmp_path: Path) -> None:
    fleet.configure({"app1": 0, "app2": 1, "app3": 1})
    fleet.start("app1", "app2")  # app3 is down
    canary_id = trigger_all(fleet, "app1")["app1"]
    assert fleet.envs["app1"].wait_incident(canary_id, timeout=90)["status"] == "success"
    # The operator command the role installs, for app2's agent.
    cli = tmp_path / "rollback-agent"
    config = fleet.envs["app2"].config_path
    cli.write_text(f'#!/bin/sh\nexec {sys.executable} -m rollback_agent --config {config} "$@"\n')
    cli.chmod(0o755)
    environ = {**os.environ, "ANSIBLE_NOCOLOR": "1"}
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            *("-i", "localhost,", "-c", "local"),
            str(REPO / "playbooks" / "fleet-status.yml"),
            *("-e", "fleet_status_group=all", "-e", f"ansible_python_interpreter={sys.executable}"),
            *("-e", "ansible_become=false", "-e", f"rollback_agent_cli_path={cli}"),
        ],
        capture_output=True,
        text=True,
        env=environ,
        timeout=180,
        check=False,
    )
    out = done.stdout
    assert done.returncode != 0, out  # app3 does not answer: the play fails after the table
    assert "some agents of the fleet did not answer" in out
    table = [line for line in out.splitlines() if "app1 " in line or "app3 " in line or "host " in line]
    assert any(canary_id in line and "success" in line for line in table), out
    assert any("NO ANSWER" in line for line in table), out
    fleet.start("app3")
    again = subprocess.run(done.args, capture_output=True, text=True, env=environ, timeout=180, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "NO ANSWER" not in again.stdout and canary_id in again.stdout
