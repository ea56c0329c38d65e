"""The parts of issue 11 that need no host: the configuration of the new keys and the timer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from rollback_agent.config import ConfigError, parse_config

pytestmark = pytest.mark.unit

MINIMAL = {
    "auth": {"password_env": "ROLLBACK_WEBHOOK_SECRET"},
    "deployment": {"repo": "/srv/app"},
    "services": {"units": ["app.service"]},
}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, **data}, source="test.yml")
    return info.value.problems


def test_guard_defaults_of_the_closed_loop() -> None:
    guards = parse_config(MINIMAL).guards
    assert (guards.clock_skew, guards.corroboration_window, guards.verify_window) == (30.0, 300.0, 600.0)
    assert parse_config({**MINIMAL, "guards": {"verify_window": "15m"}}).guards.verify_window == 900.0
    assert problems({"guards": {"verify_window": "soon"}}) == [
        "guards.verify_window: invalid duration 'soon' (use e.g. 30s, 15m, 2h or 1h30m)"
    ]


@pytest.mark.parametrize(
    ("slack", "expected"),
    [
        ({"bot_token_file": "/etc/t"}, "bot_token_file needs a channel"),
        (
            {"bot_token_file": "/etc/t", "channel": "#x", "webhook_url_file": "/etc/u"},
            "set bot_token_file (threads) or a webhook URL (flat messages), not both",
        ),
        ({"bot_token_file": "etc/t", "channel": "#x"}, "must be an absolute path"),
        ({"channel": "#x"}, "set exactly one of webhook_url_file, webhook_url_env or bot_token_file"),
    ],
)
def test_slack_bot_token_settings(slack: dict[str, str], expected: str) -> None:
    found = problems({"notify": {"slack": slack}})
    assert len(found) == 1 and found[0].startswith("notify.slack") and expected in found[0], found


def test_pagerduty_settings() -> None:
    config = parse_config(
        {**MINIMAL, "notify": {"pagerduty": {"routing_key_file": "/etc/rollback-agent/pd"}}}
    )
    assert config.notify.pagerduty is not None
    assert config.notify.pagerduty.api_url == "https://events.pagerduty.com/v2/enqueue"
    assert config.notify.pagerduty.severity == "critical"
    assert problems({"notify": {"pagerduty": {}}}) == [
        "missing required key 'notify.pagerduty.routing_key_file'"
    ]
    assert (
        "notify.pagerduty.severity"
        in problems({"notify": {"pagerduty": {"routing_key_file": "/k", "severity": "loud"}}})[0]
    )


def test_secrets_of_the_new_keys_are_read_and_never_logged(tmp_path: Path, caplog, monkeypatch) -> None:
    from rollback_agent.host import Host
    from rollback_agent.logs import RedactingFilter

    monkeypatch.setenv("ROLLBACK_WEBHOOK_SECRET", "hook-secret-1234")
    token, key = tmp_path / "token", tmp_path / "key"
    token.write_text("xoxb-never-logged\n")
    key.write_text("PD-never-logged\n")
    config = parse_config(
        {
            **MINIMAL,
            "state_dir": str(tmp_path / "state"),
            "deployment": {"repo": str(tmp_path / "app")},
            "notify": {
                "slack": {"bot_token_file": str(token), "channel": "#ops"},
                "pagerduty": {"routing_key_file": str(key)},
            },
        }
    )
    host = Host(config)
    assert host.notifier.threaded and host.notifier.enabled
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "oops xoxb-never-logged PD-never-logged", (), None
    )
    RedactingFilter().filter(record)
    assert "never-logged" not in record.getMessage()
    key.write_text("\n")
    with pytest.raises(ConfigError, match=r"notify\.pagerduty\.routing_key_file: .* is empty"):
        Host(config)


def test_the_timer_runs_every_job_and_survives_a_failing_one(caplog) -> None:
    from rollback_agent.ticker import Ticker

    calls: list[tuple[str, float]] = []

    def good(_host: Any, now: float) -> str:
        calls.append(("good", now))
        return "done"

    def bad(_host: Any, _now: float) -> None:
        raise RuntimeError("job broke")

    class FakeHost:
        def now(self) -> float:
            return 42.0

    ticker = Ticker(FakeHost(), jobs={"bad": bad, "good": good})  # type: ignore[arg-type]
    assert ticker.tick() == {"bad": None, "good": "done"}
    assert ticker.tick(100.0)["good"] == "done"
    assert calls == [("good", 42.0), ("good", 100.0)]
    assert "timer job bad failed" in caplog.text
