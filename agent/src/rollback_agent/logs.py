"""Logging set-up: to stderr (journald adds the time), every known secret masked."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

MASK = "***"
_LOG_SECRETS: set[str] = set()


def mask_in_logs(values: Iterable[str]) -> None:
    """Mask these values in every log record from now on (secrets read by this process)."""
    _LOG_SECRETS.update(v for v in values if v)


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
