"""The rollback triggers of the agents, read from each agent (GET /api/admin/rollback/status).

A test alert named like one of an agent's ``monitored_triggers`` could start a real rollback if
it reaches that agent with labels in its scope, so the tester refuses such a name unless
--allow-rollback-alert is given. The names come from the agents themselves (their configuration
decides them), never from a list of the tester's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import requests

from .alertmanager import api
from .checks.agents import AUTH_USER, agent_base
from .http import describe_error, request
from .settings import DEFAULT_TEST_ALERT, ConfigError, Settings, missing_secret_reason, spec_for

STATUS_PATH = "/api/admin/rollback/status"


@dataclass
class AgentTriggers:
    """Trigger names per agent base URL, and why the others could not be read."""

    names: dict[str, frozenset[str]] = field(default_factory=dict)
    unread: dict[str, str] = field(default_factory=dict)

    def agents_with(self, alert: str) -> list[str]:
        return sorted(url for url, names in self.names.items() if alert in names)


def read_triggers(session: requests.Session, base: str, secret: str, timeout: float) -> frozenset[str]:
    """The keys of one agent's ``monitored_triggers``; ValueError with the reason otherwise."""
    url = api(base, STATUS_PATH)
    try:
        response = request(session, "GET", url, auth=(AUTH_USER, secret), timeout=timeout)
    except requests.RequestException as exc:
        raise ValueError(describe_error(exc, url)) from None
    if response.status_code != 200:
        raise ValueError(f"GET {STATUS_PATH}: HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise ValueError(f"GET {STATUS_PATH}: the answer is not JSON") from None
    triggers = body.get("monitored_triggers") if isinstance(body, dict) else None
    if not isinstance(triggers, dict):
        raise ValueError(f"GET {STATUS_PATH}: no monitored_triggers in the answer (not a rollback agent?)")
    return frozenset(str(name) for name in triggers)


def agent_triggers(session: requests.Session, settings: Settings) -> AgentTriggers:
    found = AgentTriggers()
    secret = settings.secret("rollback_webhook_secret")
    for base in dict.fromkeys(agent_base(url) for url in settings.api_urls):
        if secret is None:
            found.unread[base] = missing_secret_reason(spec_for("rollback_webhook_secret"))
            continue
        try:
            found.names[base] = read_triggers(session, base, secret.reveal(), settings.timeout)
        except ValueError as exc:
            found.unread[base] = str(exc)
    return found


def guard_test_alert(session: requests.Session, settings: Settings) -> None:
    """Refuse (ConfigError, before anything is sent) a test alert that is, or may be, a trigger.

    Refused: a name that an agent lists, and any name but the default when an agent given with
    --api-url could not be read (it might act on it). Without --api-url there is nothing to ask:
    the agents check says so (SKIP), and the test alert goes out as named.
    """
    if settings.allow_rollback_alert or not settings.api_urls:
        return
    alert = settings.alert_name
    found = agent_triggers(session, settings)
    hits = found.agents_with(alert)
    if hits:
        raise ConfigError(
            f"--test-alert {alert} is a rollback trigger of {', '.join(hits)} (its monitored_triggers): "
            "if it reaches the rollback agents with labels in their scope, a real rollback starts. Add "
            "--allow-rollback-alert if that is what you want (the agents check tests the rollback path "
            "without it)"
        )
    if found.unread and alert != DEFAULT_TEST_ALERT:
        why = "; ".join(f"{base}: {reason}" for base, reason in sorted(found.unread.items()))
        raise ConfigError(
            f"--test-alert {alert}: cannot tell whether it is a rollback trigger ({why}). Give the "
            "webhook secret so every agent's monitored_triggers can be read, or add --allow-rollback-alert"
        )
