"""Everything a run needs, resolved from flags, environment variables and files."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from .secrets import Secret

SEVERITIES = ("info", "warning", "error", "critical")
# The test alert's default name: no agent acts on it unless its configuration lists it (the
# tester reads every agent's monitored_triggers before sending, see triggers.py).
DEFAULT_TEST_ALERT = "AlertPipelineTest"
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Labels the tester sets itself on the test alert.
TEST_LABEL = "pipeline_test"
RUN_LABEL = "pipeline_test_run"


class ConfigError(Exception):
    """Bad flags or unreadable secret files: the run stops before sending anything (exit 2)."""


@dataclass(frozen=True)
class SecretSpec:
    key: str  # attribute of Settings.secrets
    option: str  # --option and --option-file
    env: str  # environment variable
    file_name: str  # file name in --secrets-dir (the Alertmanager role's secrets directory)
    what: str  # for messages


SECRET_SPECS = (
    SecretSpec(
        "slack_webhook_url",
        "slack-webhook-url",
        "SLACK_WEBHOOK_URL",
        "slack_webhook_url",
        "Slack webhook URL",
    ),
    SecretSpec(
        "sendgrid_api_key", "sendgrid-api-key", "SENDGRID_API_KEY", "sendgrid_api_key", "SendGrid API key"
    ),
    SecretSpec(
        "pagerduty_critical_key",
        "pagerduty-critical-key",
        "PAGERDUTY_CRITICAL_KEY",
        "pagerduty_critical_key",
        "PagerDuty critical routing key",
    ),
    SecretSpec(
        "pagerduty_error_key",
        "pagerduty-error-key",
        "PAGERDUTY_ERROR_KEY",
        "pagerduty_error_key",
        "PagerDuty error routing key",
    ),
    SecretSpec(
        "rollback_webhook_secret",
        "rollback-webhook-secret",
        "ROLLBACK_WEBHOOK_SECRET",
        "rollback_webhook_secret",
        "rollback webhook secret",
    ),
)


def read_secret_file(path: Path, what: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"{what}: file {path} does not exist") from None
    except PermissionError:
        raise ConfigError(f"{what}: file {path} is not readable by this user") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what}: cannot read {path}: {type(exc).__name__}") from None
    if not value:
        raise ConfigError(f"{what}: file {path} is empty")
    return value


def resolve_secret(
    spec: SecretSpec,
    flag_value: str | None,
    file_value: str | None,
    secrets_dir: str | None,
    environ: dict[str, str] | os._Environ[str],
) -> Secret | None:
    """--option, then --option-file, then $ENV, then --secrets-dir/<file_name>; None when absent."""
    if flag_value:
        return Secret(flag_value.strip(), f"--{spec.option}")
    if file_value:
        return Secret(read_secret_file(Path(file_value), spec.what), f"--{spec.option}-file {file_value}")
    env_value = environ.get(spec.env, "").strip()
    if env_value:
        return Secret(env_value, f"${spec.env}")
    if secrets_dir:
        candidate = Path(secrets_dir) / spec.file_name
        if candidate.exists():
            return Secret(read_secret_file(candidate, spec.what), f"--secrets-dir {candidate}")
    return None


def missing_secret_reason(spec: SecretSpec) -> str:
    return f"no {spec.what}: set ${spec.env}, --{spec.option}-file or --secrets-dir"


def spec_for(key: str) -> SecretSpec:
    return next(s for s in SECRET_SPECS if s.key == key)


@dataclass
class Settings:
    run_id: str
    alertmanager_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:9093"])
    api_urls: list[str] = field(default_factory=list)
    timeout: float = 10.0
    dry_run: bool = False
    only: list[str] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)
    secrets: dict[str, Secret | None] = field(default_factory=dict)
    # Slack
    slack_base_url: str | None = None
    slack_channel: str | None = None
    # Email through SendGrid
    smarthost: tuple[str, int] = ("smtp.sendgrid.net", 587)
    smtp_security: str = "starttls"  # starttls | tls | none
    smtp_user: str = "apikey"
    smtp_ca_file: str | None = None
    email_from: str = ""
    email_to: list[str] = field(default_factory=list)
    # PagerDuty
    pagerduty_url: str = "https://events.pagerduty.com/v2/enqueue"
    # Rollback agents
    rollback_alert: str = "CriticalErrorRate"
    require_rollback_ready: bool = False
    # Alertmanager status
    expect_peers: int | None = None
    # Test alert
    alert_name: str = DEFAULT_TEST_ALERT
    severity: str = "warning"
    labels: dict[str, str] = field(default_factory=dict)
    expect_receivers: list[str] = field(default_factory=list)
    allow_rollback_alert: bool = False
    # End to end
    e2e: bool = False
    e2e_timeout: float = 120.0
    capture_listen: tuple[str, int] = ("127.0.0.1", 9097)
    capture_receiver: str = "pipeline-tester"
    # Output
    fail_on_skip: bool = False
    hostname: str = field(default_factory=socket.gethostname)

    def secret(self, key: str) -> Secret | None:
        return self.secrets.get(key)
