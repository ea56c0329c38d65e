"""Command line: parse flags, build the checks, run them, print the table or JSON, set the exit code."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TextIO
from urllib.parse import urlsplit

from . import TOOL_NAME
from .checks import build_checks, check_groups
from .checks.alert_probe import AlertProbe
from .checks.base import Check, Context
from .http import new_session
from .model import CheckResult, Planned, SkipCheckError, Status
from .options import build_parser, settings_from
from .report import Summary, document, planned_text, render_json, table
from .secrets import RedactingFilter, Redactor
from .settings import ConfigError, Settings
from .triggers import guard_test_alert

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
log = logging.getLogger(TOOL_NAME)


def select(checks: list[Check], settings: Settings) -> list[Check]:
    known = check_groups(checks)
    for name in (*settings.only, *settings.skip):
        if name not in known:
            raise ConfigError(f"unknown check {name!r}: choose from {', '.join(sorted(known))}")

    # e2e is a step of the test alert's flow: --only e2e runs that flow with --e2e on, and
    # --skip e2e runs it without waiting for delivery.
    if "e2e" in settings.only:
        settings.e2e = True
    if "e2e" in settings.skip:
        settings.e2e = False

    def chosen(check: Check) -> bool:
        names = {check.name, check.group} | ({"e2e"} if check.group == "test-alert" else set())
        if settings.only and not names & set(settings.only):
            return False
        return not names & set(settings.skip)

    return [c for c in checks if chosen(c)]


def run_checks(checks: list[Check], ctx: Context) -> tuple[list[CheckResult], bool]:
    """Run the checks concurrently (they wait on the network); results keep the checks' order.

    On Ctrl-C or SIGTERM the checks are told to stop; the test alert's flow still resolves its
    alert, and the results of the checks that finished are kept. Returns (results, interrupted).
    """
    if not checks:
        return [], False
    pool = ThreadPoolExecutor(max_workers=min(8, len(checks)), thread_name_prefix="check")
    futures: list[Future[list[CheckResult]]] = [pool.submit(c.execute, ctx) for c in checks]
    interrupted = False
    try:
        wait(futures)
    except KeyboardInterrupt:
        interrupted = True
        ctx.cancel.set()  # the test alert's flow stops waiting and resolves its alert
        for f in futures:
            f.cancel()
        wait(futures)  # a second Ctrl-C stops at once, without waiting for the cleanup
    pool.shutdown(wait=True)
    results = [r for f in futures if f.done() and not f.cancelled() for r in f.result()]
    if interrupted:
        why = "stopped by a signal (Ctrl-C or SIGTERM); checks not finished are missing"
        results.append(CheckResult("interrupted", Status.FAIL, why))
    return results, interrupted


def dry_run(checks: list[Check], ctx: Context) -> tuple[list[CheckResult], list[Planned]]:
    results: list[CheckResult] = []
    planned: list[Planned] = []
    for check in checks:
        names = [check.name, *(["e2e"] if check.name == "test-alert" and ctx.settings.e2e else [])]
        try:
            plans = check.plan(ctx)
        except SkipCheckError as exc:
            results.extend(CheckResult(n, Status.SKIP, exc.reason) for n in names)
            continue
        except ConfigError:
            raise
        except Exception as exc:
            results.extend(
                CheckResult(n, Status.FAIL, f"cannot plan: {type(exc).__name__}: {exc}") for n in names
            )
            continue
        planned.extend(plans)
        for n in names:
            actions = [p.action for p in plans if p.check == n]
            results.append(CheckResult(n, Status.SKIP, "dry run: would " + "; then ".join(actions)))
    return results, planned


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(
    argv: list[str] | None = None,
    environ: dict[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    redact = Redactor()
    try:
        return _run(args, env, out, err, redact)
    except Exception as exc:  # a bug: say so, never with a secret in it
        detail = "".join(traceback.format_exception(exc)) if args.verbose else f"{type(exc).__name__}: {exc}"
        print(f"{TOOL_NAME}: internal error: {redact(detail)}", file=err)
        return EXIT_INTERNAL


def _run(
    args: argparse.Namespace,
    env: dict[str, str] | os._Environ[str],
    out: TextIO,
    err: TextIO,
    redact: Redactor,
) -> int:
    try:
        settings = settings_from(args, env)
    except ConfigError as exc:
        print(f"{TOOL_NAME}: error: {redact(str(exc))}", file=err)
        return EXIT_USAGE
    for secret in settings.secrets.values():
        if secret is not None:
            redact.add_secret(secret)
    for url in (*settings.alertmanager_urls, *settings.api_urls):
        if urlsplit(url).password:  # http://user:password@host: mask it like any secret
            redact.add(str(urlsplit(url).password))

    if args.verbose:
        handler = logging.StreamHandler(err)
        handler.addFilter(RedactingFilter(redact))
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logging.basicConfig(level=logging.INFO, handlers=[handler])
        logging.getLogger("urllib3").setLevel(logging.WARNING)

    ctx = Context(settings=settings, session=new_session(), redact=redact)
    try:
        checks = select(build_checks(settings), settings)
        if any(isinstance(c, AlertProbe) for c in checks):
            guard_test_alert(ctx.session, settings)
    except ConfigError as exc:
        print(f"{TOOL_NAME}: error: {redact(str(exc))}", file=err)
        return EXIT_USAGE

    # SIGTERM (a CI timeout, ansible) stops like Ctrl-C: the test alert is still resolved.
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    planned: list[Planned] = []
    interrupted = False
    try:
        if settings.dry_run:
            results, planned = dry_run(checks, ctx)
        else:
            results, interrupted = run_checks(checks, ctx)
    except KeyboardInterrupt:  # a second Ctrl-C, or one during --dry-run
        interrupted = True
        results = [CheckResult("interrupted", Status.FAIL, "stopped by a signal (Ctrl-C or SIGTERM)")]
    summary = Summary.of(results, time.monotonic() - started, settings.fail_on_skip and not settings.dry_run)

    if args.json:
        doc = document(results, summary, run_id=settings.run_id, dry_run=settings.dry_run, planned=planned)
        print(redact(render_json(doc, redact)), file=out)
    else:
        colour = not args.no_color and "NO_COLOR" not in env and out.isatty()
        text = ""
        if planned:
            text += planned_text(planned) + "\n\n"
        text += table(results, colour=colour) + "\n\n" + summary.line(settings.run_id)
        print(redact(text), file=out)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if summary.ok else EXIT_FAILED
