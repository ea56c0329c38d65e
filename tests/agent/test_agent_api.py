"""The HTTP contract: authentication, JSON errors, status, the test endpoint, health and metrics."""

from __future__ import annotations

import json
import logging

import pytest
from agent_support import SECRET, SLACK_PATH, basic_auth, payload

pytestmark = pytest.mark.agent

TRIGGER = "/api/admin/rollback/trigger"
STATUS = "/api/admin/rollback/status"
TEST = "/api/admin/rollback/test"


@pytest.fixture(scope="module")
def shared_client(shared_env):
    return shared_env.client()


@pytest.fixture
def client(agent_env):
    agent_env.write_config(dry_run=True)
    return agent_env.client()


@pytest.mark.parametrize("path", [TRIGGER, STATUS, TEST, "/api/admin/rollback/history"])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic_auth(password="wrong"),
        basic_auth(user="someone", password=SECRET),
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic not-base64!"},
        {"Authorization": f"Token {SECRET}"},
    ],
)
def test_admin_routes_need_the_secret(shared_client, path, headers) -> None:
    method = shared_client.get if path.endswith(("status", "history")) else shared_client.post
    response = method(path, json=payload(), headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")


def test_basic_and_bearer_are_accepted(shared_client) -> None:
    assert shared_client.get(STATUS, headers=basic_auth()).status_code == 200
    assert shared_client.get(STATUS, headers={"Authorization": f"Bearer {SECRET}"}).status_code == 200


def test_health_and_metrics_need_no_auth(client) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.get_json() == {
        "status": "ok",
        "version": "0.1.0",
        "host": "app1",
        "mode": "dry_run",
        "rollback_in_progress": False,
        "stuck": [],
    }
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.mimetype == "text/plain"
    assert client.get("/openapi.yaml").status_code == 200


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"not json", "the body is not valid JSON"),
        (b"[1, 2]", "the body must be a JSON object"),
        (
            json.dumps({"version": "3", "status": "firing", "alerts": []}).encode(),
            "version: unsupported webhook version",
        ),
        (json.dumps({"version": "4", "alerts": []}).encode(), "status: missing"),
        (json.dumps({"version": "4", "status": "firing"}).encode(), "alerts: missing"),
        (
            json.dumps(
                {"version": "4", "status": "firing", "alerts": [{"status": "firing", "labels": {}}]}
            ).encode(),
            "alerts[0].labels: every alert needs an 'alertname' label",
        ),
        (
            json.dumps(
                {
                    "version": "4",
                    "status": "firing",
                    "alerts": [{"status": "odd", "labels": {"alertname": "x"}}],
                }
            ).encode(),
            "alerts[0].status:",
        ),
    ],
)
def test_malformed_payload_is_a_400_naming_the_problem(shared_client, body, detail) -> None:
    response = shared_client.post(
        TRIGGER, data=body, headers={**basic_auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    data = response.get_json()
    assert data["error"] == "invalid_payload" and detail in data["detail"], data


def test_body_over_one_mebibyte_is_a_413(shared_client) -> None:
    big = payload()
    big["commonAnnotations"]["padding"] = "x" * (1024 * 1024)
    response = shared_client.post(TRIGGER, json=big, headers=basic_auth())
    assert response.status_code == 413
    assert response.get_json()["error"] == "payload_too_large"


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", TRIGGER), ("put", STATUS), ("get", TEST), ("post", "/healthz"), ("delete", TRIGGER)],
)
def test_wrong_method_is_a_405(shared_client, method, path) -> None:
    response = getattr(shared_client, method)(path, headers=basic_auth())
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"
    assert "Allow" in response.headers


def test_unknown_path_is_a_json_404(shared_client) -> None:
    response = shared_client.get("/api/admin/rollback/nope", headers=basic_auth())
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


def test_status_shows_deployment_triggers_and_history(agent_env, client) -> None:
    client.post(TRIGGER, json=payload(), headers=basic_auth())
    data = client.get(STATUS, headers=basic_auth()).get_json()
    assert data["agent"] == {**data["agent"], "version": "0.1.0", "host": "app1", "mode": "dry_run"}
    assert len(data["monitored_triggers"]) == 7
    deployment = data["deployment"]
    assert deployment["sha"] == agent_env.shas["v3"] and deployment["ref"] == "refs/heads/deployed"
    assert deployment["alembic_revision"] == "c3000003" and deployment["deployed_at"] > 0
    assert deployment["subject"] == "release v3"
    assert data["in_progress"] is None
    item = data["history"][0]
    assert item["status"] == "dry_run" and item["alert_name"] == "CriticalErrorRate"
    for key in (
        "incident_id",
        "from_sha",
        "to_sha",
        "from_revision",
        "to_revision",
        "started_at",
        "ended_at",
        "duration",
        "result",
        "phases",
    ):
        assert key in item
    hook = data["recent_webhooks"][0]
    assert hook["status"] == "dry_run" and hook["alert_count"] == 1
    assert hook["alerts"][0]["alertname"] == "CriticalErrorRate"
    assert hook["alerts"][0]["decision"] == "dry_run"
    for raw in ("abc", "0", "501", "\u00b2", "\u0663", "-1", "1e2", "0" * 4000):
        bad = client.get(STATUS, query_string={"limit": raw}, headers=basic_auth())
        assert bad.status_code == 400 and "limit" in bad.get_json()["detail"], raw
    for path in (STATUS, "/api/admin/rollback/history"):
        assert client.get(path, query_string={"limit": "500"}, headers=basic_auth()).status_code == 200


def test_test_endpoint_reports_the_plan_and_executes_nothing(agent_env) -> None:
    env = agent_env
    client = env.client()
    before = env.sql("SELECT count(*) FROM incidents")
    data = client.post(TEST, json={"alert_name": "CriticalErrorRate"}, headers=basic_auth()).get_json()
    assert data["would"] == "accepted" and data["executed"] is False and data["config_ok"] is True
    assert data["trigger"]["trigger"] == "error_rate_threshold"
    assert data["plan"]["to_sha"] == env.shas["v2"] and data["plan"]["to_revision"] == "b2000002"
    assert data["plan"]["units"] == ["app.service", "worker.service"]
    assert {g["name"]: g["ok"] for g in data["plan"]["guards"]} == {
        "deployment": True,
        "freeze": True,
        "stuck": True,
        "arrived_by_deploy": True,
        "rollback_window": True,
        "cooldown": True,
        "daily_cap": True,
        "target_release": True,
        "dry_run": True,
    }
    assert {c["name"] for c in data["checks"]} >= {
        "config",
        "state_dir",
        "deployment.repo",
        "deployment.ref",
        "migrations.command",
        "services.restart_command",
        "notify.slack",
    }
    # The form field works too; unknown alerts say so.
    form = client.post(TEST, data={"alert_name": "HighErrorRate"}, headers=basic_auth()).get_json()
    assert form["would"] == "ignored" and "not a rollback trigger" in form["reason"]
    missing = client.post(TEST, json={}, headers=basic_auth())
    assert missing.status_code == 400 and "alert_name is required" in missing.get_json()["detail"]
    assert env.sql("SELECT count(*) FROM incidents") == before
    assert env.restarts() == [] and env.server.messages == []


def test_test_endpoint_shows_a_blocking_guard(agent_env) -> None:
    agent_env.sql("UPDATE deploys SET deployed_at = deployed_at - 3*3600")
    data = (
        agent_env.client()
        .post(TEST, json={"alert_name": "CriticalErrorRate"}, headers=basic_auth())
        .get_json()
    )
    assert data["would"] == "blocked" and data["reason"].startswith("blocked by rollback_window")


def test_metrics_count_webhooks_and_rollbacks(agent_env) -> None:
    env = agent_env
    client = env.client()

    def value(name: str) -> float:
        text = client.get("/metrics").get_data(as_text=True)
        for line in text.splitlines():
            if line.startswith(name + " ") or (line.startswith(name + "{") and line.split(" ")[0] == name):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    ignored = 'rollback_agent_webhooks_total{outcome="ignored"}'
    unauthorized = 'rollback_agent_webhooks_total{outcome="unauthorized"}'
    before = value(ignored), value(unauthorized)
    client.post(TRIGGER, json=payload(status="resolved"), headers=basic_auth())
    client.post(TRIGGER, json=payload(), headers=basic_auth(password="nope"))
    assert value(ignored) == before[0] + 1 and value(unauthorized) == before[1] + 1
    text = client.get("/metrics").get_data(as_text=True)
    for name in (
        "rollback_agent_rollback_in_progress 0.0",
        "rollback_agent_info{",
        "# TYPE rollback_agent_rollbacks_total",
        "# TYPE rollback_agent_rollback_duration_seconds histogram",
        "rollback_agent_last_rollback_timestamp_seconds",
        "rollback_agent_release_deployed_timestamp_seconds",
    ):
        assert name in text, name


def test_secrets_never_reach_answers_or_logs(agent_env, caplog) -> None:
    env = agent_env
    caplog.set_level(logging.DEBUG)
    env.server.slack_statuses = [404]  # a broken Slack URL gets logged: without the URL
    client = env.client()
    env.write_config(dry_run=True)
    client = env.client()
    bodies = [
        client.post(TRIGGER, json=payload(), headers=basic_auth()).get_data(as_text=True),
        client.get(STATUS, headers=basic_auth()).get_data(as_text=True),
        client.post(TEST, json={"alert_name": "CriticalErrorRate"}, headers=basic_auth()).get_data(
            as_text=True
        ),
        client.post(TRIGGER, json=payload(), headers=basic_auth(password="wrong")).get_data(as_text=True),
        client.get("/metrics").get_data(as_text=True),
    ]
    env.agent().notifier.flush(5)
    import time

    time.sleep(0.5)
    everything = "\n".join(bodies) + caplog.text
    assert SECRET not in everything
    assert SLACK_PATH.rsplit("/", 1)[-1] not in everything
    assert "Slack notification" in caplog.text  # the failure was logged, without the URL
