"""Secrets that cannot be printed by accident, and the redactor every output goes through."""

from __future__ import annotations

import logging
import threading
from urllib.parse import quote, urlsplit

MASK = "***"
# Every secret is masked, however short (a one-letter secret makes the output odd, not leaky).
_MIN_SECRET_LENGTH = 1


class Secret:
    """A secret value: ``str()``, ``repr()`` and f-strings show ``***``; ``reveal()`` gives the value."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source  # where it came from ("--x-file /path", "$ENV"), safe to print

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK}, source={self.source!r})"

    def __format__(self, spec: str) -> str:
        return MASK

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("secrets are not picklable")


class Redactor:
    """Replaces every registered secret (and its URL-encoded form) with ``***`` in a text."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        variants = {value, quote(value, safe=""), quote(value, safe="/:")}
        with self._lock:
            self._values.update(v for v in variants if len(v) >= _MIN_SECRET_LENGTH)

    def add_secret(self, secret: Secret) -> None:
        value = secret.reveal()
        self.add(value)
        # A webhook URL is secret in its path (Slack: /services/T../B../token); requests
        # and urllib3 put host and path separately into their error messages.
        parts = urlsplit(value)
        if parts.scheme and parts.netloc:
            for piece in (parts.path, parts.query, parts.path.rstrip("/").rsplit("/", 1)[-1]):
                if len(piece) >= 8:
                    self.add(piece)
            if parts.password:
                self.add(parts.password)

    def __call__(self, text: str) -> str:
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for value in values:
            if value in text:
                text = text.replace(value, MASK)
        return text


class RedactingFilter(logging.Filter):
    """Logging filter that formats the record early and redacts it (for --verbose output)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redact(record.getMessage())
        record.args = None
        if record.exc_info:
            import traceback

            record.msg += "\n" + self._redact("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        return True


def display_url(url: str, *, secret: bool) -> str:
    """A URL fit for output: for a secret URL only scheme and host, the rest masked."""
    if not secret:
        parts = urlsplit(url)
        if parts.password:
            return url.replace(f":{parts.password}@", f":{MASK}@")
        return url
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}/{MASK}"
