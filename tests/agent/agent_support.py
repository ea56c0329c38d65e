"""Helpers shared by the agent tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import base64
import copy
import json
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

SECRET = "s3cret-webhook-token-for-tests"
SLACK_PATH = "/slack/services/T0001/B0001/VerySecretSlackPath42"
PAGERDUTY_KEY = "R0UT1NGKEY-for-tests"


# --- a local server: the application's health URL and a Slack capture --------------------------------
class CaptureServer:
    def __init__(self) -> None:
        self.health_status = 200
        self.health_failures_left = 0  # answer 503 this many times first (an app still starting)
        self.slack_statuses: list[int] = []  # consumed one per request; 200 when empty
        self.slack_delay = 0.0
        self.messages: list[dict[str, Any]] = []
        self.api_tokens: list[str] = []  # the bearer tokens chat.postMessage received
        self.pages: list[dict[str, Any]] = []  # PagerDuty Events v2 bodies
        self.slack_requests = 0
        self.health_requests = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _reply(self, status: int, body: bytes = b"ok") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/health":
                    with server.lock:
                        server.health_requests += 1
                        starting = server.health_failures_left > 0
                        server.health_failures_left -= 1 if starting else 0
                    self._reply(503 if starting else server.health_status)
                else:
                    self._reply(404)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if self.path == "/pagerduty/v2/enqueue":
                    with server.lock:
                        server.pages.append(json.loads(body))
                    self._reply(202, b'{"status": "success", "message": "Event processed"}')
                    return
                if self.path == "/slack-api/chat.postMessage":
                    with server.lock:
                        server.slack_requests += 1
                        server.api_tokens.append(self.headers.get("Authorization", ""))
                        ts = f"{1700000000 + len(server.messages)}.{len(server.messages):06d}"
                        server.messages.append({"path": self.path, "ts": ts, **json.loads(body)})
                    self._reply(200, json.dumps({"ok": True, "channel": "C1", "ts": ts}).encode())
                    return
                if not self.path.startswith("/slack/"):
                    self._reply(404)
                    return
                if server.slack_delay:
                    time.sleep(server.slack_delay)
                with server.lock:
                    server.slack_requests += 1
                    status = server.slack_statuses.pop(0) if server.slack_statuses else 200
                    if status == 200:
                        server.messages.append({"path": self.path, **json.loads(body)})
                self._reply(status)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def texts(self) -> list[str]:
        with self.lock:
            return [m["attachments"][0]["text"] for m in self.messages]

    def kinds(self) -> list[str]:
        with self.lock:
            return [m["attachments"][0]["footer"].rsplit(" ", 1)[-1] for m in self.messages]

    def wait_for(self, kind: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for k, text in zip(self.kinds(), self.texts(), strict=True):
                if k == kind:
                    return text
            time.sleep(0.05)
        raise AssertionError(f"no {kind} message in {self.kinds()}")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


RECORDER = """#!/bin/sh
# Stands in for systemctl: records each call; files in {control} make it fail or sleep.
echo "$1 $2" >> {control}/calls.log
if [ -e {control}/fail-$1 ]; then echo "$1 $2: failing on purpose (test)" >&2; exit 1; fi
if [ -e {control}/sleep-$1 ]; then echo $$ >> {control}/sleepers; sleep "$(cat {control}/sleep-$1)"; fi
exit 0
"""


def write_recorder(control: Path) -> Path:
    control.mkdir(parents=True, exist_ok=True)
    script = control / "fake-systemctl"
    script.write_text(RECORDER.format(control=control))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that does not reap it counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def rfc3339(stamp: float | None = None) -> str:
    """A time as Alertmanager writes it (UTC, nanoseconds)."""
    stamp = time.time() if stamp is None else stamp
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp))
    return f"{whole}.{int((stamp % 1) * 1e9):09d}Z"


class Clock:
    """The agent's injectable time: real time moved forward by ``offset`` seconds."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def payload(
    alertname: str = "CriticalErrorRate",
    *,
    status: str = "firing",
    fingerprint: str = "fp-error-rate",
    labels: dict[str, str] | None = None,
    extra_alerts: list[dict[str, Any]] | None = None,
    starts_at: str | float | None = None,
) -> dict[str, Any]:
    """An Alertmanager webhook (version 4) as Alertmanager 0.25 sends it.

    ``startsAt`` is now unless told (a time, or the text to send): an alert that started before
    the live release went live is not evidence against it.
    """
    alert_labels = {"alertname": alertname, "service": "mita-api", "severity": "critical", **(labels or {})}
    alert = {
        "status": status,
        "labels": alert_labels,
        "annotations": {"summary": f"{alertname} on mita-api", "runbook_url": "https://runbooks.example/x"},
        "startsAt": starts_at if isinstance(starts_at, str) else rfc3339(starts_at),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
    }
    return {
        "version": "4",
        "groupKey": '{}/{severity="critical"}:{alertname="' + alertname + '"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "rollback-trigger",
        "groupLabels": {"alertname": alertname},
        "commonLabels": alert_labels,
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://alertmanager:9093",
        "alerts": [alert, *(extra_alerts or [])],
    }


def basic_auth(user: str = "alertmanager", password: str = SECRET) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# --- the environment of one agent --------------------------------------------------------------------
class AgentEnv:
    def __init__(
        self, root: Path, shas: dict[str, str], server: CaptureServer | None, database_url: str
    ) -> None:
        self.root = root
        self.repo = root / "app"
        self.state_dir = root / "state"
        self.control = root / "control"
        self.etc = root / "etc"
        self.shas = shas
        self.server = server
        self.database_url = database_url
        self.etc.mkdir(exist_ok=True)
        self.recorder = write_recorder(self.control)
        self.env_file = self.etc / "app.env"
        self.env_file.write_text(f"# like /etc/app/env\nDATABASE_URL={database_url}\n")
        self.secret_file = self.etc / "webhook-secret"
        self.secret_file.write_text(SECRET + "\n")
        self.secret_file.chmod(0o600)
        self.slack_file = self.etc / "slack-url"
        if server is not None:
            self.slack_file.write_text(server.base + SLACK_PATH + "\n")
            self.slack_file.chmod(0o600)
        self.config_path = self.etc / "config.yml"
        self.overrides: dict[str, Any] = {}
        self.write_config()

    def base_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "host": "app1",
            "state_dir": str(self.state_dir),
            "auth": {"username": "alertmanager", "password_file": str(self.secret_file)},
            "deployment": {"repo": str(self.repo), "ref": "refs/heads/deployed"},
            "migrations": {
                "command": [sys.executable, "-m", "alembic", "-c", "alembic.ini"],
                "environment_file": str(self.env_file),
            },
            "services": {
                "units": ["app.service", "worker.service"],
                "restart_command": [str(self.recorder), "restart"],
                "status_command": [str(self.recorder), "is-active"],
                "start_timeout": "3s",
            },
            "scope": {"match_labels": {"service": "mita-api"}},
            "guards": {
                "rollback_window": "2h",
                "cooldown": "15m",
                "max_rollbacks_per_day": 3,
                "timeout": "2m",
            },
            "server": {"bind": "127.0.0.1:9095", "workers": 2},
            "log_level": "info",
        }
        if self.server is not None:
            config["health"] = {"url": self.server.base + "/health", "timeout": "3s", "interval": "0.1s"}
            config["notify"] = {
                "slack": {
                    "webhook_url_file": str(self.slack_file),
                    "channel": "#mita-deployments",
                    "max_attempts": 3,
                }
            }
        return config

    def pagerduty_notify(self) -> dict[str, Any]:
        """``notify:`` with PagerDuty pointed at the capture server (routing key in a 0600 file)."""
        assert self.server is not None, "PagerDuty needs the capture server"
        key = self.etc / "pagerduty-key"
        key.write_text(PAGERDUTY_KEY + "\n")
        key.chmod(0o600)
        api_url = self.server.base + "/pagerduty/v2/enqueue"
        return {"pagerduty": {"routing_key_file": str(key), "api_url": api_url}}

    def write_config(self, **overrides: Any) -> Path:
        self.overrides = deep_merge(self.overrides, overrides)
        data = deep_merge(self.base_config(), self.overrides)
        self.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
        return self.config_path

    def config(self) -> Any:
        from rollback_agent.config import load_config

        return load_config(self.config_path)

    def agent(self, clock: Clock | None = None) -> Any:
        from rollback_agent.host import Host

        return Host(self.config(), clock=clock)

    def app(self, clock: Clock | None = None) -> Any:
        from rollback_agent.web import create_app

        app = create_app(str(self.config_path)) if clock is None else create_app(host=self.agent(clock))
        app.testing = True
        return app

    def client(self, clock: Clock | None = None) -> Any:
        return self.app(clock).test_client()

    def deploy(self, ref: str, force: bool = False) -> Any:
        from rollback_agent.deployer import Deployer

        return Deployer(self.agent()).deploy(ref, force=force)

    # --- what happened ---------------------------------------------------------------------------------
    def calls(self) -> list[str]:
        log = self.control / "calls.log"
        return log.read_text().splitlines() if log.exists() else []

    def restarts(self) -> list[str]:
        return [c for c in self.calls() if c.startswith("restart ")]

    def clear_calls(self) -> None:
        (self.control / "calls.log").unlink(missing_ok=True)

    def control_file(self, name: str, content: str = "") -> None:
        (self.control / name).write_text(content)

    def start_held_rollback(self) -> subprocess.Popen[str]:
        """`rollback-agent rollback --json` in its own process, held in its restart step (the
        sample unit sleeps) until the test lets it go; returns once the restart is sleeping."""
        self.control_file("sleep-restart", "60")
        proc = subprocess.Popen(
            [sys.executable, "-m", "rollback_agent", "--config", str(self.config_path), "rollback", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not (self.control / "sleepers").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return proc

    def deployed_sha(self) -> str | None:
        import git

        repo = git.Repo(self.repo)
        try:
            return repo.git.rev_parse("--verify", "--quiet", "refs/heads/deployed")
        finally:
            repo.close()

    def head_sha(self) -> str:
        import git

        repo = git.Repo(self.repo)
        try:
            return repo.head.commit.hexsha
        finally:
            repo.close()

    def app_version(self) -> str:
        return (self.repo / "app.py").read_text().split('"')[1]

    def db_revision(self) -> str | None:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.database_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT version_num FROM alembic_version")).fetchall()
        finally:
            engine.dispose()
        return rows[0][0] if rows else None

    def db_tables(self) -> dict[str, list[str]]:
        from sqlalchemy import create_engine, inspect

        engine = create_engine(self.database_url)
        try:
            inspector = inspect(engine)
            return {
                t: [c["name"] for c in inspector.get_columns(t)]
                for t in inspector.get_table_names()
                if t != "alembic_version"
            }
        finally:
            engine.dispose()

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.state_dir / "state.db")
        try:
            rows = conn.execute(query, args).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()

    def wait_incident(self, incident_id: str, timeout: float = 60.0) -> dict[str, Any]:
        from rollback_agent.state import RUNNING, Store

        store = Store(self.state_dir / "state.db")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            inc = store.incident(incident_id)
            if inc is not None and inc["status"] != RUNNING:
                return inc
            time.sleep(0.05)
        raise AssertionError(f"{incident_id} still running after {timeout}s: {store.incident(incident_id)}")


def _copy_template(template: Path, dest: Path) -> None:
    for name in ("app", "state", "db"):
        src = template / name
        if src.exists():
            shutil.copytree(src, dest / name, symlinks=True)


def run_cli(env: AgentEnv, capsys: Any, *args: str) -> tuple[int, str, str]:
    """``rollback-agent --config <env's config> ARGS`` in process: exit code, stdout, stderr."""
    from rollback_agent.cli import main

    code = main(["--config", str(env.config_path), *args])
    out, err = capsys.readouterr()
    return code, out, err
