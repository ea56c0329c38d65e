"""The agent under a real gunicorn, as systemd runs it (used by the gunicorn tests and the bench)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

import requests
from agent_support import SECRET, AgentEnv, payload
from testkit.net import free_port, wait_for

AUTH = ("alertmanager", SECRET)
# The documented command: gunicorn with the agent's settings module, serving APP.
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "python:rollback_agent.gunicorn_conf"]
AGENT_APP = ("rollback_agent.wsgi:app",)


def failed_start(env: AgentEnv, **environ: str) -> str:
    """Run the documented command expecting it to stop before serving; its stderr."""
    proc = subprocess.run(
        [*GUNICORN, *AGENT_APP],
        env={**os.environ, "ROLLBACK_AGENT_CONFIG": str(env.config_path), **environ},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0, f"gunicorn served: {proc.stdout}{proc.stderr}"
    return proc.stderr


class Gunicorn:
    """`gunicorn -c python:rollback_agent.gunicorn_conf rollback_agent.wsgi:app`, or another app."""

    def __init__(self, env: AgentEnv, workers: int = 4, app: Sequence[str] = AGENT_APP) -> None:
        self.env = env
        self.app = list(app)
        self.port = free_port()
        env.write_config(server={"bind": f"127.0.0.1:{self.port}", "workers": workers, "access_log": False})
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = env.root / "gunicorn.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Gunicorn:
        environ = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        environ["ROLLBACK_AGENT_CONFIG"] = str(self.env.config_path)
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(
                [*GUNICORN, *self.app],
                env=environ,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.proc = proc

        def healthy() -> bool:
            assert proc.poll() is None, self.log.read_text()
            with contextlib.suppress(requests.RequestException):
                return requests.get(self.base + "/healthz", timeout=1).status_code == 200
            return False

        try:
            wait_for(healthy, 30, "gunicorn to answer /healthz", 0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{self.log.read_text()}") from None
        return self

    def workers(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        )
        return [int(p) for p in out.stdout.split()]

    def kill9(self) -> None:
        """kill -9 of the whole agent: master, workers and the background rollback process."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def get(self, path: str) -> requests.Response:
        return requests.get(self.base + path, auth=AUTH, timeout=10)

    def trigger(self, body: dict | None = None) -> requests.Response:
        return requests.post(
            self.base + "/api/admin/rollback/trigger", json=body or payload(), auth=AUTH, timeout=30
        )


def metric(text: str, name: str) -> float:
    """The value of an unlabelled sample ``name`` in a /metrics text (0 when absent)."""
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0
