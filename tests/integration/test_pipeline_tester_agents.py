"""The tester against real rollback agents (``rollback-agent serve``: gunicorn) and a real Alertmanager.

Each agent has its own git repository with two releases, deployed with ``rollback-agent deploy``
(the restart and status commands are ``true``), so its /test endpoint plans a real rollback; a
second agent has only deployed its first release, so there is nothing to go back to: guards
block. Alertmanager's rollback webhook goes to the first agent, with the right secret and with a
wrong one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from testkit import services
from testkit.net import free_port
from testkit.tools import require_tool

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TESTER = Path(sys.executable).parent / "pipeline-tester"  # the console script scripts/bootstrap installs
SECRET = "agentWebhookSecret-4242"
# A trigger of the first agent's own configuration (beside the seven defaults): the tester must
# learn it from the agent.
CUSTOM_TRIGGER = "CheckoutQueueStalled"


@dataclass
class Agent:
    url: str
    config: Path
    shas: list[str]  # the releases, oldest first


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.test",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.test"}
    return subprocess.run([require_tool("git"), "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=env).stdout.strip()


def agent_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rollback_agent", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=False)


@contextlib.contextmanager
def rollback_agent(root: Path, *, deploys: int, triggers: dict[str, Any] | None = None,
                   fleet: dict[str, Any] | None = None) -> Iterator[Agent]:
    """A real agent on 127.0.0.1: two releases in git, the first ``deploys`` of them deployed in turn."""
    repo, state, etc = root / "app", root / "state", root / "etc"
    for directory in (repo, state, etc):
        directory.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    shas = []
    for release in ("v1", "v2"):
        (repo / "VERSION").write_text(release + "\n")
        git(repo, "add", "VERSION")
        git(repo, "commit", "-q", "-m", f"release {release}")
        shas.append(git(repo, "rev-parse", "HEAD"))
    (etc / "webhook-secret").write_text(SECRET + "\n")
    (etc / "webhook-secret").chmod(0o600)
    port = free_port()
    config = etc / "config.yml"
    config.write_text(yaml.safe_dump({
        "host": root.name,
        "state_dir": str(state),
        "auth": {"username": "alertmanager", "password_file": str(etc / "webhook-secret")},
        "deployment": {"repo": str(repo), "ref": "refs/heads/deployed"},
        "services": {"units": ["app.service"], "restart_command": ["true"], "status_command": ["true"]},
        "scope": {"match_labels": {"service": "mita-api"}},
        "server": {"bind": f"127.0.0.1:{port}", "workers": 1, "access_log": False},
        **({"triggers": triggers} if triggers else {}),
        **({"fleet": fleet} if fleet else {}),
    }))
    for sha in shas[:deploys]:
        done = agent_cli(config, "deploy", sha)
        assert done.returncode == 0, done.stdout + done.stderr
    url = f"http://127.0.0.1:{port}"
    # gunicorn's master stops its workers when stopped
    with services.serving([sys.executable, "-m", "rollback_agent", "serve", "--config", str(config)],
                          root / "agent.log", f"{url}/healthz", start_new_session=True):
        yield Agent(url, config, shas)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    custom = {CUSTOM_TRIGGER: {"trigger": "checkout_queue", "reason": "Checkout queue stalled"}}
    root = tmp_path_factory.mktemp("agents") / "app-ready"
    with rollback_agent(root, deploys=2, triggers=custom) as running:
        yield running


@pytest.fixture(scope="module")
def fresh_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    with rollback_agent(tmp_path_factory.mktemp("agents") / "app-fresh", deploys=1) as running:
        yield running


@pytest.fixture(scope="module")
def fleet_agent(agent: Agent, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """Wave 1 of a fleet: its canary is the first agent (answers), app-gone answers nothing."""
    peers = [{"host": "app-ready", "url": agent.url}, {"host": "app-gone", "url": f"http://127.0.0.1:{free_port()}"}]
    fleet = {"wave": 1, "peers": peers, "request_timeout": "1s"}
    with rollback_agent(tmp_path_factory.mktemp("agents") / "app-wave1", deploys=2, fleet=fleet) as running:
        yield running


@pytest.fixture(scope="module")
def alertmanager(agent: Agent, fresh_agent: Agent, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Routes team=rollback to the first agent's webhook with the secret, team=wrong-secret to the
    second agent's with another secret (each agent gets one kind only: the tester's evidence is
    the agent's webhook counters, which another alert's webhook would also move)."""
    hook = f"{agent.url}/api/admin/rollback/trigger"
    wrong_hook = f"{fresh_agent.url}/api/admin/rollback/trigger"

    def auth(password: str) -> dict[str, Any]:
        return {"basic_auth": {"username": "alertmanager", "password": password}}

    config = {
        "route": {"receiver": "null", "group_by": ["alertname"], "group_wait": "1s", "group_interval": "1s",
                  "routes": [{"matchers": ['team="rollback"'], "receiver": "rollback-trigger"},
                             {"matchers": ['team="wrong-secret"'], "receiver": "rollback-wrong-secret"}]},
        "receivers": [
            {"name": "null"},
            {"name": "rollback-trigger", "webhook_configs": [{"url": hook, "http_config": auth(SECRET)}]},
            {"name": "rollback-wrong-secret",
             "webhook_configs": [{"url": wrong_hook, "http_config": auth("nope")}]},
        ],
    }
    workdir = tmp_path_factory.mktemp("am")
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))
    with services.alertmanager(workdir / "alertmanager.yml", workdir) as am:
        yield am.url


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    doc: dict[str, Any]

    def check(self, name: str) -> dict[str, Any]:
        [found] = [c for c in self.doc["checks"] if c["name"] == name]
        return found


def run_tester(args: str, secret: str | None = SECRET) -> Run:
    env = {k: v for k, v in os.environ.items() if k != "ROLLBACK_WEBHOOK_SECRET"}
    if secret is not None:
        env["ROLLBACK_WEBHOOK_SECRET"] = secret
    proc = subprocess.run([str(TESTER), *shlex.split(args), "--json"], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    for leaked in (SECRET, "nope-wrong-4242"):
        assert leaked not in proc.stdout + proc.stderr
    doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return Run(proc.returncode, proc.stdout, proc.stderr, doc)


def label(agent: Agent) -> str:
    return f"agent[{agent.url.removeprefix('http://')}]"


def deployed_sha(agent: Agent) -> str:
    answer = requests.get(f"{agent.url}/api/admin/rollback/status", auth=("alertmanager", SECRET), timeout=5)
    return str(answer.json()["deployment"]["sha"])


def test_agent_reports_its_plan_and_that_guards_allow_it(agent: Agent) -> None:
    v1, v2 = agent.shas
    run = run_tester(f"--only agents --api-url {agent.url}")
    assert run.rc == 0, run.stdout
    check = run.check(label(agent))
    assert check["status"] == "PASS"
    assert check["detail"].startswith(
        f"CriticalErrorRate: would roll back {v2[:10]}→{v1[:10]}; restart app.service; guards allow it (")
    version = check["data"]["status"]["version"]
    assert check["detail"].endswith(f"[host app-ready, agent {version}, mode live, deployed {v2[:10]}]")
    assert check["data"]["would"] == "accepted"
    assert deployed_sha(agent) == v2  # /test executes nothing


def test_agent_url_may_be_the_webhook_url_alertmanager_uses(agent: Agent) -> None:
    run = run_tester(f"--only agents --api-url {agent.url}/api/admin/rollback/trigger")
    assert run.rc == 0
    assert run.check(label(agent))["status"] == "PASS"


def test_wrong_secret_fails_with_401(agent: Agent) -> None:
    run = run_tester(f"--only agents --api-url {agent.url}", secret="nope-wrong-4242")
    assert run.rc == 1
    check = run.check(label(agent))
    assert check["status"] == "FAIL"
    where = agent.url.removeprefix("http://")
    assert check["detail"] == (f"{where} rejected the webhook secret (HTTP 401 for user 'alertmanager'): "
                               "Alertmanager's rollback webhooks to this agent are refused too")


def test_agent_refusing_the_alert_fails_with_its_reason(agent: Agent) -> None:
    run = run_tester(f"--only agents --api-url {agent.url} --rollback-alert NotARollbackTrigger")
    assert run.rc == 1
    detail = run.check(label(agent))["detail"]
    assert detail.startswith("agent would ignore NotARollbackTrigger: NotARollbackTrigger is not a rollback "
                             "trigger (known: ")


def test_missing_secret_skips_the_agents(agent: Agent) -> None:
    run = run_tester(f"--only agents --api-url {agent.url}", secret=None)
    assert run.rc == 0
    assert run.check(label(agent))["status"] == "SKIP"
    assert "$ROLLBACK_WEBHOOK_SECRET" in run.check(label(agent))["detail"]


def test_blocked_guards_pass_unless_readiness_is_required(agent: Agent, fresh_agent: Agent) -> None:
    run = run_tester(f"--only agents --api-url {agent.url} --api-url {fresh_agent.url}")
    assert run.rc == 0, run.stdout
    assert run.check(label(agent))["status"] == "PASS"
    blocked = run.check(label(fresh_agent))
    assert blocked["status"] == "PASS" and blocked["data"]["would"] == "blocked"
    assert "guards BLOCK it: blocked by " in blocked["detail"], blocked["detail"]

    strict = run_tester(f"--only agents --api-url {agent.url} --api-url {fresh_agent.url} "
                        "--require-rollback-ready")
    assert strict.rc == 1
    assert strict.check(label(agent))["status"] == "PASS"
    assert strict.check(label(fresh_agent))["status"] == "FAIL"
    assert strict.check(label(fresh_agent))["detail"].endswith("(--require-rollback-ready)")


def test_agent_in_a_fleet_reports_its_wave_and_which_peers_answer(agent: Agent, fleet_agent: Agent) -> None:
    run = run_tester(f"--only agents --api-url {fleet_agent.url} --api-url {agent.url}")
    assert run.rc == 0, run.stdout
    check = run.check(label(fleet_agent))
    assert check["status"] == "PASS"
    fleet = check["data"]["status"]["fleet"]
    assert fleet["wave"] == 1 and fleet["peers"] == {"app-ready": True, "app-gone": False}
    assert "wave 1, peers answering 1/2 (app-gone: ConnectionError" in check["detail"], check["detail"]
    # An agent without a fleet says nothing about waves.
    assert "wave" not in run.check(label(agent))["detail"]
    assert run.check(label(agent))["data"]["status"]["fleet"] is None


def test_e2e_the_webhook_reaches_the_agent(agent: Agent, alertmanager: str) -> None:
    v2 = agent.shas[1]
    run = run_tester(f"--alertmanager-url {alertmanager} --api-url {agent.url} --only test-alert --e2e "
                     "--test-alert PipelineToAgent --label team=rollback --e2e-timeout 30")
    assert run.rc == 0, run.stdout
    detail = run.check("e2e")["detail"]
    assert detail.startswith("delivered: webhook 1/1 delivered; agent 127.0.0.1:"), detail
    assert "got the webhook (ignored)" in detail  # not a rollback trigger, and out of the agent's scope
    assert deployed_sha(agent) == v2


def test_e2e_a_wrong_webhook_secret_in_alertmanager_fails(fresh_agent: Agent, alertmanager: str) -> None:
    run = run_tester(f"--alertmanager-url {alertmanager} --api-url {fresh_agent.url} --only test-alert --e2e "
                     "--test-alert PipelineWrongSecret --label team=wrong-secret --e2e-timeout 30")
    assert run.rc == 1
    detail = run.check("e2e")["detail"]
    assert run.check("e2e")["status"] == "FAIL"
    where = fresh_agent.url.removeprefix("http://")
    assert f"agent {where} refused the webhook (unauthorized)" in detail, detail
    # (not asserted: Alertmanager's webhook counter, which the previous test's resolved webhook to
    # the other agent may move in the same window; the agent's own counter is what catches this)
    assert run.check("e2e")["duration_s"] < 15  # a refusal is final: no waiting for the timeout


@pytest.mark.parametrize("name", ["CriticalErrorRate", CUSTOM_TRIGGER])
def test_a_test_alert_named_like_an_agents_trigger_is_refused(
    agent: Agent, alertmanager: str, name: str
) -> None:
    """The names come from the agent's monitored_triggers: a default one and one of its own config."""
    run = run_tester(f"--alertmanager-url {alertmanager} --api-url {agent.url} --test-alert {name}")
    assert run.rc == 2, run.stdout + run.stderr
    assert f"--test-alert {name} is a rollback trigger of {agent.url} (its monitored_triggers)" in run.stderr
    assert "--allow-rollback-alert" in run.stderr
    allowed = run_tester(f"--alertmanager-url {alertmanager} --api-url {agent.url} --test-alert {name} "
                         "--allow-rollback-alert --dry-run")
    assert allowed.rc == 0, allowed.stdout + allowed.stderr


def test_a_test_alert_name_is_refused_when_an_agents_triggers_cannot_be_read(
    agent: Agent, alertmanager: str
) -> None:
    run = run_tester(f"--alertmanager-url {alertmanager} --api-url {agent.url} --test-alert PipelineNamed",
                     secret=None)
    assert run.rc == 2
    assert (f"--test-alert PipelineNamed: cannot tell whether it is a rollback trigger ({agent.url}: no "
            "rollback webhook secret") in run.stderr, run.stderr
    # the default name needs no list: no agent acts on it unless it lists it
    default = run_tester(f"--alertmanager-url {alertmanager} --api-url {agent.url} --dry-run", secret=None)
    assert default.rc == 0, default.stdout + default.stderr
