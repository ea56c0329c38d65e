"""Secrets (webhook secret, Slack URL) and environment files.

Secrets are read from files or environment variables named in the configuration, never from argv,
and are masked in every text the agent writes out (logs, answers, notifications).
"""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rollback_agent.config import Config, ConfigError

log = logging.getLogger(__name__)

MASK = "***"
_LOG_SECRETS: set[str] = set()


class RedactingFilter(logging.Filter):
    """Masks every known secret in log records (installed on the handlers the agent sets up)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _LOG_SECRETS:
            message = record.getMessage()
            masked = message
            for value in sorted(_LOG_SECRETS, key=len, reverse=True):
                masked = masked.replace(value, MASK)
            if masked != message:
                record.msg, record.args = masked, None
        return True


def configure_logging(level: str = "info") -> None:
    """Log to stderr (journald adds the time) with secrets masked; urllib3 never logs URLs."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(stream=sys.stderr, format="%(levelname)s %(name)s[%(process)d]: %(message)s")
    root.setLevel(level.upper())
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    # urllib3 logs request URLs at DEBUG, and a Slack webhook URL is a secret.
    logging.getLogger("urllib3").setLevel(logging.WARNING)


@dataclass(frozen=True)
class Secrets:
    webhook: str
    slack_url: str | None = None
    _all: tuple[str, ...] = field(default=(), repr=False)

    def __repr__(self) -> str:  # never print the values
        return "Secrets(webhook=***, slack_url=" + ("***" if self.slack_url else "None") + ")"

    def redact(self, text: str) -> str:
        for value in self._all:
            if value:
                text = text.replace(value, MASK)
        return text


def _read_secret(path: Path, key: str, source: str) -> str:
    try:
        info = path.stat()
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(source, [f"{key}: cannot read {path}: {exc.strerror or exc}"]) from None
    if not value:
        raise ConfigError(source, [f"{key}: {path} is empty"])
    if info.st_mode & stat.S_IROTH:
        log.warning("%s: %s is readable by every user; make it 0600 or 0640", key, path)
    return value


def _read_env(name: str, key: str, source: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigError(source, [f"{key}: environment variable {name} is not set or empty"])
    return value


def load_secrets(config: Config) -> Secrets:
    source = config.source or "<config>"
    if config.auth.password_file is not None:
        webhook = _read_secret(config.auth.password_file, "auth.password_file", source)
    else:
        webhook = _read_env(str(config.auth.password_env), "auth.password_env", source)
    slack_url = None
    slack = config.notify.slack
    if slack is not None:
        if slack.webhook_url_file is not None:
            slack_url = _read_secret(slack.webhook_url_file, "notify.slack.webhook_url_file", source)
        else:
            slack_url = _read_env(str(slack.webhook_url_env), "notify.slack.webhook_url_env", source)
        if not re.match(r"^https?://", slack_url):
            raise ConfigError(source, ["notify.slack: the webhook URL must start with https:// (or http://)"])
    values = [v for v in (webhook, slack_url) if v]
    if slack_url:
        # The path of a Slack webhook URL is the secret part; mask it on its own too.
        path = re.sub(r"^https?://[^/]+", "", slack_url)
        if len(path) > 8:
            values.append(path)
    _LOG_SECRETS.update(values)
    return Secrets(webhook=webhook, slack_url=slack_url, _all=tuple(sorted(values, key=len, reverse=True)))


_ENV_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def parse_environment_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them (comments, quotes, blank lines)."""
    env: dict[str, str] = {}
    text = path.read_text(encoding="utf-8")
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        match = _ENV_LINE.match(line)
        if not match:
            raise ValueError(f"{path}:{number}: not a KEY=VALUE line")
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
            if raw.strip().split("=", 1)[1].strip().startswith('"'):
                value = value.replace('\\"', '"').replace("\\\\", "\\")
        env[key] = value
    return env
