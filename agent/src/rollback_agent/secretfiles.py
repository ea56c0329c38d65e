"""The agent's secrets (webhook secret, Slack URL), read from files or environment variables.

Never from argv; masked in every text the agent writes out (logs, answers, notifications).
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from rollback_agent.config import Config, ConfigError
from rollback_agent.logs import MASK, mask_in_logs

log = logging.getLogger(__name__)


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
    except UnicodeDecodeError as exc:
        raise ConfigError(
            source, [f"{key}: {path} is not UTF-8 text (byte {exc.start}): write the secret as text"]
        ) from None
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
    if slack is not None and slack.bot_token_file is None:  # a bot token: read by notify.read_tokens
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
    mask_in_logs(values)
    return Secrets(webhook=webhook, slack_url=slack_url, _all=tuple(sorted(values, key=len, reverse=True)))
