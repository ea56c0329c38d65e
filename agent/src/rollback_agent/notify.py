"""Slack notifications, one per phase, sent from a background thread.

``Notifier.send`` only queues the message: sending (with tenacity retries and backoff) happens on
a daemon thread, so a slow or broken Slack never delays or fails a rollback. Failures are logged
without the webhook URL and counted in ``rollback_agent_notifications_total``.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rollback_agent import metrics
from rollback_agent.config import SlackConfig
from rollback_agent.durations import format_duration

log = logging.getLogger(__name__)
# urllib3 logs request URLs at DEBUG level, and a Slack webhook URL is a secret.
logging.getLogger("urllib3").setLevel(logging.WARNING)

TITLES = {
    "initiated": ":rotating_light: Rollback initiated",
    "database": ":floppy_disk: Rollback: database migration rollback",
    "application": ":arrows_counterclockwise: Rollback: application rollback",
    "verify": ":mag: Rollback: verifying the services",
    "success": ":white_check_mark: Rollback succeeded",
    "failure": ":x: Rollback failed",
    "timed_out": ":hourglass: Rollback timed out",
    "interrupted": ":warning: Rollback interrupted",
    "blocked": ":no_entry: Automated rollback blocked",
    "dry_run": ":memo: Rollback dry run (nothing executed)",
}
COLORS = {
    "success": "good",
    "failure": "danger",
    "timed_out": "danger",
    "interrupted": "danger",
    "blocked": "warning",
    "dry_run": "#439FE0",
}


def progress_bar(percent: int, width: int = 10) -> str:
    percent = max(0, min(100, percent))
    filled = round(percent * width / 100)
    return "[" + "█" * filled + "░" * (width - filled) + f"] {percent}%"


def short(sha: str | None) -> str:
    return sha[:10] if sha else "?"


@dataclass
class Event:
    kind: str
    incident_id: str
    host: str
    alert: str | None = None
    trigger: str | None = None
    reason: str | None = None
    from_sha: str | None = None
    to_sha: str | None = None
    progress: int = 0
    eta: str | None = None
    duration: float | None = None
    health: str | None = None
    failed_step: str | None = None
    error: str | None = None
    follow_up: list[str] = field(default_factory=list)
    detail: str | None = None


def render(event: Event, channel: str | None, username: str) -> dict[str, Any]:
    """The Slack incoming-webhook body for an event."""
    title = TITLES.get(event.kind, event.kind)
    lines = [f"*{title}* · `{event.incident_id}` · host `{event.host}`"]
    if event.alert:
        lines.append(f"*Alert:* {event.alert}" + (f" (trigger `{event.trigger}`)" if event.trigger else ""))
    if event.reason:
        lines.append(f"*Reason:* {event.reason}")
    if event.from_sha or event.to_sha:
        lines.append(f"*Release:* `{short(event.from_sha)}` → `{short(event.to_sha)}`")
    lines.append(f"*Progress:* `{progress_bar(event.progress)}`")
    if event.eta:
        lines.append(f"*ETA:* {event.eta}")
    if event.detail:
        lines.append(event.detail)
    if event.duration is not None:
        lines.append(f"*Total duration:* {format_duration(event.duration)}")
    if event.health:
        lines.append(f"*Health:* {event.health}")
    if event.failed_step:
        lines.append(f"*Failed step:* {event.failed_step}")
    if event.error:
        lines.append(f"*Error:* ```{event.error[-1200:]}```")
    if event.follow_up:
        lines.append("*Follow-up:*\n" + "\n".join(f"• {item}" for item in event.follow_up))
    text = "\n".join(lines)
    body: dict[str, Any] = {
        "username": username,
        "text": f"{title}: {event.incident_id} on {event.host}",
        "attachments": [
            {
                "color": COLORS.get(event.kind, "#cccccc"),
                "mrkdwn_in": ["text"],
                "text": text,
                "footer": f"rollback-agent · {event.kind}",
                "ts": int(time.time()),
            }
        ],
    }
    if channel:
        body["channel"] = channel
    return body


class _RetryableError(Exception):
    pass


def _retryable(exc: BaseException) -> bool:
    import requests

    return isinstance(exc, (_RetryableError, requests.ConnectionError, requests.Timeout))


class Notifier:
    """Queues messages and sends them to a Slack incoming webhook from a background thread."""

    def __init__(self, config: SlackConfig | None, url: str | None, *, max_delay: float = 120.0) -> None:
        self.config = config
        self._url = url
        self.max_delay = max_delay
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=200)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition(self._lock)

    @property
    def enabled(self) -> bool:
        return self.config is not None and bool(self._url)

    def send(self, event: Event) -> None:
        """Queue a message; returns at once."""
        if not self.enabled or self.config is None:
            return
        body = render(event, self.config.channel, self.config.username)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                if self._thread is None:  # a worker that exits gives queued messages a few seconds
                    atexit.register(self.flush, 5.0)
                self._thread = threading.Thread(target=self._loop, name="slack-notifier", daemon=True)
                self._thread.start()
            self._pending += 1
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            with self._lock:
                self._pending -= 1
            metrics.NOTIFICATIONS.labels(outcome="dropped").inc()
            log.error("notification queue full: dropped the %s message of %s", event.kind, event.incident_id)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued message was sent (or given up); False if time ran out."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def _loop(self) -> None:
        while True:
            body = self._queue.get()
            if body is None:
                return
            try:
                self._deliver(body)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _post(self, body: dict[str, Any]) -> None:
        assert self.config is not None and self._url
        import requests

        response = requests.post(self._url, json=body, timeout=self.config.timeout)
        if response.status_code == 429 or response.status_code >= 500:
            raise _RetryableError(f"HTTP {response.status_code}")
        if response.status_code >= 400:
            raise RuntimeError(f"HTTP {response.status_code} (not retried: check the webhook URL)")

    def _deliver(self, body: dict[str, Any]) -> None:
        # requests and tenacity are imported here, on the sender thread, off the rollback's path.
        from tenacity import (
            RetryError,
            Retrying,
            retry_if_exception,
            stop_after_attempt,
            stop_after_delay,
            wait_exponential,
        )

        assert self.config is not None
        retrying = Retrying(
            stop=stop_after_attempt(self.config.max_attempts) | stop_after_delay(self.max_delay),
            wait=wait_exponential(multiplier=0.5, min=0.5, max=30),
            retry=retry_if_exception(_retryable),
            reraise=False,
        )
        footer = body["attachments"][0]["footer"]
        try:
            retrying(self._post, body)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            metrics.NOTIFICATIONS.labels(outcome="failed").inc()
            log.error(
                "Slack notification (%s) not delivered after %d attempts: %s",
                footer,
                exc.last_attempt.attempt_number,
                _describe(last),
            )
            return
        except Exception as exc:
            metrics.NOTIFICATIONS.labels(outcome="failed").inc()
            log.error("Slack notification (%s) failed: %s", footer, _describe(exc))
            return
        metrics.NOTIFICATIONS.labels(outcome="sent").inc()


def _describe(exc: BaseException | None) -> str:
    """An error without the URL (the Slack webhook URL is a secret)."""
    if exc is None:
        return "unknown error"
    import requests

    if isinstance(exc, (_RetryableError, RuntimeError)) and not isinstance(exc, requests.RequestException):
        return str(exc)
    return type(exc).__name__
