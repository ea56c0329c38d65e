"""Slack notifications, one per phase, and PagerDuty escalations, sent from a background thread.

``Notifier.send`` only queues the message: sending (with tenacity retries and backoff) happens on
a daemon thread, so a slow or broken Slack never delays or fails a rollback. Failures are logged
without the webhook URL and counted in ``rollback_agent_notifications_total``.

With ``notify.slack.bot_token_file`` an incident is one Slack thread: its first message is posted
with ``chat.postMessage`` and every later one is a reply (``thread_ts``, kept in the state database
so the rollback process and the web workers post to the same thread). With a webhook URL the
messages are flat, and lines meant only for a thread (an attached alert) are not sent.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from rollback_agent import metrics
from rollback_agent.config import PagerDutyConfig, SlackConfig
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
    "waiting_for_wave": ":hourglass_flowing_sand: Rollback waiting for the earlier waves of the fleet",
    "aborted": ":octagonal_sign: Rollback aborted: an earlier wave of the fleet did not succeed",
    "dry_run": ":memo: Rollback dry run (nothing executed)",
    "attached": ":paperclip: Alert attached",
    "confirmed": ":white_check_mark: Rollback confirmed",
    "not_confirmed": ":rotating_light: Rollback did not clear the alert: a person is needed",
    "stuck": ":sos: Rollback could not restore the host: a person is needed",
}
# Kinds that are one line in the incident's thread, and not sent as flat messages.
THREAD_ONLY = frozenset({"attached"})
COLORS = {
    "success": "good",
    "failure": "danger",
    "timed_out": "danger",
    "interrupted": "danger",
    "blocked": "warning",
    "aborted": "warning",
    "dry_run": "#439FE0",
    "confirmed": "good",
    "not_confirmed": "danger",
    "stuck": "danger",
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
    """The Slack body for an event (an incoming webhook and ``chat.postMessage`` read the same)."""
    title = TITLES.get(event.kind, event.kind)
    if event.kind in THREAD_ONLY:
        return _body(event, title, f"*{title}* · {event.detail or ''}".rstrip(" ·"), channel, username)
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
    return _body(event, title, "\n".join(lines), channel, username)


def _body(event: Event, title: str, text: str, channel: str | None, username: str) -> dict[str, Any]:
    summary = f"{title}: {event.incident_id} on {event.host}"
    if event.kind in ("not_confirmed", "stuck"):
        summary = "<!here> " + summary  # the escalation calls the people in the channel
    body: dict[str, Any] = {
        "username": username,
        "text": summary,
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


class ThreadBook(Protocol):
    """Where the Slack thread of each incident is kept (the state database)."""

    def slack_thread(self, incident_id: str) -> str | None: ...

    def set_slack_thread(self, incident_id: str, ts: str) -> None: ...


@dataclass
class _Item:
    target: str  # slack | pagerduty
    body: dict[str, Any]
    incident_id: str
    kind: str


class Notifier:
    """Queues messages and sends them (Slack, PagerDuty) from a background thread."""

    def __init__(
        self,
        config: SlackConfig | None,
        url: str | None,
        *,
        token: str | None = None,
        threads: ThreadBook | None = None,
        pagerduty: PagerDutyConfig | None = None,
        routing_key: str | None = None,
        max_delay: float = 120.0,
    ) -> None:
        self.config = config
        self._url = url
        self._token = token
        self.threads = threads
        self.pagerduty = pagerduty
        self._routing_key = routing_key
        self.max_delay = max_delay
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=200)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition(self._lock)

    @property
    def enabled(self) -> bool:
        return self.config is not None and bool(self._url or self._token)

    @property
    def threaded(self) -> bool:
        """Slack messages of an incident go to one thread (a bot token)."""
        return self.config is not None and bool(self._token) and self.threads is not None

    def send(self, event: Event) -> None:
        """Queue a Slack message; returns at once."""
        if not self.enabled or self.config is None:
            return
        if event.kind in THREAD_ONLY and not self.threaded:
            return
        body = render(event, self.config.channel, self.config.username)
        self._put(_Item("slack", body, event.incident_id, event.kind))

    def page(self, event: Event, summary: str) -> None:
        """Queue a PagerDuty Events v2 trigger (when a routing key is configured)."""
        if self.pagerduty is None or not self._routing_key:
            return
        body = {
            "routing_key": self._routing_key,
            "event_action": "trigger",
            "dedup_key": f"rollback-agent/{event.host}/{event.incident_id}",
            "payload": {
                "summary": summary[:1000],
                "source": event.host,
                "severity": self.pagerduty.severity,
                "component": "rollback-agent",
                "custom_details": {
                    "incident_id": event.incident_id,
                    "alert": event.alert,
                    "from_sha": event.from_sha,
                    "to_sha": event.to_sha,
                    "detail": event.detail,
                },
            },
        }
        self._put(_Item("pagerduty", body, event.incident_id, event.kind))

    def _put(self, item: _Item) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                if self._thread is None:  # a worker that exits gives queued messages a few seconds
                    atexit.register(self.flush, 5.0)
                self._thread = threading.Thread(target=self._loop, name="notifier", daemon=True)
                self._thread.start()
            self._pending += 1
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with self._lock:
                self._pending -= 1
            metrics.NOTIFICATIONS.labels(outcome="dropped").inc()
            log.error("notification queue full: dropped the %s message of %s", item.kind, item.incident_id)

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
            item = self._queue.get()
            if item is None:
                return
            try:
                self._deliver(item)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _post(self, item: _Item) -> None:
        import requests

        if item.target == "pagerduty":
            assert self.pagerduty is not None
            response = requests.post(self.pagerduty.api_url, json=item.body, timeout=self.pagerduty.timeout)
            _raise_for(response.status_code, "check notify.pagerduty.routing_key_file")
            return
        assert self.config is not None
        if not self.threaded:
            assert self._url
            response = requests.post(self._url, json=item.body, timeout=self.config.timeout)
            _raise_for(response.status_code, "check the webhook URL")
            return
        assert self.threads is not None
        body = dict(item.body)
        thread = self.threads.slack_thread(item.incident_id)
        if thread:
            body["thread_ts"] = thread
        response = requests.post(
            self.config.api_url,
            json=body,
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=self.config.timeout,
        )
        _raise_for(response.status_code, "check notify.slack.bot_token_file")
        try:
            answer = response.json()
        except ValueError:
            raise RuntimeError("chat.postMessage answered something that is not JSON") from None
        if not answer.get("ok"):
            error = str(answer.get("error", "unknown error"))[:100]
            if error == "ratelimited":
                raise _RetryableError("Slack API: ratelimited")
            raise RuntimeError(f"Slack API error: {error}")
        if not thread and answer.get("ts"):
            self.threads.set_slack_thread(item.incident_id, str(answer["ts"]))

    def _deliver(self, item: _Item) -> None:
        # requests and tenacity are imported here, on the sender thread, off the rollback's path.
        from tenacity import (
            RetryError,
            Retrying,
            retry_if_exception,
            stop_after_attempt,
            stop_after_delay,
            wait_exponential,
        )

        attempts = self.config.max_attempts if self.config is not None else 5
        retrying = Retrying(
            stop=stop_after_attempt(attempts) | stop_after_delay(self.max_delay),
            wait=wait_exponential(multiplier=0.5, min=0.5, max=30),
            retry=retry_if_exception(_retryable),
            reraise=False,
        )
        what = ("PagerDuty event" if item.target == "pagerduty" else "Slack notification") + f" ({item.kind})"
        try:
            retrying(self._post, item)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            metrics.NOTIFICATIONS.labels(outcome="failed").inc()
            log.error(
                "%s not delivered after %d attempts: %s",
                what,
                exc.last_attempt.attempt_number,
                _describe(last),
            )
            return
        except Exception as exc:
            metrics.NOTIFICATIONS.labels(outcome="failed").inc()
            log.error("%s failed: %s", what, _describe(exc))
            return
        metrics.NOTIFICATIONS.labels(outcome="sent").inc()


def _raise_for(status: int, hint: str) -> None:
    if status == 429 or status >= 500:
        raise _RetryableError(f"HTTP {status}")
    if status >= 400:
        raise RuntimeError(f"HTTP {status} (not retried: {hint})")


def _describe(exc: BaseException | None) -> str:
    """An error without the URL (the Slack webhook URL is a secret)."""
    if exc is None:
        return "unknown error"
    import requests

    if isinstance(exc, (_RetryableError, RuntimeError)) and not isinstance(exc, requests.RequestException):
        return str(exc)
    return type(exc).__name__
