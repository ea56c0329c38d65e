"""One decision path: ``POST .../test`` answers what the webhook decides for the same alert.

Each case sets a real host up (git, alembic, the ledger, the lock) in dry-run mode, asks
``POST /api/admin/rollback/test`` first (which records nothing), then sends the same alert to
the webhook, and compares the decision, its reason and the plan with its guards.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from agent_support import AgentEnv, basic_auth, payload

pytestmark = pytest.mark.agent

TEST = "/api/admin/rollback/test"
TRIGGER = "/api/admin/rollback/trigger"
ALERT_LABELS = {"service": "mita-api", "severity": "critical"}


def _roll_back_for_real(env: AgentEnv) -> None:
    """A live rollback (v3 -> v2) that the guards then count."""
    response = env.client().post(TRIGGER, json=payload(fingerprint="fp-first"), headers=basic_auth())
    assert response.status_code == 202, response.get_json()
    assert env.wait_incident(response.get_json()["incident_id"])["status"] == "success"


def _window(env: AgentEnv) -> None:
    env.sql("UPDATE deploys SET deployed_at = deployed_at - 3*3600")


def _cooldown(env: AgentEnv) -> None:
    _roll_back_for_real(env)
    assert env.deploy("v3", force=True).result == "deployed"  # by hand, minutes later


def _daily_cap(env: AgentEnv) -> None:
    env.write_config(guards={"cooldown": "1s", "max_rollbacks_per_day": 1})
    _roll_back_for_real(env)
    assert env.deploy("v3", force=True).result == "deployed"
    time.sleep(1.1)


def _after_rollback(env: AgentEnv) -> None:
    _roll_back_for_real(env)


def _frozen(env: AgentEnv) -> None:
    from rollback_agent.cli import main

    assert (
        main(["--config", str(env.config_path), "freeze", "--for", "1h", "--reason", "db maintenance"]) == 0
    )


def _no_target(env: AgentEnv) -> None:
    env.sql("UPDATE deploys SET outcome='unhealthy' WHERE sha != ?", env.shas["v3"])


def _auto_rollback_off(env: AgentEnv) -> None:
    env.write_config(
        triggers={
            "CriticalErrorRate": {"trigger": "error_rate_threshold", "reason": "r", "auto_rollback": False}
        }
    )


def _nothing(env: AgentEnv) -> None:
    return None


CASES: list[tuple[str, Callable[[AgentEnv], None], dict[str, Any], str, str]] = [
    # (id, set-up, alert, expected decision, part of the reason)
    ("non_trigger", _nothing, {"name": "HighErrorRate"}, "ignored", "is not a rollback trigger"),
    (
        "out_of_scope",
        _nothing,
        {"labels": {"service": "billing"}},
        "ignored",
        "label service='billing' does not match scope",
    ),
    ("resolved", _nothing, {"status": "resolved"}, "ignored", "resolved alert"),
    ("auto_rollback_off", _auto_rollback_off, {}, "ignored", "has auto_rollback: false"),
    ("window", _window, {}, "blocked", "blocked by rollback_window"),
    ("cooldown", _cooldown, {}, "blocked", "blocked by cooldown"),
    ("daily_cap", _daily_cap, {}, "blocked", "blocked by daily_cap"),
    ("no_target", _no_target, {}, "blocked", "blocked by target_release"),
    ("in_progress", _nothing, {}, "in_progress", "deploy v4 is running"),
    ("after_rollback", _after_rollback, {}, "attached", "attached to its verification"),
    ("frozen", _frozen, {}, "blocked", "blocked by freeze: frozen until"),
    ("medium", _nothing, {"name": "UserRegistrationDown"}, "waiting", "confidence medium: waiting"),
    ("accepted", _nothing, {}, "dry_run", "dry run: would roll back"),
    ("accepted_live", _nothing, {"live": True}, "accepted", "rolling back"),
]


def _timeless(text: str) -> str:
    # "deployed 3.2s ago" moves between two requests; the rest of a reason may not.
    return re.sub(r"[0-9][0-9.dhms]* ago", "T ago", text)


def _guards(guards: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(g["name"], g["ok"], g["enforced"], _timeless(g["detail"])) for g in guards]


@pytest.mark.parametrize(
    ("setup", "alert", "expected", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_test_endpoint_and_webhook_decide_the_same(
    agent_env: AgentEnv,
    setup: Callable[[AgentEnv], None],
    alert: dict[str, Any],
    expected: str,
    reason: str,
) -> None:
    env = agent_env
    setup(env)
    env.clear_calls()
    live = alert.get("live", False)
    env.write_config(dry_run=not live)
    name = alert.get("name", "CriticalErrorRate")
    status = alert.get("status", "firing")
    labels = {**ALERT_LABELS, **alert.get("labels", {})}
    client = env.client()
    incidents_before = env.sql("SELECT count(*) FROM incidents")

    def both() -> tuple[dict[str, Any], dict[str, Any]]:
        asked = client.post(
            TEST,
            json={"alert_name": name, "labels": {**labels, "alertname": name}, "status": status},
            headers=basic_auth(),
        )
        assert asked.status_code == 200, asked.get_json()
        assert env.sql("SELECT count(*) FROM incidents") == incidents_before  # the test records nothing
        sent = client.post(
            TRIGGER,
            json=payload(name, status=status, fingerprint=f"fp-{name}-{status}", labels=alert.get("labels")),
            headers=basic_auth(),
        )
        return asked.get_json(), sent.get_json()

    if expected == "in_progress":
        with env.agent().lock().acquire("deploy", "v4"):
            simulated, decided = both()
    else:
        simulated, decided = both()

    assert simulated["would"] == decided["status"] == expected, (simulated, decided)
    assert decided["alerts"][0]["decision"] == expected
    assert reason in decided["reason"], decided
    # The same reason; `test` may name the known triggers after it.
    assert _timeless(simulated["reason"]).startswith(_timeless(decided["reason"])), (simulated, decided)
    assert simulated["executed"] is False
    if expected in ("blocked", "dry_run", "accepted"):
        plan = simulated["plan"]
        shown = {k: v for k, v in decided["plan"].items() if k != "downgrade"}
        assert shown == {k: plan[k] for k in ("from_sha", "to_sha", "to_revision", "units")}
        if expected == "accepted":  # the answer shows the downgrade the test endpoint previewed
            assert decided["plan"]["downgrade"]["classification"] == plan["downgrade"]["classification"]
            assert decided["plan"]["downgrade"]["action"] == plan["downgrade"]["action"]
        assert _guards(decided["guards"]) == _guards(plan["guards"])
        blocked = next((g["name"] for g in plan["guards"] if not g["ok"] and g["name"] != "dry_run"), None)
        assert plan["blocked_by"] == blocked
        incident = env.wait_incident(decided["incident_id"])
        assert incident["status"] == ("success" if live else expected)
    else:
        # Ignored, busy, waiting or attached: the webhook made no plan and opened no incident.
        assert "plan" not in decided
        if expected == "attached":  # to the rollback that put v2 in place
            assert decided["incident_id"] == env.sql("SELECT id FROM incidents")[0][0]
        else:
            assert "incident_id" not in decided
        assert env.sql("SELECT count(*) FROM incidents") == incidents_before
    rolled_back_before = setup is _after_rollback
    if live:
        assert env.restarts() == ["restart app.service", "restart worker.service"]
        assert env.deployed_sha() == env.shas["v2"]
    else:  # dry run: nothing executed
        assert env.restarts() == []
        assert env.deployed_sha() == env.shas["v2" if rolled_back_before else "v3"]


def test_the_cli_test_command_decides_as_the_webhook(agent_env: AgentEnv, capsys) -> None:
    """``rollback-agent test`` is the same path: window guard, then an out-of-scope label."""
    import json

    from rollback_agent.cli import main

    env = agent_env
    _window(env)
    env.write_config(dry_run=True)
    assert main(["--config", str(env.config_path), "--json", "test", "CriticalErrorRate"]) == 0
    simulated = json.loads(capsys.readouterr().out)
    decided = env.client().post(TRIGGER, json=payload(), headers=basic_auth()).get_json()
    assert simulated["would"] == decided["status"] == "blocked"
    assert _timeless(simulated["reason"]) == _timeless(decided["reason"])
    assert _guards(simulated["plan"]["guards"]) == _guards(decided["guards"])
    code = main(
        [
            "--config",
            str(env.config_path),
            "--json",
            "test",
            "CriticalErrorRate",
            "--label",
            "service=billing",
        ]
    )
    simulated = json.loads(capsys.readouterr().out)
    decided = (
        env.client()
        .post(
            TRIGGER,
            json=payload(fingerprint="fp-billing", labels={"service": "billing"}),
            headers=basic_auth(),
        )
        .get_json()
    )
    assert code == 0 and simulated["would"] == decided["status"] == "ignored"
    assert simulated["reason"] == decided["reason"]
