"""Configuration: every error names the key at fault; defaults are what the issue says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from rollback_agent.config import ConfigError, load_config, parse_config
from rollback_agent.durations import format_duration, parse_duration
from rollback_agent.envfile import parse_environment_file
from rollback_agent.secretfiles import load_secrets

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "agent" / "examples" / "config.yml"
MINIMAL = {
    "auth": {"password_env": "ROLLBACK_WEBHOOK_SECRET"},
    "deployment": {"repo": "/srv/app"},
    "services": {"units": ["app.service"]},
}


def problems(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="test.yml")
    return info.value.problems


def test_minimal_config_gets_the_documented_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.host  # the machine's hostname
    assert config.state_dir == Path("/var/lib/rollback-agent")
    assert config.auth.username == "alertmanager"
    assert config.deployment.ref == "refs/heads/deployed"
    assert config.deployment.remote is None
    assert config.migrations is None and config.health is None
    assert config.services.restart_command == ["systemctl", "restart"]
    assert config.guards.rollback_window == 7200 and config.guards.cooldown == 900
    assert config.guards.max_rollbacks_per_day == 3 and config.guards.timeout == 600
    assert config.dry_run is False
    assert config.server.bind == "0.0.0.0:9095"
    # The seven default rollback triggers (docs/contracts.md), with ids, confidence and reasons.
    assert set(config.triggers) == {
        "CriticalErrorRate",
        "CriticalP95Latency",
        "MitaSystemUnhealthy",
        "MitaDatabaseConnectionIssues",
        "TransactionProcessingFailure",
        "RedisConnectionFailure",
        "UserRegistrationDown",
    }
    assert config.triggers["CriticalErrorRate"].trigger == "error_rate_threshold"
    assert config.triggers["CriticalErrorRate"].reason == "Error rate exceeded 20% for 2 minutes"
    assert config.triggers["CriticalP95Latency"].trigger == "latency_degradation"
    assert config.triggers["MitaSystemUnhealthy"].confidence == "medium"
    assert config.triggers["UserRegistrationDown"].confidence == "medium"
    assert all(t.auto_rollback for t in config.triggers.values())


def test_example_config_in_the_repo_is_valid() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    config = parse_config(data)
    assert config.notify.slack is not None and config.migrations is not None
    assert config.services.restart_command[:2] == ["sudo", "-n"]


def test_triggers_extend_or_override_the_defaults() -> None:
    config = parse_config(
        {
            **MINIMAL,
            "triggers": {
                "DiskFull": {"trigger": "disk", "reason": "Disk full"},
                "UserRegistrationDown": {
                    "trigger": "business_metric_failure",
                    "reason": "x",
                    "auto_rollback": False,
                },
            },
        }
    )
    assert len(config.triggers) == 8
    assert config.triggers["DiskFull"].confidence == "high"
    assert config.triggers["UserRegistrationDown"].auto_rollback is False


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({**MINIMAL, "guard": {}}, "unknown key 'guard' (did you mean 'guards'?)"),
        (
            {**MINIMAL, "guards": {"timout": "5m"}},
            "unknown key 'timout' in 'guards' (did you mean 'timeout'?)",
        ),
        ({k: v for k, v in MINIMAL.items() if k != "deployment"}, "missing required key 'deployment'"),
        ({**MINIMAL, "deployment": {}}, "missing required key 'deployment.repo'"),
        ({**MINIMAL, "guards": {"cooldown": "soon"}}, "guards.cooldown: invalid duration 'soon'"),
        ({**MINIMAL, "guards": {"max_rollbacks_per_day": 0}}, "guards.max_rollbacks_per_day:"),
        ({**MINIMAL, "deployment": {"repo": "srv/app"}}, "deployment.repo: must be an absolute path"),
        (
            {**MINIMAL, "deployment": {"repo": "/srv/app", "ref": "deployed"}},
            "deployment.ref: must be a full git ref",
        ),
        ({**MINIMAL, "auth": {}}, "auth: set exactly one of password_file or password_env"),
        ({**MINIMAL, "services": {"units": []}}, "services.units:"),
        ({**MINIMAL, "services": {"units": ["a"], "restart_command": []}}, "services.restart_command:"),
        ({**MINIMAL, "health": {"url": "ftp://x"}}, "health.url: must be an http:// or https:// URL"),
        (
            {**MINIMAL, "scope": {"match_re": {"instance": "("}}},
            "scope.match_re: label 'instance': invalid regular",
        ),
        ({**MINIMAL, "triggers": {"X": {"trigger": "x"}}}, "missing required key 'triggers.X.reason'"),
        (
            {**MINIMAL, "triggers": {"X": {"trigger": "x", "reason": "r", "confidence": "low"}}},
            "triggers.X.confidence:",
        ),
        (
            {**MINIMAL, "notify": {"slack": {"channel": "#x"}}},
            "notify.slack: set exactly one of webhook_url_file",
        ),
        ({**MINIMAL, "dry_run": "maybe"}, "dry_run:"),
        (
            {**MINIMAL, "server": {"certfile": "/etc/tls/cert.pem"}},
            "server: certfile and keyfile go together",
        ),
        ([1, 2], "the top level must be a mapping"),
    ],
)
def test_errors_name_the_key(data: object, expected: str) -> None:
    found = problems(data)
    assert any(expected in p for p in found), found


def test_several_problems_are_reported_together() -> None:
    found = problems({"auth": {}, "guards": {"cooldown": "x", "bogus": 1}})
    assert len(found) >= 4, found


def test_load_config_reports_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("auth: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_config_path_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(MINIMAL))
    monkeypatch.setenv("ROLLBACK_AGENT_CONFIG", str(path))
    assert load_config().source == str(path.resolve())


def test_secrets_from_file_or_env_never_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "secret"
    secret.write_text("hunter2-token\n")
    slack = tmp_path / "slack"
    slack.write_text("https://hooks.slack.com/services/T1/B2/abcdefghijkl\n")
    config = parse_config(
        {
            **MINIMAL,
            "auth": {"password_file": str(secret)},
            "notify": {"slack": {"webhook_url_file": str(slack)}},
        }
    )
    loaded = load_secrets(config)
    assert loaded.webhook == "hunter2-token"
    assert "hunter2" not in repr(loaded) and "abcdefghijkl" not in repr(loaded)
    assert (
        loaded.redact("url https://hooks.slack.com/services/T1/B2/abcdefghijkl and hunter2-token")
        == "url *** and ***"
    )
    assert loaded.redact("path /services/T1/B2/abcdefghijkl") == "path ***"

    monkeypatch.setenv("ROLLBACK_WEBHOOK_SECRET", "from-env")
    assert load_secrets(parse_config(MINIMAL)).webhook == "from-env"
    monkeypatch.delenv("ROLLBACK_WEBHOOK_SECRET")
    with pytest.raises(ConfigError, match=r"auth\.password_env: environment variable ROLLBACK_WEBHOOK"):
        load_secrets(parse_config(MINIMAL))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match=r"auth\.password_file: .* is empty"):
        load_secrets(parse_config({**MINIMAL, "auth": {"password_file": str(empty)}}))
    with pytest.raises(ConfigError, match=r"auth\.password_file: cannot read"):
        load_secrets(parse_config({**MINIMAL, "auth": {"password_file": str(tmp_path / "nope")}}))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1d", 86400),
        ("90", 90),
        (45, 45),
        ("500ms", 0.5),
        ("0.5s", 0.5),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10 minutes", "-5s", "0", "5x", True, None, "m5"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(2.345) == "2.3s"
    assert format_duration(75) == "1m15s"
    assert format_duration(7260) == "2h01m"
    assert format_duration(None) == "-"


def test_environment_file_like_systemd(tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.write_text(
        '# comment\n; also a comment\n\nDATABASE_URL=postgresql://app@db/app\nQUOTED="a b"\n'
        "SINGLE='c d'\nexport EXPORTED=1\n  SPACED = x \n"
    )
    assert parse_environment_file(path) == {
        "DATABASE_URL": "postgresql://app@db/app",
        "QUOTED": "a b",
        "SINGLE": "c d",
        "EXPORTED": "1",
        "SPACED": "x",
    }
    path.write_text("not a line\n")
    with pytest.raises(ValueError, match=":1: not a KEY=VALUE line"):
        parse_environment_file(path)


def test_secret_env_vars_are_not_passed_to_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    from rollback_agent.migrations import child_environment

    monkeypatch.setenv("ROLLBACK_WEBHOOK_SECRET", "x")
    monkeypatch.setenv("PLAIN", "y")
    env = child_environment(parse_config(MINIMAL))
    assert "ROLLBACK_WEBHOOK_SECRET" not in env and env["PLAIN"] == "y"
    assert os.environ["ROLLBACK_WEBHOOK_SECRET"] == "x"
