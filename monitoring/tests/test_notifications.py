"""The notification templates and receivers, rendered by a real Alertmanager.

The configuration comes from roles/monitoring_config with the overrides a lab or a test sets:
the Slack URL (in the secret file, as in production), the PagerDuty URL and the SMTP smarthost
point at local capture servers (pytest-httpserver, aiosmtpd with authentication). Alertmanager
runs on loopback with a free port and no cluster. Alerts are posted through its v2 API with the
labels and annotation texts of the real rules.
"""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from monitoring_support import Render, render_fixture
from pytest_httpserver import HTTPServer
from testkit.net import free_port, wait_for
from testkit.services import alertmanager
from werkzeug import Request, Response

pytestmark = [
    pytest.mark.monitoring,
    # The capture server takes AUTH without TLS on loopback on purpose.
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

SECRETS = {
    "pagerduty_critical_key": "pd-critical-0123456789abcdef",
    "pagerduty_error_key": "pd-error-fedcba9876543210",
    "sendgrid_api_key": "SG.test-sendgrid-key",
    "rollback_webhook_secret": "webhook-secret-of-the-agents",
}
NEVER = [{"years": ["1999"]}]  # off-hours that never apply: warnings are delivered
ALWAYS = [{"weekdays": ["sunday:saturday"]}]  # off-hours all the time: warnings are muted


# --- capture servers ----------------------------------------------------------------------------


@dataclass
class Mail:
    login: str
    password: str
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class SmtpCapture:
    password: str
    mails: list[Mail] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password))
        return AuthResult(success=(login == "apikey" and password == self.password), auth_data=auth_data)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        creds = session.auth_data
        assert isinstance(creds, LoginPassword), "mail accepted without authentication"
        message = email.message_from_bytes(envelope.original_content or b"", policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.mails.append(
            Mail(
                creds.login.decode(),
                creds.password.decode(),
                envelope.mail_from or "",
                envelope.rcpt_tos,
                message,
            )
        )
        return "250 OK"


@pytest.fixture(scope="module")
def http_capture() -> Iterator[HTTPServer]:
    """Slack, PagerDuty and the rollback agents' webhook, all on one loopback server."""
    server = HTTPServer(host="127.0.0.1", port=free_port())

    def pagerduty(request: Request) -> Response:
        body = request.get_json()
        return Response(
            json.dumps(
                {"status": "success", "message": "Event processed", "dedup_key": body.get("dedup_key")}
            ),
            status=202,
            content_type="application/json",
        )

    server.expect_request("/v2/enqueue", method="POST").respond_with_handler(pagerduty)
    server.expect_request(re.compile(r"^/(slack|agent\d)(/.*)?$"), method="POST").respond_with_data("ok")
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture(scope="module")
def smtp_capture() -> Iterator[tuple[SmtpCapture, int]]:
    capture = SmtpCapture(password=SECRETS["sendgrid_api_key"])
    port = free_port()
    controller = Controller(
        capture,
        hostname="127.0.0.1",
        port=port,
        authenticator=capture.authenticate,
        auth_required=True,
        auth_require_tls=False,
        # Offer PLAIN only, as SendGrid offers it first (Alertmanager takes the first it knows).
        auth_exclude_mechanism=["LOGIN"],
    )
    controller.start()
    yield capture, port
    controller.stop()


# --- Alertmanager ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def capture_render(
    tmp_path_factory: pytest.TempPathFactory, http_capture: HTTPServer, smtp_capture: tuple[SmtpCapture, int]
) -> tuple[Render, Path]:
    """The monitoring content rendered for local capture servers."""
    base = tmp_path_factory.mktemp("notify")
    secrets = base / "secrets"
    secrets.mkdir(mode=0o700)
    # No trailing newline: Alertmanager 0.25 sends smtp_auth_password_file's content as it is.
    (secrets / "slack_webhook_url").write_text(http_capture.url_for("/slack"))
    for name, value in SECRETS.items():
        (secrets / name).write_text(value)
    render_dir = base / "render"
    render = render_fixture(
        render_dir,
        {
            "alertmanager_secrets_dir": str(secrets),
            "alertmanager_templates_dir": str(render_dir / "fixture" / "templates"),
            "alertmanager_rollback_webhook_urls": [
                http_capture.url_for("/agent1/api/admin/rollback/trigger"),
                http_capture.url_for("/agent2/api/admin/rollback/trigger"),
            ],
            "monitoring_pagerduty_url": http_capture.url_for("/v2/enqueue"),
            "monitoring_smtp_smarthost": f"127.0.0.1:{smtp_capture[1]}",
            "monitoring_smtp_require_tls": False,
            "monitoring_email_to": "oncall@example.com",
            "monitoring_email_from": "alerts@example.com",
            "monitoring_group_wait": "1s",
            "monitoring_group_interval": "2s",
            "monitoring_rollback_group_wait": "1s",
            "monitoring_rollback_group_interval": "2s",
            "monitoring_offhours_time_intervals": NEVER,
        },
    )
    return render, secrets


@dataclass(frozen=True)
class Alertmanager:
    url: str
    log: Path

    def post(self, *alerts: dict[str, Any]) -> None:
        response = requests.post(f"{self.url}/api/v2/alerts", json=list(alerts), timeout=5)
        assert response.status_code == 200, response.text

    def alerts(self, name: str) -> list[dict[str, Any]]:
        response = requests.get(
            f"{self.url}/api/v2/alerts", params={"filter": f'alertname="{name}"'}, timeout=5
        )
        response.raise_for_status()
        return list(response.json())


@contextlib.contextmanager
def running_alertmanager(config: Path, workdir: Path) -> Iterator[Alertmanager]:
    with alertmanager(config, workdir, external_url=True) as am:
        yield Alertmanager(am.url, am.log)


# --- alerts as Prometheus would send them --------------------------------------------------------

STARTS_AT = (datetime.now(timezone.utc) - timedelta(minutes=10)).replace(microsecond=0)
STARTED = STARTS_AT.strftime("%Y-%m-%d %H:%M:%S UTC")


def expand(text: str, labels: dict[str, str], value: str) -> str:
    """Fill the Prometheus template placeholders of an annotation with a sample value."""
    text = re.sub(r"\{\{ \$value(?: \| [^}]+)? \}\}", value, text)
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), text)


def alert_from_rule(
    render: Render,
    name: str,
    value: str,
    extra_labels: dict[str, str] | None = None,
    *,
    resolved: bool = False,
) -> dict[str, Any]:
    (rule,) = [a for a in render.alerts() if a["alert"] == name]
    labels = {"alertname": name, **rule["labels"], **(extra_labels or {})}
    annotations = {k: expand(v, labels, value) for k, v in rule["annotations"].items()}
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": annotations,
        "startsAt": STARTS_AT.isoformat(),
        "generatorURL": f"http://prometheus.example.com:9090/graph?g0.expr={name}",
    }
    alert["endsAt"] = (
        (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()
        if resolved
        else (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    )
    return alert


def requests_to(server: HTTPServer, path_prefix: str) -> list[tuple[Request, dict[str, Any]]]:
    return [(req, req.get_json()) for req, _ in server.log if req.path.startswith(path_prefix)]


def slack_messages(server: HTTPServer) -> list[dict[str, Any]]:
    return [body for _, body in requests_to(server, "/slack")]


def slack_for(
    server: HTTPServer, channel: str, alertname: str, status: str = "firing"
) -> list[dict[str, Any]]:
    found = []
    for body in slack_messages(server):
        attachment = body["attachments"][0]
        title = attachment.get("title", "")
        if body.get("channel") == channel and alertname in title and f"[{status.upper()}" in title:
            found.append(body)
    return found


# --- the tests ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def delivered(
    capture_render: tuple[Render, Path],
    http_capture: HTTPServer,
    smtp_capture: tuple[SmtpCapture, int],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Alertmanager, Render]]:
    """One Alertmanager that received the alerts of every tier, and what it delivered."""
    render, _ = capture_render
    http_capture.clear_log()
    smtp, _ = smtp_capture
    smtp.mails.clear()
    with running_alertmanager(render.alertmanager_yml, tmp_path_factory.mktemp("am-delivered")) as am:
        # The critical alert first, as Prometheus would send it before the warning reaches
        # Alertmanager again: inhibition applies from the moment the inhibitor holds it.
        am.post(alert_from_rule(render, "CriticalErrorRate", "25%"))
        wait_for(lambda: am.alerts("CriticalErrorRate"), 10, "Alertmanager to hold CriticalErrorRate")
        am.post(
            alert_from_rule(render, "HighErrorRate", "25%"),  # same family: inhibited
            alert_from_rule(
                render, "MitaComponentUnhealthy", "0", {"instance": "app1:8000", "check": "email"}
            ),
            alert_from_rule(render, "HighP95Latency", "612ms"),
            alert_from_rule(render, "DatabaseConnectionsHigh", "91", {"instance": "db1:9187"}),
            alert_from_rule(render, "Watchdog", "1"),
        )

        def everything_arrived() -> bool:
            bodies = slack_messages(http_capture)
            return (
                len(bodies) >= 7
                and len(requests_to(http_capture, "/v2/enqueue")) >= 2
                and len(requests_to(http_capture, "/agent")) >= 2
                and len(smtp.mails) >= 1
            )

        try:
            wait_for(everything_arrived, 45, "the notifications of every receiver")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nAlertmanager log:\n{am.log.read_text()[-5000:]}") from None
        time.sleep(3)  # anything that should not arrive has had its chance (group_wait 1s)
        yield am, render


def test_slack_critical_message(delivered: tuple[Alertmanager, Render], http_capture: HTTPServer) -> None:
    am, _ = delivered
    (message,) = slack_for(http_capture, "#mita-alerts", "CriticalErrorRate")
    attachment = message["attachments"][0]
    assert message["username"] == "Alertmanager"
    assert attachment["color"] == "danger"
    assert attachment["pretext"] == "<!here>"
    assert attachment["title"] == ":red_circle: [FIRING:1] CriticalErrorRate (mita-api) critical"
    assert attachment["title_link"] == f"{am.url}/#/alerts?receiver=critical-alerts"
    text = attachment["text"]
    assert "*Firing: mita-api answers more than 20% of requests with 5xx: automated rollback*" in text
    assert "25% of the requests of the last 2m ended in a 5xx status (critical threshold 20%)." in text
    assert "*Value:* `25%`" in text
    assert "`severity=critical`" in text and "`rollback=true`" in text and "`component=api`" in text
    assert (
        "*Runbook:* <https://github.com/example-org/sre-monitoring/blob/main/docs/runbooks/"
        "api-performance.md#criticalerrorrate|CriticalErrorRate>"
    ) in text
    assert f"*Started:* {STARTED}" in text
    assert "<http://prometheus.example.com:9090/graph?g0.expr=CriticalErrorRate|Graph>" in text
    assert attachment["footer"].startswith("mita-api · critical-alerts · Alertmanager http://127.0.0.1:")
    assert attachment["fallback"].startswith("[FIRING] CriticalErrorRate (critical): mita-api answers")


def test_slack_tiers_channels_and_colours(
    delivered: tuple[Alertmanager, Render], http_capture: HTTPServer
) -> None:
    (incident,) = slack_for(http_capture, "#mita-incidents", "CriticalErrorRate")
    assert "pretext" not in incident["attachments"][0]
    (error,) = slack_for(http_capture, "#mita-alerts", "MitaComponentUnhealthy")
    assert error["attachments"][0]["color"] == "danger"
    assert error["attachments"][0]["pretext"] == "<!channel>"
    assert "`check=email`" in error["attachments"][0]["text"]
    assert len(slack_for(http_capture, "#mita-incidents", "MitaComponentUnhealthy")) == 1
    (warning,) = slack_for(http_capture, "#mita-alerts", "HighP95Latency")
    assert warning["attachments"][0]["color"] == "warning"
    assert warning["attachments"][0]["title"].startswith(":warning: [FIRING:1] HighP95Latency")
    assert "pretext" not in warning["attachments"][0]
    # warnings stay out of the incidents channel
    assert slack_for(http_capture, "#mita-incidents", "HighP95Latency") == []
    (database,) = slack_for(http_capture, "#mita-database", "DatabaseConnectionsHigh")
    assert "*Value:* `91`" in database["attachments"][0]["text"]
    assert len(slack_for(http_capture, "#mita-alerts", "DatabaseConnectionsHigh")) == 1


def test_rollback_deployments_message(
    delivered: tuple[Alertmanager, Render], http_capture: HTTPServer
) -> None:
    (message,) = [
        m
        for m in slack_messages(http_capture)
        if m["channel"] == "#mita-deployments" and "CriticalErrorRate" in m["attachments"][0]["title"]
    ]
    attachment = message["attachments"][0]
    assert attachment["title"] == ":rewind: Automated rollback triggered by CriticalErrorRate (mita-api)"
    assert "Alertmanager sent this alert to the rollback agents" in attachment["text"]
    assert "*Value:* `25%`" in attachment["text"]


def test_info_and_inhibited_alerts_notify_no_one(
    delivered: tuple[Alertmanager, Render], http_capture: HTTPServer
) -> None:
    am, _ = delivered
    titles = [m["attachments"][0]["title"] for m in slack_messages(http_capture)]
    assert not [t for t in titles if "Watchdog" in t], "info alerts go nowhere"
    (high,) = am.alerts("HighErrorRate")
    assert high["status"]["state"] == "suppressed", high
    assert high["status"]["inhibitedBy"], high["status"]
    assert not [t for t in titles if "HighErrorRate" in t], "CriticalErrorRate inhibits HighErrorRate"
    (watchdog,) = am.alerts("Watchdog")
    assert watchdog["status"]["state"] == "active"
    assert watchdog["receivers"] == [{"name": "blackhole"}]


def test_pagerduty_events(delivered: tuple[Alertmanager, Render], http_capture: HTTPServer) -> None:
    am, _ = delivered
    events = {body["routing_key"]: body for _, body in requests_to(http_capture, "/v2/enqueue")}
    assert set(events) == {SECRETS["pagerduty_critical_key"], SECRETS["pagerduty_error_key"]}
    critical = events[SECRETS["pagerduty_critical_key"]]
    assert critical["event_action"] == "trigger"
    assert critical["dedup_key"]
    assert critical["client"] == "Alertmanager (mita-api)"
    assert critical["client_url"] == f"{am.url}/#/alerts?receiver=critical-alerts"
    payload = critical["payload"]
    assert payload["severity"] == "critical"
    assert payload["summary"] == (
        "[FIRING:1] CriticalErrorRate mita-api: mita-api answers more than 20% of requests with 5xx: "
        "automated rollback"
    )
    assert payload["component"] == "api"
    assert payload["group"] == "mita-api"
    assert payload["class"] == "CriticalErrorRate"
    details = payload["custom_details"]
    assert details["runbook_url"].endswith("/api-performance.md#criticalerrorrate")
    assert details["rollback"] == "automated rollback triggered: check the rollback agents' status"
    assert f"value=25% since {STARTED}" in details["alerts"]
    assert details["firing"] == "1"
    error = events[SECRETS["pagerduty_error_key"]]
    assert error["payload"]["severity"] == "error"
    summary = error["payload"]["summary"]
    assert summary.startswith("[FIRING:1] MitaComponentUnhealthy mita-api: Health check email")
    assert error["payload"]["custom_details"]["rollback"] == "no automated action"


def test_rollback_webhook_reaches_every_agent_with_basic_auth(
    delivered: tuple[Alertmanager, Render], http_capture: HTTPServer
) -> None:
    hooks = requests_to(http_capture, "/agent")
    paths = sorted(req.path for req, _ in hooks)
    assert paths == ["/agent1/api/admin/rollback/trigger", "/agent2/api/admin/rollback/trigger"]
    credentials = f"alertmanager:{SECRETS['rollback_webhook_secret']}".encode()
    expected = "Basic " + base64.b64encode(credentials).decode()
    for req, body in hooks:
        assert req.headers["Authorization"] == expected
        assert body["version"] == "4"
        assert body["receiver"] == "rollback-trigger"
        assert body["status"] == "firing"
        assert [a["labels"]["alertname"] for a in body["alerts"]] == ["CriticalErrorRate"]
        assert body["commonLabels"]["rollback"] == "true"
        assert body["commonLabels"]["service"] == "mita-api"


def test_email_through_authenticated_smtp(
    delivered: tuple[Alertmanager, Render], smtp_capture: tuple[SmtpCapture, int]
) -> None:
    smtp, _ = smtp_capture
    (mail,) = smtp.mails
    # The password is the content of the sendgrid_api_key file (smtp_auth_password_file).
    assert (mail.login, mail.password) == ("apikey", SECRETS["sendgrid_api_key"])
    assert mail.rcpt_tos == ["oncall@example.com"]
    message = mail.message
    assert message["Subject"] == "[FIRING:1] CRITICAL CriticalErrorRate (mita-api)"
    assert message["From"] == "alerts@example.com"
    assert message["To"] == "oncall@example.com"
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    assert text_part is not None and html_part is not None, "email must have a text and an HTML part"
    text, html = text_part.get_content(), html_part.get_content()
    assert "FIRING: mita-api answers more than 20% of requests with 5xx: automated rollback" in text
    assert "Value:    25%" in text
    assert "Runbook:  https://github.com/example-org/sre-monitoring/blob/main/docs/runbooks/" in text
    assert "<!DOCTYPE html>" in html
    assert "border-top:6px solid #d00000" in html
    runbooks = "https://github.com/example-org/sre-monitoring/blob/main/docs/runbooks"
    assert f'href="{runbooks}/api-performance.md#criticalerrorrate"' in html
    assert "<strong>25%</strong>" in html
    assert STARTED in html


def test_resolved_notifications(
    delivered: tuple[Alertmanager, Render], http_capture: HTTPServer, smtp_capture: tuple[SmtpCapture, int]
) -> None:
    am, render = delivered
    am.post(alert_from_rule(render, "CriticalErrorRate", "25%", resolved=True))
    wait_for(
        lambda: (
            slack_for(http_capture, "#mita-alerts", "CriticalErrorRate", "resolved")
            and [b for _, b in requests_to(http_capture, "/v2/enqueue") if b["event_action"] == "resolve"]
        ),
        30,
        "the resolved notifications",
    )
    (resolved,) = slack_for(http_capture, "#mita-alerts", "CriticalErrorRate", "resolved")
    attachment = resolved["attachments"][0]
    assert attachment["color"] == "good"
    assert "pretext" not in attachment or attachment["pretext"] == "", "no @here for a resolution"
    assert attachment["title"].startswith(":white_check_mark: [RESOLVED] CriticalErrorRate")
    assert "*Resolved:*" in attachment["text"]
    (resolve,) = [b for _, b in requests_to(http_capture, "/v2/enqueue") if b["event_action"] == "resolve"]
    assert resolve["routing_key"] == SECRETS["pagerduty_critical_key"]
    wait_for(
        lambda: len([b for _, b in requests_to(http_capture, "/agent") if b["status"] == "resolved"]) == 2,
        30,
        "the agents to hear about the resolution",
    )
    smtp, _ = smtp_capture
    assert len(smtp.mails) == 1, "no resolution email (monitoring_email_send_resolved is false)"


def test_secrets_stay_out_of_the_running_config(delivered: tuple[Alertmanager, Render]) -> None:
    am, render = delivered
    status = requests.get(f"{am.url}/api/v2/status", timeout=5).text
    text = render.alertmanager_yml.read_text()
    for secret in SECRETS.values():
        assert secret not in status
        assert secret not in text
        assert secret not in am.log.read_text()


def test_warnings_are_muted_off_hours_but_not_critical_alerts(
    capture_render: tuple[Render, Path], http_capture: HTTPServer, tmp_path: Path
) -> None:
    render, _ = capture_render
    config = yaml.safe_load(render.alertmanager_yml.read_text())
    (off_hours,) = config["time_intervals"]
    off_hours["time_intervals"] = ALWAYS
    muted_config = tmp_path / "alertmanager.yml"
    muted_config.write_text(yaml.safe_dump(config))
    http_capture.clear_log()
    with running_alertmanager(muted_config, tmp_path / "am") as am:
        am.post(
            alert_from_rule(render, "HighP95Latency", "612ms"),
            alert_from_rule(render, "DatabaseConnectionsHigh", "91", {"instance": "db1:9187"}),
            alert_from_rule(render, "CriticalMemoryUsage", "97.0", {"instance": "app1:9100"}),
            alert_from_rule(
                render, "MitaComponentUnhealthy", "0", {"instance": "app1:8000", "check": "email"}
            ),
        )
        wait_for(
            lambda: (
                slack_for(http_capture, "#mita-alerts", "CriticalMemoryUsage")
                and slack_for(http_capture, "#mita-alerts", "MitaComponentUnhealthy")
            ),
            30,
            "the critical and error notifications",
        )
        time.sleep(4)  # two more group intervals for the warnings to (not) arrive
        titles = [m["attachments"][0]["title"] for m in slack_messages(http_capture)]
        assert not [t for t in titles if "HighP95Latency" in t or "DatabaseConnectionsHigh" in t], titles
        assert "Notify for alerts failed" not in am.log.read_text()
