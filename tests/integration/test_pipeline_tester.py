"""pipeline-tester against a real Alertmanager (Debian's 0.25) on loopback.

Slack and PagerDuty are a pytest-httpserver capture, SendGrid an aiosmtpd server with AUTH (plain
and STARTTLS), all on 127.0.0.1; the tester runs as a subprocess exactly as an SRE runs it. The
tests assert what reached each capture, byte for byte where it is a contract (the Slack payload,
the PagerDuty events and their dedup key), the exit status, and that no secret is ever printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
import requests
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pytest_httpserver import HTTPServer
from testkit import services
from testkit.net import free_port
from testkit.tools import require_tool
from werkzeug import Request, Response

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

REPO = Path(__file__).resolve().parents[2]
TESTER = Path(sys.executable).parent / "pipeline-tester"  # the console script scripts/bootstrap installs
SHIM = REPO / "scripts" / "test_alertmanager.py"

# Secrets: distinctive values, so that a leak anywhere in the output is found.
SLACK_PATH = "/services/T0PIPE/B0TEST/slackSecretToken4242"
SLACK_URL = f"https://hooks.slack.com{SLACK_PATH}"
SENDGRID_KEY = "SG.sendgridSecretKey-4242"
PD_CRITICAL = "pdCriticalRoutingKey4242"
PD_ERROR = "pdErrorRoutingKey4242"
ROLLBACK_SECRET = "rollbackWebhookSecret4242"
SECRETS = (SLACK_URL, "slackSecretToken4242", "T0PIPE/B0TEST", SENDGRID_KEY, PD_CRITICAL, PD_ERROR,
           ROLLBACK_SECRET)
SECRET_ENV = {"SLACK_WEBHOOK_URL": SLACK_URL, "SENDGRID_API_KEY": SENDGRID_KEY,
              "PAGERDUTY_CRITICAL_KEY": PD_CRITICAL, "PAGERDUTY_ERROR_KEY": PD_ERROR,
              "ROLLBACK_WEBHOOK_SECRET": ROLLBACK_SECRET}
AM_SMTP_KEY = "SG.alertmanagerKey-4242"  # the key Alertmanager itself sends its mail with
HOST = socket.gethostname()


# --- SMTP capture (SendGrid stand-in) ------------------------------------------------------------
@dataclass
class Mail:
    login: str
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool


@dataclass
class SmtpCapture:
    port: int
    mails: list[Mail] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)  # (user, accepted)


class _Handler:
    def __init__(self, capture: SmtpCapture) -> None:
        self.capture = capture

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else ""
        self.capture.mails.append(Mail(login, envelope.mail_from, list(envelope.rcpt_tos), envelope.content,
                                       session.ssl is not None))
        return "250 OK queued"


@contextlib.contextmanager
def smtp_server(tls_context: ssl.SSLContext | None = None) -> Iterator[SmtpCapture]:
    """aiosmtpd requiring AUTH as apikey; plain text, or STARTTLS required when tls_context is given."""
    capture = SmtpCapture(port=free_port())

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = data.login == b"apikey" and data.password.decode() in (SENDGRID_KEY, AM_SMTP_KEY)
        capture.logins.append((data.login.decode(), ok))
        return AuthResult(success=ok, handled=False, auth_data=data)

    controller = Controller(
        _Handler(capture), hostname="127.0.0.1", port=capture.port, authenticator=authenticate,
        auth_required=True, auth_require_tls=tls_context is not None,
        tls_context=tls_context, require_starttls=tls_context is not None,
        # aiosmtpd's LOGIN challenge ("User Name") is not the "Username:" Alertmanager's client
        # expects; SendGrid offers PLAIN, which Alertmanager and the tester both use.
        auth_exclude_mechanism=["LOGIN"],
    )
    controller.start()
    try:
        yield capture
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpCapture]:
    with smtp_server() as capture:
        yield capture


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: the CA file the tester is given with --smtp-ca-file."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run([require_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


# --- HTTP capture (Slack and PagerDuty stand-in) -------------------------------------------------
@pytest.fixture(scope="module")
def http_capture() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=free_port())
    server.start()
    yield server
    server.clear()
    server.stop()


def pd_ok(request: Request) -> Response:
    body = json.loads(request.get_data())
    answer = {"status": "success", "message": "Event processed", "dedup_key": body.get("dedup_key", "x")}
    return Response(json.dumps(answer), status=202, content_type="application/json")


@pytest.fixture
def capture(http_capture: HTTPServer) -> HTTPServer:
    """Fresh handlers and log per test: Slack answers ok, PagerDuty 202; anything else gets a 500."""
    http_capture.clear()
    http_capture.expect_request(SLACK_PATH, method="POST").respond_with_data("ok")
    http_capture.expect_request("/services/T0AM/B0AM/amSlack", method="POST").respond_with_data("ok")
    http_capture.expect_request("/v2/enqueue", method="POST").respond_with_handler(pd_ok)
    return http_capture


def posts(server: HTTPServer, path: str) -> list[Request]:
    return [req for req, _resp in server.log if req.path == path]


def base(server: HTTPServer) -> str:
    return server.url_for("").rstrip("/")


# --- Alertmanager ---------------------------------------------------------------------------------
AM_CONFIG = """\
global:
  smtp_require_tls: false
route:
  receiver: "null"
  group_by: [alertname, severity]
  # longer than a test alert lives without --e2e, even on a loaded machine: those stay silent
  group_wait: 4s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    # what docs/pipeline-tester.md asks a routing tree to have for --e2e
    - matchers: ['pipeline_test="true"']
      receiver: pipeline-tester
      group_by: ['...']
      group_wait: 1s
      continue: true
    - {{matchers: ['team="broken"'], receiver: broken-alerts}}
    - {{matchers: ['severity="critical"'], receiver: critical-alerts}}
    - {{matchers: ['severity="error"'], receiver: error-alerts}}
    - {{matchers: ['severity="warning"'], receiver: warning-alerts}}
receivers:
  - name: "null"
  - name: pipeline-tester
    webhook_configs: [{{url: "http://127.0.0.1:{capture_port}/", send_resolved: false}}]
  - name: critical-alerts
    slack_configs:
      - api_url: {http}/services/T0AM/B0AM/amSlack
        channel: "#mita-alerts"
        title: '[{{{{ .Status }}}}] {{{{ .CommonLabels.alertname }}}}'
    pagerduty_configs: [{{routing_key: am-critical-routing-key, url: "{http}/v2/enqueue"}}]
    email_configs:
      - to: oncall@example.test
        from: alertmanager@example.test
        smarthost: 127.0.0.1:{smtp_port}
        auth_username: apikey
        auth_password: {am_smtp_key}
        require_tls: false
  - name: error-alerts
    slack_configs: [{{api_url: "{http}/services/T0AM/B0AM/amSlack"}}]
    pagerduty_configs: [{{routing_key: am-error-routing-key, url: "{http}/v2/enqueue"}}]
  - name: warning-alerts
    slack_configs: [{{api_url: "{http}/services/T0AM/B0AM/amSlack"}}]
  - name: broken-alerts
    slack_configs: [{{api_url: "{http}/services/T0AM/B0AM/doesNotExist"}}]
"""
NULL_CONFIG = 'route: {receiver: "null", group_wait: 1s}\nreceivers: [{name: "null"}]\n'


@dataclass
class Alertmanager:
    url: str
    capture_port: int  # where its pipeline-tester receiver posts: the tester's --capture-listen
    log: Path


@contextlib.contextmanager
def run_alertmanager(config: str, workdir: Path, *cluster: str, port: int | None = None) -> Iterator[str]:
    """Debian's Alertmanager on 127.0.0.1 with this config; single node unless cluster flags are given."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "alertmanager.yml").write_text(config)
    with services.alertmanager(workdir / "alertmanager.yml", workdir, port=port, cluster=cluster) as am:
        yield am.url


@pytest.fixture(scope="module")
def alertmanager(http_capture: HTTPServer, smtp: SmtpCapture,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    workdir = tmp_path_factory.mktemp("alertmanager")
    capture_port = free_port()
    config = AM_CONFIG.format(capture_port=capture_port, http=base(http_capture), smtp_port=smtp.port,
                              am_smtp_key=AM_SMTP_KEY)
    with run_alertmanager(config, workdir) as url:
        yield Alertmanager(url, capture_port, workdir / "alertmanager.log")


def active_test_alerts(url: str) -> list[dict[str, Any]]:
    answer = requests.get(f"{url}/api/v2/alerts", params={"filter": 'pipeline_test="true"'}, timeout=5)
    answer.raise_for_status()
    return list(answer.json())


# --- running the tester ---------------------------------------------------------------------------
@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    doc: dict[str, Any] | None

    def check(self, name: str) -> dict[str, Any]:
        assert self.doc is not None, self.stdout + self.stderr
        found = [c for c in self.doc["checks"] if c["name"] == name]
        assert found, f"no check {name!r} in {[c['name'] for c in self.doc['checks']]}"
        return found[0]

    def status(self, name: str) -> str:
        return str(self.check(name)["status"])

    def detail(self, name: str) -> str:
        return str(self.check(name)["detail"])

    @property
    def names(self) -> list[str]:
        assert self.doc is not None
        return [c["name"] for c in self.doc["checks"]]

    @property
    def run_id(self) -> str:
        assert self.doc is not None
        return str(self.doc["run_id"])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV and k != "ALERTMANAGER_URL"}
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


def run_tester(args: str, *, env: dict[str, str] | None = None, json_out: bool = True) -> Run:
    """Run the tester with ``args`` (a command line); every output is searched for every secret."""
    cmd = [str(TESTER), *shlex.split(args), *(["--json"] if json_out else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_env() if env is None else env,
                          timeout=120, check=False)
    for secret in SECRETS:
        assert secret not in proc.stdout, f"secret {secret!r} printed on stdout:\n{proc.stdout}"
        assert secret not in proc.stderr, f"secret {secret!r} printed on stderr:\n{proc.stderr}"
    doc = json.loads(proc.stdout) if json_out and proc.stdout.lstrip().startswith("{") else None
    return Run(proc.returncode, proc.stdout, proc.stderr, doc)


def channel_args(capture: HTTPServer, smtp_port: int) -> str:
    return (f"--slack-base-url {base(capture)} --pagerduty-url {capture.url_for('/v2/enqueue')} "
            f"--smarthost 127.0.0.1:{smtp_port} --smtp-security none "
            "--email-to sre-team@example.test --email-from alerts@example.test")


# =================================================================================================
# Alertmanager status
# =================================================================================================
def test_alertmanager_status_reports_version_uptime_cluster_and_config(alertmanager: Alertmanager) -> None:
    run = run_tester(f"--alertmanager-url {alertmanager.url} --only alertmanager")
    assert run.rc == 0, run.stdout + run.stderr
    check = run.check("alertmanager")
    assert check["status"] == "PASS"
    assert (check["data"]["version"], check["data"]["cluster_status"]) == ("0.25.0", "disabled")
    assert 0 <= check["data"]["uptime_s"] < 600
    assert "critical-alerts" in check["data"]["receivers"]
    assert check["detail"].startswith("v0.25.0, up ")
    assert check["detail"].endswith(", cluster disabled (single node), config loaded (6 receivers, "
                                    "0 inhibit rules)")
    assert run.names == ["alertmanager"]  # --only


def test_table_output_and_summary_line(alertmanager: Alertmanager) -> None:
    run = run_tester(f"--alertmanager-url {alertmanager.url} --skip test-alert", json_out=False,
                     env=clean_env(COLUMNS="160"))
    assert run.rc == 0
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL", "DURATION"]
    table = lines[2:lines.index("")]
    rows = {line.split()[0]: line.split()[1] for line in table if line[:1].strip()}
    assert rows == {"alertmanager": "PASS", "slack": "SKIP", "email": "SKIP", "pagerduty:critical": "SKIP",
                    "pagerduty:error": "SKIP", "agents": "SKIP"}
    assert "no Slack webhook URL: set $SLACK_WEBHOOK_URL" in run.stdout
    assert lines[-1].startswith("OK: 1 passed, 0 failed, 5 skipped in ")
    assert "\033[" not in run.stdout  # NO_COLOR


def test_the_old_script_name_runs_the_tester_and_a_python_without_it_says_how() -> None:
    ran = subprocess.run([sys.executable, str(SHIM), "--version"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert (ran.returncode, ran.stdout.strip()) == (0, "pipeline-tester 1.0.0"), ran.stderr
    # -S: no site-packages, like the system python3 that has none of the tester's dependencies
    bare = subprocess.run([sys.executable, "-S", str(SHIM), "--version"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert bare.returncode == 2 and bare.stdout == ""
    assert "Traceback" not in bare.stderr
    assert f"run {TESTER} instead (same flags)" in bare.stderr, bare.stderr


def test_alertmanager_down_fails_with_the_reason_and_exit_1() -> None:
    port = free_port()
    started = time.monotonic()
    # credentials in the URL (Alertmanager behind a proxy with basic auth) are masked like secrets
    run = run_tester(f"--alertmanager-url http://admin:amPassword4242@127.0.0.1:{port} "
                     "--only alertmanager,test-alert --timeout 2 -v")
    assert run.rc == 1
    assert "amPassword4242" not in run.stdout + run.stderr
    assert run.status("alertmanager") == "FAIL"
    assert run.detail("alertmanager") == f"connection refused by 127.0.0.1:{port} (nothing listening?)"
    assert run.status("test-alert") == "FAIL"
    assert run.detail("test-alert") == f"connection refused by 127.0.0.1:{port} (nothing listening?)"
    assert run.doc is not None and run.doc["ok"] is False and run.doc["summary"]["failed"] == 2
    assert time.monotonic() - started < 20


def test_cluster_of_two_reports_peers_and_gets_the_test_alert(tmp_path: Path) -> None:
    p1, p2 = free_port(), free_port()
    c1, c2 = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    with run_alertmanager(NULL_CONFIG, tmp_path / "a", f"--cluster.listen-address={c1}",
                          f"--cluster.advertise-address={c1}", f"--cluster.peer={c2}", port=p1) as a, \
            run_alertmanager(NULL_CONFIG, tmp_path / "b", f"--cluster.listen-address={c2}",
                             f"--cluster.advertise-address={c2}", f"--cluster.peer={c1}", port=p2) as b:
        deadline = time.monotonic() + 30
        while len(requests.get(f"{a}/api/v2/status", timeout=2).json()["cluster"]["peers"]) < 2:
            assert time.monotonic() < deadline, "the two Alertmanagers did not form a cluster"
            time.sleep(0.2)
        run = run_tester(f"--alertmanager-url {a} --alertmanager-url {b} --only alertmanager,test-alert "
                         "--expect-peers 2")
        assert run.rc == 0, run.stdout
        for label in (f"alertmanager[127.0.0.1:{p1}]", f"alertmanager[127.0.0.1:{p2}]"):
            assert run.status(label) == "PASS"
            assert run.check(label)["data"]["cluster_status"] in ("ready", "settling")
            assert len(run.check(label)["data"]["peers"]) == 2
            assert ", 2 peers (" in run.detail(label)
        assert "held by all 2 Alertmanagers, routed to null" in run.detail("test-alert")
        assert active_test_alerts(a) == [] and active_test_alerts(b) == []

        wrong = run_tester(f"--alertmanager-url {a} --only alertmanager --expect-peers 3")
        assert wrong.rc == 1
        assert wrong.detail("alertmanager").startswith("expected 3 cluster peers, found 2 (v0.25.0, up ")


# =================================================================================================
# Slack
# =================================================================================================
def test_slack_posts_the_marked_test_message_byte_for_byte(capture: HTTPServer) -> None:
    run = run_tester(f"--only slack --slack-base-url {base(capture)}",
                     env=clean_env(SLACK_WEBHOOK_URL=SLACK_URL))
    assert run.rc == 0, run.stdout
    assert run.status("slack") == "PASS"
    where = f"{capture.host}:{capture.port}"
    assert run.detail("slack") == f"test message posted via {where} (Slack answered 'ok')"
    [request] = posts(capture, SLACK_PATH)
    assert request.headers["Content-Type"] == "application/json"
    expected = {
        "text": f":test_tube: *[TEST] Alert pipeline test* from `{HOST}` (run `{run.run_id}`): "
                "checking that this webhook delivers. Not an incident, no action needed.",
        "username": "pipeline-tester",
        "attachments": [{
            "color": "good",
            "fallback": f"[TEST] Alert pipeline test {run.run_id}",
            "fields": [{"title": "Run", "value": run.run_id, "short": True},
                       {"title": "From", "value": HOST, "short": True}],
            "footer": "pipeline-tester",
        }],
    }
    assert request.get_data() == json.dumps(expected).encode()


def test_slack_rejected_token_fails_with_the_reason(capture: HTTPServer) -> None:
    capture.clear()
    capture.expect_request(SLACK_PATH).respond_with_data("invalid_token", 403)
    run = run_tester(f"--only slack --slack-base-url {base(capture)}",
                     env=clean_env(SLACK_WEBHOOK_URL=SLACK_URL))
    assert run.rc == 1
    assert run.status("slack") == "FAIL"
    where = f"{capture.host}:{capture.port}"
    assert run.detail("slack") == (f"HTTP 403 from {where}: the webhook token is invalid "
                                   "or revoked (invalid_token / action_prohibited): invalid_token")
    assert len(posts(capture, SLACK_PATH)) == 1  # a 403 is not retried


def test_slack_unreachable_names_the_host_never_the_secret_path() -> None:
    port = free_port()
    run = run_tester(f"--only slack --slack-base-url http://127.0.0.1:{port} --timeout 2 -v",
                     env=clean_env(SLACK_WEBHOOK_URL=SLACK_URL))
    assert run.rc == 1
    assert run.detail("slack") == f"connection refused by 127.0.0.1:{port} (nothing listening?)"
    # --verbose logs the URL with its secret path masked
    assert f"POST http://127.0.0.1:{port}***: attempt 1 failed" in run.stderr


# =================================================================================================
# PagerDuty
# =================================================================================================
def _trigger(key: str, tier: str, run_id: str) -> dict[str, Any]:
    return {
        "routing_key": key,
        "event_action": "trigger",
        "dedup_key": f"pipeline-tester-{run_id}-{tier}",
        "payload": {
            "summary": f"[TEST] Alert pipeline test {run_id} from {HOST}: not an incident, resolves itself",
            "source": HOST,
            "severity": tier,
            "component": "pipeline-tester",
            "group": "monitoring",
            "class": "pipeline-test",
            "custom_details": {
                "run_id": run_id,
                "routing_key": f"{tier} routing key",
                "note": "Sent by pipeline-tester; resolved a moment later. No action needed.",
            },
        },
        "client": "pipeline-tester",
    }


def test_pagerduty_triggers_then_resolves_with_the_same_dedup_key(capture: HTTPServer) -> None:
    run = run_tester(f"--only pagerduty --pagerduty-url {capture.url_for('/v2/enqueue')}",
                     env=clean_env(PAGERDUTY_CRITICAL_KEY=PD_CRITICAL, PAGERDUTY_ERROR_KEY=PD_ERROR))
    assert run.rc == 0, run.stdout
    requests_made = posts(capture, "/v2/enqueue")
    assert len(requests_made) == 4
    assert all(r.headers["Content-Type"] == "application/json" for r in requests_made)
    events = [json.loads(r.get_data()) for r in requests_made]
    for key, tier in ((PD_CRITICAL, "critical"), (PD_ERROR, "error")):
        dedup = f"pipeline-tester-{run.run_id}-{tier}"
        assert [e for e in events if e["routing_key"] == key] == [
            _trigger(key, tier, run.run_id),
            {"routing_key": key, "event_action": "resolve", "dedup_key": dedup},
        ]
        assert run.status(f"pagerduty:{tier}") == "PASS"
        assert run.detail(f"pagerduty:{tier}") == (
            f"test event {dedup} triggered and resolved ({tier} routing key, {capture.host}:{capture.port})")


def test_pagerduty_retries_a_server_error_with_the_same_event(capture: HTTPServer) -> None:
    capture.clear()
    capture.expect_ordered_request("/v2/enqueue").respond_with_data("busy", 503)
    capture.expect_ordered_request("/v2/enqueue").respond_with_handler(pd_ok)
    capture.expect_ordered_request("/v2/enqueue").respond_with_handler(pd_ok)
    run = run_tester(f"--only pagerduty:critical --pagerduty-url {capture.url_for('/v2/enqueue')}",
                     env=clean_env(PAGERDUTY_CRITICAL_KEY=PD_CRITICAL))
    assert run.rc == 0, run.stdout
    bodies = [json.loads(r.get_data()) for r in posts(capture, "/v2/enqueue")]
    assert [b["event_action"] for b in bodies] == ["trigger", "trigger", "resolve"]
    assert bodies[0] == bodies[1]  # the same event and dedup key: PagerDuty counts it once
    assert run.names == ["pagerduty:critical"]


def test_pagerduty_invalid_routing_key_fails_with_pagerdutys_errors(capture: HTTPServer) -> None:
    capture.clear()
    capture.expect_request("/v2/enqueue").respond_with_json(
        {"status": "invalid event", "message": "Event object is invalid", "errors": ["Invalid routing key"]},
        status=400)
    run = run_tester(f"--only pagerduty --pagerduty-url {capture.url_for('/v2/enqueue')}",
                     env=clean_env(PAGERDUTY_CRITICAL_KEY=PD_CRITICAL))
    assert run.rc == 1
    assert run.status("pagerduty:critical") == "FAIL"
    assert run.detail("pagerduty:critical") == (
        "trigger: HTTP 400 (invalid event or routing key): Event object is invalid: Invalid routing key")
    assert run.status("pagerduty:error") == "SKIP"
    assert "$PAGERDUTY_ERROR_KEY" in run.detail("pagerduty:error")
    assert len(posts(capture, "/v2/enqueue")) == 1  # a 400 is not retried


# =================================================================================================
# Email through SendGrid (SMTP AUTH)
# =================================================================================================
def test_email_plain_smtp_with_auth_delivers_the_test_message(smtp: SmtpCapture) -> None:
    before = len(smtp.mails)
    run = run_tester(f"--only email --smarthost 127.0.0.1:{smtp.port} --smtp-security none "
                     "--email-to sre-team@example.test --email-from alerts@example.test",
                     env=clean_env(SENDGRID_API_KEY=SENDGRID_KEY))
    assert run.rc == 0, run.stdout
    assert run.status("email") == "PASS"
    assert run.detail("email") == (f"test message accepted by 127.0.0.1:{smtp.port} for "
                                   "sre-team@example.test (plain text, no TLS)")
    [mail] = smtp.mails[before:]
    assert (mail.login, mail.mail_from, mail.rcpt_tos, mail.tls) == (
        "apikey", "alerts@example.test", ["sre-team@example.test"], False)
    msg = message_from_bytes(mail.data)
    assert msg["Subject"] == f"[TEST] Alert pipeline test {run.run_id} (not an incident)"
    assert msg["X-Alert-Pipeline-Test"] == run.run_id
    assert (msg["From"], msg["To"]) == ("alerts@example.test", "sre-team@example.test")
    assert "Not an incident: no action needed." in msg.get_payload()


def test_email_starttls_verifies_the_server_before_authenticating(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with smtp_server(tls_context=context) as server:
        args = f"--only email --smarthost 127.0.0.1:{server.port} --email-to sre@example.test"
        run = run_tester(f"{args} --smtp-ca-file {cert}", env=clean_env(SENDGRID_API_KEY=SENDGRID_KEY))
        assert run.rc == 0, run.stdout
        assert run.detail("email").endswith("for sre@example.test (STARTTLS)")
        [mail] = server.mails
        assert mail.tls and mail.login == "apikey"

        untrusted = run_tester(args, env=clean_env(SENDGRID_API_KEY=SENDGRID_KEY))
        assert untrusted.rc == 1
        assert untrusted.detail("email").startswith(f"TLS error with 127.0.0.1:{server.port}: ")
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.detail("email")
        assert len(server.logins) == 1  # the key was not sent to the unverified server


def test_email_refuses_to_send_the_key_without_starttls(smtp: SmtpCapture) -> None:
    logins = len(smtp.logins)
    run = run_tester(f"--only email --smarthost 127.0.0.1:{smtp.port} --email-to sre@example.test",
                     env=clean_env(SENDGRID_API_KEY=SENDGRID_KEY))
    assert run.rc == 1
    assert run.detail("email").startswith(f"127.0.0.1:{smtp.port} does not offer STARTTLS: refusing to send "
                                          "the API key in clear text")
    assert len(smtp.logins) == logins


def test_email_auth_failure_fails_with_the_server_answer(smtp: SmtpCapture) -> None:
    before = len(smtp.mails)
    wrong = "SG.wrongKey-4242"
    run = run_tester(f"--only email --smarthost 127.0.0.1:{smtp.port} --smtp-security none "
                     "--email-to sre@example.test", env=clean_env(SENDGRID_API_KEY=wrong))
    assert run.rc == 1
    assert run.status("email") == "FAIL"
    assert run.detail("email") == (f"authentication as 'apikey' failed at 127.0.0.1:{smtp.port}: "
                                   "535 5.7.8 Authentication credentials invalid")
    assert wrong not in run.stdout + run.stderr
    assert smtp.logins[-1] == ("apikey", False)
    assert len(smtp.mails) == before


def test_email_to_a_local_capture_without_auth_says_the_key_was_not_checked() -> None:
    capture = SmtpCapture(port=free_port())
    controller = Controller(_Handler(capture), hostname="127.0.0.1", port=capture.port)  # no AUTH at all
    controller.start()
    try:
        base_args = f"--only email --smarthost 127.0.0.1:{capture.port} --email-to sre@example.test"
        run = run_tester(f"{base_args} --smtp-security none", env=clean_env(SENDGRID_API_KEY=SENDGRID_KEY))
        assert run.rc == 0, run.stdout
        assert run.detail("email").endswith(
            "(plain text, no TLS; the server offers no AUTH: the API key was not checked)")
        assert len(capture.mails) == 1 and capture.mails[0].login == ""
    finally:
        controller.stop()


def test_email_without_recipient_skips_with_the_reason() -> None:
    run = run_tester("--only email", env=clean_env(SENDGRID_API_KEY=SENDGRID_KEY))
    assert run.rc == 0
    assert (run.status("email"), run.detail("email")) == ("SKIP", "no recipient: pass --email-to ADDRESS")


# =================================================================================================
# Agents answering with errors (the real agent: test_pipeline_tester_agents.py)
# =================================================================================================
def test_an_agent_answering_an_error_fails_with_its_json_error(capture: HTTPServer) -> None:
    capture.clear()
    capture.expect_request("/api/admin/rollback/test", method="POST").respond_with_json(
        {"error": "service_unavailable", "detail": "state database is locked"}, status=503)
    run = run_tester(f"--only agents --api-url {base(capture)} --timeout 1",
                     env=clean_env(ROLLBACK_WEBHOOK_SECRET=ROLLBACK_SECRET))
    assert run.rc == 1
    name = f"agent[{capture.host}:{capture.port}]"
    assert run.detail(name) == ("agent refused the test of CriticalErrorRate: HTTP 503: service_unavailable: "
                                "state database is locked")
    [request, *retries] = posts(capture, "/api/admin/rollback/test")
    assert len(retries) == 2  # 503 is retried: the test endpoint executes nothing
    assert request.authorization is not None
    credentials = (request.authorization.username, request.authorization.password)
    assert credentials == ("alertmanager", ROLLBACK_SECRET)
    assert json.loads(request.get_data()) == {"alert_name": "CriticalErrorRate"}

    capture.clear()
    capture.expect_request("/api/admin/rollback/test").respond_with_data("<html>Not Found</html>", 404)
    not_an_agent = run_tester(f"--only agents --api-url {base(capture)}",
                              env=clean_env(ROLLBACK_WEBHOOK_SECRET=ROLLBACK_SECRET))
    assert not_an_agent.rc == 1
    assert not_an_agent.detail(name) == f"{capture.host}:{capture.port} has no /api/admin/rollback/test: " \
        "not a rollback agent?"


# =================================================================================================
# Secrets: where they come from, skips, never printed
# =================================================================================================
def test_missing_secrets_skip_and_fail_on_skip_makes_that_exit_1() -> None:
    run = run_tester("--only slack,email,pagerduty,agents")
    assert run.rc == 0
    assert {c["name"]: c["status"] for c in run.doc["checks"]} == {
        "slack": "SKIP", "email": "SKIP", "pagerduty:critical": "SKIP", "pagerduty:error": "SKIP",
        "agents": "SKIP"}
    assert run.detail("pagerduty:critical") == (
        "no PagerDuty critical routing key: set $PAGERDUTY_CRITICAL_KEY, --pagerduty-critical-key-file or "
        "--secrets-dir")
    assert run.detail("agents") == "no rollback agent: pass --api-url http://HOST:9095 (once per agent)"
    strict = run_tester("--only slack --fail-on-skip")
    assert strict.rc == 1 and strict.doc is not None and strict.doc["ok"] is False


def test_secrets_from_files_and_a_secrets_dir(capture: HTTPServer, tmp_path: Path) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(mode=0o700)
    (secrets_dir / "pagerduty_critical_key").write_text(PD_CRITICAL + "\n")
    slack_file = tmp_path / "slack"
    slack_file.write_text(SLACK_URL + "\n")
    run = run_tester(f"--only slack,pagerduty --secrets-dir {secrets_dir} "
                     f"--slack-webhook-url-file {slack_file} --slack-base-url {base(capture)} "
                     f"--pagerduty-url {capture.url_for('/v2/enqueue')}")
    assert run.rc == 0, run.stdout
    statuses = [run.status(n) for n in ("slack", "pagerduty:critical", "pagerduty:error")]
    assert statuses == ["PASS", "PASS", "SKIP"]
    assert json.loads(posts(capture, "/v2/enqueue")[0].get_data())["routing_key"] == PD_CRITICAL
    assert len(posts(capture, SLACK_PATH)) == 1

    missing = run_tester(f"--only slack --slack-webhook-url-file {tmp_path / 'nope'}", json_out=False)
    assert missing.rc == 2
    assert f"Slack webhook URL: file {tmp_path / 'nope'} does not exist" in missing.stderr
    (tmp_path / "empty").write_text("\n")
    empty = run_tester(f"--only pagerduty --pagerduty-error-key-file {tmp_path / 'empty'}", json_out=False)
    assert empty.rc == 2 and f"file {tmp_path / 'empty'} is empty" in empty.stderr


def test_no_secret_reaches_the_output_or_a_subprocess_argv(
    capture: HTTPServer, smtp: SmtpCapture, alertmanager: Alertmanager, tmp_path: Path,
) -> None:
    """Every check runs, several fail with answers that echo the secrets: nothing leaks anywhere."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    argv_log = tmp_path / "amtool-argv"
    (bindir / "amtool").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {argv_log}\n'
                                   f'exec {require_tool("amtool")} "$@"\n')
    (bindir / "amtool").chmod(0o755)
    capture.clear()
    capture.expect_request(SLACK_PATH).respond_with_data(f"no such hook {SLACK_URL}", 404)
    capture.expect_request("/v2/enqueue").respond_with_data(f"bad keys {PD_ERROR} {PD_CRITICAL}", 400)
    env = clean_env(**SECRET_ENV, PATH=f"{bindir}:{os.environ['PATH']}", COLUMNS="1000")
    dead_agent = f"http://127.0.0.1:{free_port()}"
    for output in ("", "--json"):
        run = run_tester(f"--alertmanager-url {alertmanager.url} {channel_args(capture, smtp.port)} "
                         f"--api-url {dead_agent} --timeout 2 -v {output}", json_out=bool(output), env=env)
        assert run.rc == 1
        assert "bad keys *** ***" in run.stdout and "no such hook ***" in run.stdout
        assert "***" in run.stderr  # the verbose log shows where the secrets would be
    assert "--alertmanager.url=" in argv_log.read_text()
    for secret in SECRETS:
        assert secret not in argv_log.read_text()


# =================================================================================================
# The test alert
# =================================================================================================
def test_test_alert_is_held_routed_and_resolved(alertmanager: Alertmanager) -> None:
    run = run_tester(f"--alertmanager-url {alertmanager.url} --only test-alert --test-alert PipelineRouting "
                     "--severity critical --label team=sre --expect-receiver critical-alerts")
    assert run.rc == 0, run.stdout
    check = run.check("test-alert")
    assert check["status"] == "PASS"
    assert check["detail"] == ("PipelineRouting (severity critical) held by Alertmanager, routed to "
                               "pipeline-tester, critical-alerts (amtool agrees); resolved")
    assert check["data"]["labels"] == {
        "alertname": "PipelineRouting", "severity": "critical", "instance": HOST,
        "job": "pipeline-tester", "team": "sre", "pipeline_test": "true",
        "pipeline_test_run": run.run_id}
    assert check["data"]["amtool_receivers"] == ["pipeline-tester", "critical-alerts"]
    assert active_test_alerts(alertmanager.url) == []  # resolved: nothing left firing


def test_test_alert_routed_elsewhere_than_expected_fails(alertmanager: Alertmanager) -> None:
    run = run_tester(f"--alertmanager-url {alertmanager.url} --only test-alert --severity error "
                     "--expect-receiver critical-alerts")
    assert run.rc == 1
    assert run.detail("test-alert") == "routed to error-alerts, expected critical-alerts; resolved"
    assert active_test_alerts(alertmanager.url) == []


def test_flags_are_validated_before_anything_is_sent(alertmanager: Alertmanager) -> None:
    url = alertmanager.url
    label = run_tester(f"--alertmanager-url {url} --label severity=critical", json_out=False)
    assert label.rc == 2 and "--label severity=…: use --severity" in label.stderr
    bad = run_tester(f"--alertmanager-url {url} --label 'not a label'", json_out=False)
    assert bad.rc == 2 and "expected NAME=VALUE" in bad.stderr
    unknown = run_tester("--only slak", json_out=False)
    assert unknown.rc == 2 and "unknown check 'slak': choose from " in unknown.stderr
    severity = run_tester("--severity page", json_out=False)
    assert severity.rc == 2 and "invalid choice: 'page'" in severity.stderr
    assert active_test_alerts(url) == []


def test_dry_run_prints_the_plan_and_sends_nothing(
    capture: HTTPServer, smtp: SmtpCapture, alertmanager: Alertmanager,
) -> None:
    mails = len(smtp.mails)
    run = run_tester(f"--alertmanager-url {alertmanager.url} {channel_args(capture, smtp.port)} --dry-run "
                     f"--severity critical --e2e --capture-listen 127.0.0.1:{alertmanager.capture_port}",
                     json_out=False, env=clean_env(**SECRET_ENV))
    assert run.rc == 0, run.stdout
    out = run.stdout
    assert out.startswith("Dry run: nothing is sent. Would do:\n")
    assert f"[slack] POST http://{capture.host}:{capture.port}/***\n" in out
    assert '"routing_key": "***"' in out and '"event_action": "resolve"' in out
    assert "SMTP 127.0.0.1:" in out and "(plain text, no TLS, AUTH as 'apikey')" in out
    assert "would route to pipeline-tester, critical-alerts" in out
    assert f"[e2e] listen on http://127.0.0.1:{alertmanager.capture_port}/" in out
    assert posts(capture, SLACK_PATH) == []
    pd_events = [json.loads(r.get_data()) for r in posts(capture, "/v2/enqueue")]
    assert not [e for e in pd_events if e["routing_key"] == PD_CRITICAL]
    assert not [m for m in smtp.mails[mails:] if m.mail_from == "alerts@example.test"]
    assert active_test_alerts(alertmanager.url) == []

    doc = run_tester(f"--alertmanager-url {alertmanager.url} --dry-run", env=clean_env(**SECRET_ENV)).doc
    assert doc is not None and doc["dry_run"] is True and doc["ok"] is True
    assert {c["status"] for c in doc["checks"]} == {"SKIP"}
    [firing] = [p for p in doc["planned"] if p["check"] == "test-alert" and p["body"]]
    assert firing["body"][0]["labels"]["alertname"] == "AlertPipelineTest"


# =================================================================================================
# End to end: the notification arrives
# =================================================================================================
def test_e2e_the_notification_reaches_every_integration(
    capture: HTTPServer, smtp: SmtpCapture, alertmanager: Alertmanager,
) -> None:
    mails = len(smtp.mails)
    run = run_tester(f"--alertmanager-url {alertmanager.url} --only test-alert --e2e "
                     "--test-alert PipelineE2E --severity critical --e2e-timeout 30 "
                     f"--capture-listen 127.0.0.1:{alertmanager.capture_port}")
    assert run.rc == 0, run.stdout + alertmanager.log.read_text()[-3000:]
    assert run.status("test-alert") == "PASS"
    detail = run.detail("e2e")
    assert run.status("e2e") == "PASS", detail
    assert detail.startswith("delivered: capture receiver got it after ")
    # Alertmanager's counters are shared with every alert, so another test's notification can add
    # to them: at least one delivery each (the capture receiver above is the exact evidence).
    delivered = run.check("e2e")["data"]["delivered"]
    assert set(delivered) == {"email", "pagerduty", "slack", "webhook"}
    assert all(counts["ok"] >= 1 for counts in delivered.values()), delivered
    assert re.search(r"email \d+/1 delivered; pagerduty \d+/1 delivered; slack \d+/1 delivered", detail)
    # What Alertmanager itself sent through its real integrations:
    slack = [json.loads(r.get_data()) for r in posts(capture, "/services/T0AM/B0AM/amSlack")]
    assert [m["attachments"][0]["title"] for m in slack] == ["[firing] PipelineE2E"]
    [event] = [json.loads(r.get_data()) for r in posts(capture, "/v2/enqueue")]
    assert (event["routing_key"], event["event_action"]) == ("am-critical-routing-key", "trigger")
    assert "PipelineE2E" in event["payload"]["summary"]
    [mail] = smtp.mails[mails:]
    assert b"PipelineE2E" in mail.data and mail.login == "apikey"
    assert active_test_alerts(alertmanager.url) == []


def test_e2e_a_failing_integration_fails_with_its_name(alertmanager: Alertmanager) -> None:
    run = run_tester(f"--alertmanager-url {alertmanager.url} --only test-alert --e2e "
                     "--test-alert PipelineBroken --label team=broken --e2e-timeout 8 "
                     f"--capture-listen 127.0.0.1:{alertmanager.capture_port}")
    assert run.rc == 1
    assert run.status("test-alert") == "PASS"
    detail = run.detail("e2e")
    assert run.status("e2e") == "FAIL"
    assert re.match(r"not delivered within \d+s: slack 0/1 delivered, \d+ failed attempts? ", detail), detail
    assert "failed attempt" in detail and "(ok: capture receiver got it after " in detail
    assert active_test_alerts(alertmanager.url) == []


def test_e2e_with_nothing_to_deliver_fails_at_once(tmp_path: Path) -> None:
    with run_alertmanager(NULL_CONFIG, tmp_path / "am") as url:
        run = run_tester(f"--alertmanager-url {url} --only e2e --capture-listen 127.0.0.1:{free_port()}")
        assert run.rc == 1
        assert run.detail("e2e").startswith(
            "nothing to deliver: the alert routes to null, with no integration to count and no route to the "
            "capture receiver 'pipeline-tester'")
        assert run.check("e2e")["duration_s"] < 5
        assert active_test_alerts(url) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopping_the_tester_during_e2e_still_resolves_the_alert(
    alertmanager: Alertmanager, signum: int,
) -> None:
    """Ctrl-C (or a CI timeout's SIGTERM) while waiting for delivery: the alert is resolved, exit 130."""
    name = f"PipelineStopped{signum}"
    cmd = [str(TESTER), *shlex.split(
        f"--alertmanager-url {alertmanager.url} --only test-alert --e2e --test-alert {name} "
        f"--label team=broken --e2e-timeout 60 --capture-listen 127.0.0.1:{free_port()}")]
    # As in a terminal: SIGINT delivered (a non-interactive parent may have set it to ignored).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 20
        while not [a for a in active_test_alerts(alertmanager.url) if a["labels"]["alertname"] == name]:
            assert time.monotonic() < deadline and proc.poll() is None, "the alert never arrived"
            time.sleep(0.1)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert "interrupted  FAIL    stopped by a signal (Ctrl-C or SIGTERM)" in out
    assert "; resolved" in out  # the test alert's own row: it was resolved
    assert "e2e          FAIL    not delivered within" in out and "interrupted" in out
    assert active_test_alerts(alertmanager.url) == []


# =================================================================================================
# playbooks/pipeline-tester.yml: the same from an inventory
# =================================================================================================
def test_playbook_runs_the_tester_against_the_inventory(
    capture: HTTPServer, alertmanager: Alertmanager, tmp_path: Path,
) -> None:
    port = alertmanager.url.rsplit(":", 1)[1]
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"children": {"monitoring": {"hosts": {"mon1": {
        "ansible_host": "127.0.0.1", "alertmanager_port": int(port),
        "alertmanager_secret_pagerduty_critical_key": PD_CRITICAL,
        "monitoring_pagerduty_url": capture.url_for("/v2/enqueue"),
    }}}}}}))
    env = clean_env(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
         str(REPO / "playbooks" / "pipeline-tester.yml"), "-e", "pipeline_tester_severity=error"],
        capture_output=True, text=True, env=env, timeout=180, check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = " ".join(proc.stdout.split())  # the YAML callback folds long lines
    assert "alertmanager | PASS | v0.25.0, up " in out
    assert "test-alert | PASS | AlertPipelineTest (severity error) held by Alertmanager, routed to" in out
    assert "pagerduty:critical | PASS | test event pipeline-tester-" in out
    assert "agents | SKIP | no rollback agent" in out
    assert "OK: 3 passed, 0 failed, 4 skipped" in out
    # the critical key went from the inventory to the tester through its environment
    [trigger, _resolve] = [json.loads(r.get_data()) for r in posts(capture, "/v2/enqueue")]
    assert trigger["routing_key"] == PD_CRITICAL
    assert PD_CRITICAL not in proc.stdout + proc.stderr
    assert active_test_alerts(alertmanager.url) == []
