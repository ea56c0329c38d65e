"""Logging set-up: to stderr (journald adds the time), every known secret masked."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

MASK = "***"
_LOG_SECRETS: set[str] = set()


def mask_in_logs(values: Iterable[str]) -> None:
    """Mask these values in every log record from now on (secrets read by this process)."""
    _LOG_SECRETS.update(v for v in values if v)


_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """Control characters written visibly (``\\n``, ``\\x1b``): a request cannot forge a log line."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group()) or _code(ord(m.group())), text)


def _code(point: int) -> str:
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}"


class RedactingFilter(logging.Filter):
    """Masks every known secret and escapes control characters in the message of log records
    (installed on the handlers the agent sets up; tracebacks keep their lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = message
        for value in sorted(_LOG_SECRETS, key=len, reverse=True):
            masked = masked.replace(value, MASK)
        masked = escape_controls(masked)
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
