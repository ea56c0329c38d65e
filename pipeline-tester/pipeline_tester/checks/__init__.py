"""The checks, in the order of the table."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..settings import Settings
from .agents import AgentCheck, NoAgents
from .alert_probe import AlertProbe
from .alertmanager_status import AlertmanagerStatus
from .base import Check
from .pagerduty import PagerDutyCheck
from .sendgrid import EmailCheck
from .slack import SlackCheck

GROUPS = ("alertmanager", "slack", "email", "pagerduty", "agents", "test-alert", "e2e")


def _label(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def build_checks(settings: Settings) -> list[Check]:
    urls = settings.alertmanager_urls
    checks: list[Check] = [AlertmanagerStatus(u, _label(u) if len(urls) > 1 else None) for u in urls]
    checks += [SlackCheck(), EmailCheck(), PagerDutyCheck("critical"), PagerDutyCheck("error")]
    checks += [AgentCheck(u) for u in settings.api_urls] or [NoAgents()]
    checks.append(AlertProbe(urls))
    return checks


def check_groups(checks: list[Check]) -> set[str]:
    """Names --only/--skip accept: the groups and every check's full name."""
    return set(GROUPS) | {c.name for c in checks} | {c.group for c in checks}
