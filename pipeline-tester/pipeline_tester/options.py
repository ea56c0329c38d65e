"""Command-line options: the parser, and Settings built from flags, environment and files."""

from __future__ import annotations

import argparse
import os
import re
import time
import uuid
from urllib.parse import urlsplit

from . import TOOL_NAME, __version__
from .settings import (
    DEFAULT_TEST_ALERT,
    LABEL_NAME,
    RUN_LABEL,
    SECRET_SPECS,
    SEVERITIES,
    TEST_LABEL,
    ConfigError,
    Settings,
    resolve_secret,
)

EPILOG = """\
checks: alertmanager, slack, email, pagerduty (pagerduty:critical, pagerduty:error), agents,
test-alert, e2e (with --e2e or --only e2e). --only/--skip take these names, repeated or
comma-separated.

secrets (never printed): each comes from --NAME, --NAME-file PATH, its environment variable or
--secrets-dir DIR, in that order: SLACK_WEBHOOK_URL, SENDGRID_API_KEY, PAGERDUTY_CRITICAL_KEY,
PAGERDUTY_ERROR_KEY, ROLLBACK_WEBHOOK_SECRET. Prefer files or the environment: flags show in ps.
A missing secret SKIPs its check.

exit status: 0 every check passed or skipped, 1 a check failed (or skipped with --fail-on-skip),
2 bad usage or unreadable secret file, 3 internal error (a bug: please report it),
130 interrupted by Ctrl-C or SIGTERM (the test alert is still resolved).
See docs/pipeline-tester.md.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=TOOL_NAME,
        description="Check the whole alert path: Alertmanager, Slack, email (SendGrid), PagerDuty, the "
        "rollback agents, and a test alert's routing and delivery. Prints a PASS/FAIL table.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"{TOOL_NAME} {__version__}")
    g = p.add_argument_group("targets")
    g.add_argument(
        "--alertmanager-url",
        action="append",
        metavar="URL",
        help="Alertmanager base URL; repeat for each member of a cluster "
        "(default $ALERTMANAGER_URL or http://127.0.0.1:9093)",
    )
    g.add_argument(
        "--api-url",
        action="append",
        default=[],
        metavar="URL",
        help="a rollback agent's base URL (http://app1:9095); repeat for each agent",
    )
    g.add_argument(
        "--secrets-dir",
        metavar="DIR",
        help="directory with files named slack_webhook_url, sendgrid_api_key, pagerduty_critical_key, "
        "pagerduty_error_key, rollback_webhook_secret (like the Alertmanager role's)",
    )

    g = p.add_argument_group("selection and behaviour")
    g.add_argument("--only", action="append", default=[], metavar="CHECK", help="run only these checks")
    g.add_argument("--skip", action="append", default=[], metavar="CHECK", help="do not run these checks")
    g.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="timeout of each network operation (default 10)",
    )
    g.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be sent and send nothing (reads the routing with amtool if it can)",
    )
    g.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    g.add_argument("--no-color", action="store_true", help="no colours in the table (also: $NO_COLOR)")
    g.add_argument("--fail-on-skip", action="store_true", help="a skipped check makes the exit status 1")
    g.add_argument("-v", "--verbose", action="store_true", help="log each request to stderr (secrets masked)")

    g = p.add_argument_group("test alert")
    g.add_argument(
        "--test-alert", default=DEFAULT_TEST_ALERT, metavar="NAME", help="alertname (default %(default)s)"
    )
    g.add_argument(
        "--severity", default="warning", choices=SEVERITIES, help="severity label (default %(default)s)"
    )
    g.add_argument("--label", action="append", default=[], metavar="K=V", help="extra label; repeatable")
    g.add_argument(
        "--expect-receiver",
        action="append",
        default=[],
        metavar="NAME",
        help="fail unless the alert routes to exactly these receivers; repeatable",
    )
    g.add_argument(
        "--allow-rollback-alert",
        action="store_true",
        help="allow a test alert named like a rollback trigger (it may start a real rollback)",
    )
    g.add_argument(
        "--e2e",
        action="store_true",
        help="also wait until the test alert's notification is delivered before resolving it",
    )
    g.add_argument(
        "--e2e-timeout",
        type=_positive_float,
        default=120.0,
        metavar="SECONDS",
        help="how long --e2e waits for delivery; more than the route's group_wait (default 120)",
    )
    g.add_argument(
        "--capture-listen",
        default="127.0.0.1:9097",
        metavar="HOST:PORT",
        help="where --e2e's capture receiver listens (default %(default)s; 0.0.0.0:9097 for a "
        "remote Alertmanager)",
    )
    g.add_argument(
        "--capture-receiver",
        default="pipeline-tester",
        metavar="NAME",
        help="the Alertmanager receiver that posts to the capture receiver (default %(default)s)",
    )

    g = p.add_argument_group("Alertmanager and agents")
    g.add_argument("--expect-peers", type=int, metavar="N", help="fail unless the cluster has N peers")
    g.add_argument(
        "--rollback-alert",
        default="CriticalErrorRate",
        metavar="NAME",
        help="alert the agents plan a rollback for (default %(default)s)",
    )
    g.add_argument(
        "--require-rollback-ready",
        action="store_true",
        help="fail an agent whose guards would block the rollback",
    )

    g = p.add_argument_group("Slack")
    g.add_argument(
        "--slack-base-url",
        metavar="URL",
        help="send to this scheme://host[:port] instead of the webhook's (a proxy, a test server)",
    )
    g.add_argument("--slack-channel", metavar="CHANNEL", help="channel to ask for (legacy webhooks only)")

    g = p.add_argument_group("email (SendGrid SMTP)")
    g.add_argument(
        "--smarthost",
        default="smtp.sendgrid.net:587",
        metavar="HOST:PORT",
        help="SMTP server (default %(default)s)",
    )
    g.add_argument(
        "--smtp-security",
        default="starttls",
        choices=("starttls", "tls", "none"),
        help="starttls (default), tls (implicit, port 465) or none (plain text: local capture only)",
    )
    g.add_argument("--smtp-user", default="apikey", help="SMTP AUTH user (SendGrid: %(default)s)")
    g.add_argument("--smtp-ca-file", metavar="PATH", help="CA bundle to verify the SMTP server with")
    g.add_argument("--email-from", metavar="ADDRESS", help="sender (default alertmanager@<this host>)")
    g.add_argument("--email-to", action="append", default=[], metavar="ADDRESS", help="recipient; repeatable")

    g = p.add_argument_group("PagerDuty")
    g.add_argument(
        "--pagerduty-url",
        default="https://events.pagerduty.com/v2/enqueue",
        metavar="URL",
        help="Events API v2 endpoint (default %(default)s)",
    )

    g = p.add_argument_group("secrets (see below)")
    for spec in SECRET_SPECS:
        g.add_argument(
            f"--{spec.option}", metavar="VALUE", help=f"{spec.what} (visible in ps: prefer the file)"
        )
        g.add_argument(f"--{spec.option}-file", metavar="PATH", help=f"file holding the {spec.what}")
    return p


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _split(values: list[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _host_port(text: str, what: str) -> tuple[str, int]:
    match = re.fullmatch(r"\[?([^\]]*?)\]?:(\d{1,5})", text.strip())
    if not match or not match.group(1) or not 0 < int(match.group(2)) < 65536:
        raise ConfigError(f"{what}: expected HOST:PORT, got {text!r}")
    return match.group(1), int(match.group(2))


def _http_url(text: str, what: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what}: expected an http(s) URL, got {text!r}")
    return text.rstrip("/")


def settings_from(args: argparse.Namespace, environ: dict[str, str] | os._Environ[str]) -> Settings:
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    am_urls = args.alertmanager_url or [environ.get("ALERTMANAGER_URL") or "http://127.0.0.1:9093"]
    labels: dict[str, str] = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not LABEL_NAME.match(key):
            raise ConfigError(f"--label {item!r}: expected NAME=VALUE with a Prometheus label name")
        if key in ("alertname", "severity", TEST_LABEL, RUN_LABEL):
            flag = {"alertname": "--test-alert", "severity": "--severity"}.get(key)
            raise ConfigError(
                f"--label {key}=…: " + (f"use {flag}" if flag else "this label is the tester's own")
            )
        labels[key] = value
    if not re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", args.test_alert):
        raise ConfigError(f"--test-alert {args.test_alert!r}: not a valid alert name")
    if args.email_from and "@" not in args.email_from:
        raise ConfigError(f"--email-from {args.email_from!r}: not an email address")
    for address in args.email_to:
        if "@" not in address:
            raise ConfigError(f"--email-to {address!r}: not an email address")
    if args.secrets_dir and not os.path.isdir(args.secrets_dir):
        raise ConfigError(f"--secrets-dir {args.secrets_dir}: not a directory")
    secrets = {
        spec.key: resolve_secret(
            spec, getattr(args, spec.key), getattr(args, f"{spec.key}_file"), args.secrets_dir, environ
        )
        for spec in SECRET_SPECS
    }
    settings = Settings(
        run_id=run_id,
        alertmanager_urls=list(dict.fromkeys(_http_url(u, "--alertmanager-url") for u in am_urls)),
        api_urls=list(dict.fromkeys(_http_url(u, "--api-url") for u in args.api_url)),
        timeout=args.timeout,
        dry_run=args.dry_run,
        only=_split(args.only),
        skip=_split(args.skip),
        secrets=secrets,
        slack_base_url=_http_url(args.slack_base_url, "--slack-base-url") if args.slack_base_url else None,
        slack_channel=args.slack_channel,
        smarthost=_host_port(args.smarthost, "--smarthost"),
        smtp_security=args.smtp_security,
        smtp_user=args.smtp_user,
        smtp_ca_file=args.smtp_ca_file,
        email_to=args.email_to,
        pagerduty_url=_http_url(args.pagerduty_url, "--pagerduty-url"),
        rollback_alert=args.rollback_alert,
        require_rollback_ready=args.require_rollback_ready,
        expect_peers=args.expect_peers,
        alert_name=args.test_alert,
        severity=args.severity,
        labels=labels,
        expect_receivers=_split(args.expect_receiver),
        allow_rollback_alert=args.allow_rollback_alert,
        e2e=args.e2e,
        e2e_timeout=args.e2e_timeout,
        capture_listen=_host_port(args.capture_listen, "--capture-listen"),
        capture_receiver=args.capture_receiver,
        fail_on_skip=args.fail_on_skip,
    )
    settings.email_from = args.email_from or f"alertmanager@{settings.hostname}"
    if args.smtp_ca_file and not os.path.isfile(args.smtp_ca_file):
        raise ConfigError(f"--smtp-ca-file {args.smtp_ca_file}: no such file")
    return settings
