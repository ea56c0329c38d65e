"""The test alert: post it to Alertmanager, confirm it is held and routed, resolve it.

With --e2e it also waits, before resolving, until the notification has been delivered
(checks/delivery.py says how that is known).

Resolving before the group_wait of its route has passed means Alertmanager sends nothing for a
plain (non --e2e) run: it never notified about the alert, so the resolved alert needs no message.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from .. import TOOL_NAME
from ..alertmanager import api, find_alerts, post_alerts
from ..http import describe_error
from ..model import CheckError, CheckResult, Outcome, Planned, Status
from ..routing import amtool_receivers
from ..secrets import display_url
from ..settings import RUN_LABEL, TEST_LABEL
from .base import Check, Context, run_timed
from .delivery import DeliveryWatch

log = logging.getLogger(__name__)
POLL_S = 0.25


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AlertProbe(Check):
    name = "test-alert"
    group = "test-alert"
    e2e_name = "e2e"

    def __init__(self, am_urls: list[str]) -> None:
        self.am_urls = am_urls
        self.started_at = dt.datetime.now(dt.timezone.utc)

    # ---- the alert ----------------------------------------------------------------------------
    def labels(self, ctx: Context) -> dict[str, str]:
        s = ctx.settings
        labels = {"alertname": s.alert_name, "severity": s.severity, "instance": s.hostname, "job": TOOL_NAME}
        labels.update(s.labels)
        labels.update({TEST_LABEL: "true", RUN_LABEL: s.run_id})
        return labels

    def alert(self, ctx: Context, ends_at: dt.datetime) -> dict[str, Any]:
        s = ctx.settings
        return {
            "labels": self.labels(ctx),
            "annotations": {
                "summary": f"[TEST] Alert pipeline test {s.run_id}: not an incident, no action needed",
                "description": (
                    f"Sent by {TOOL_NAME} on {s.hostname} to check "
                    "routing and delivery. It is resolved by the tester within seconds or minutes."
                ),
            },
            "startsAt": _iso(self.started_at),
            "endsAt": _iso(ends_at),
            "generatorURL": "",
        }

    def _firing_until(self, ctx: Context) -> dt.datetime:
        # If the tester dies before resolving, Alertmanager resolves the alert by itself at endsAt.
        hold = max(300.0, ctx.settings.e2e_timeout + 120.0) if ctx.settings.e2e else 300.0
        return self.started_at + dt.timedelta(seconds=hold)

    # ---- dry run ------------------------------------------------------------------------------
    def plan(self, ctx: Context) -> list[Planned]:
        firing = self.alert(ctx, self._firing_until(ctx))
        plans: list[Planned] = []
        for url in self.am_urls:
            target = display_url(api(url, "/api/v2/alerts"), secret=False)
            plans.append(Planned(self.name, f"POST {target} (firing)", [firing]))
            routed = amtool_receivers(url, firing["labels"], ctx.timeout)
            if routed is not None:
                plans.append(
                    Planned(
                        self.name,
                        f"amtool route test against {display_url(url, secret=False)}: "
                        f"would route to {', '.join(routed) or '(none)'}",
                    )
                )
            plans.append(Planned(self.name, f"POST {target} (resolve: endsAt = now)"))
        if ctx.settings.e2e:
            host, port = ctx.settings.capture_listen
            plans.append(
                Planned(
                    self.e2e_name,
                    f"listen on http://{host}:{port}/ for receiver "
                    f"{ctx.settings.capture_receiver!r}; wait up to "
                    f"{ctx.settings.e2e_timeout:g}s for delivery",
                )
            )
        return plans

    def run(self, ctx: Context) -> Outcome:  # pragma: no cover - execute() drives this check
        raise NotImplementedError

    # ---- the real thing -----------------------------------------------------------------------
    def execute(self, ctx: Context) -> list[CheckResult]:
        posted: list[str] = []
        state: dict[str, Any] = {}
        watch = DeliveryWatch(ctx, self.am_urls) if ctx.settings.e2e else None
        if watch is not None:
            watch.start()  # before the alert exists: the counters' "before" readings
        self.started_at = dt.datetime.now(dt.timezone.utc)
        firing = self.alert(ctx, self._firing_until(ctx))

        def post_and_confirm() -> Outcome:
            for url in self.am_urls:
                post_alerts(ctx.session, url, [firing], ctx.timeout)
                posted.append(url)
            return self._confirm(ctx, firing["labels"], state)

        results: list[CheckResult] = []
        try:
            test_result = run_timed(self.name, post_and_confirm)
            if watch is not None:
                if test_result.status is not Status.PASS:
                    why = "the test alert did not get through (see test-alert)"
                    results.append(CheckResult(self.e2e_name, Status.SKIP, why))
                else:
                    results.append(
                        run_timed(self.e2e_name, lambda: watch.wait(state["receivers"], state["suppressed"]))
                    )
        finally:
            if watch is not None:
                watch.stop()
            resolve_started = time.monotonic()
            resolve_problem = self._resolve(ctx, posted, firing)
        test_result.duration_s += time.monotonic() - resolve_started
        if resolve_problem:
            test_result.status = Status.FAIL
            test_result.detail = (
                f"{test_result.detail}; {resolve_problem}" if test_result.detail else resolve_problem
            )
        elif posted:
            test_result.detail += "; resolved"
        return [test_result, *results]

    def _confirm(self, ctx: Context, labels: dict[str, str], state: dict[str, Any]) -> Outcome:
        """Every Alertmanager holds the alert and has routed it; the receivers agree."""
        per_am: dict[str, list[str]] = {}
        states: dict[str, str] = {}
        suppressed: list[str] = []
        for url in self.am_urls:
            alert = self._wait_held(ctx, url)
            receivers = [str(r.get("name")) for r in alert.get("receivers") or []]
            per_am[url] = receivers
            status = alert.get("status") or {}
            states[url] = str(status.get("state"))
            if status.get("state") == "suppressed":
                by = [f"silence {i}" for i in status.get("silencedBy") or []]
                by += [f"inhibited by {i}" for i in status.get("inhibitedBy") or []]
                suppressed.append(f"{display_url(url, secret=False)}: {', '.join(by) or 'suppressed'}")
        first = per_am[self.am_urls[0]]
        data: dict[str, Any] = {
            "labels": labels,
            "receivers": first,
            "state": states,
            "per_alertmanager": {display_url(u, secret=False): r for u, r in per_am.items()},
        }
        state.update(receivers=first, suppressed=suppressed)
        if any(sorted(r) != sorted(first) for r in per_am.values()):
            text = "; ".join(f"{display_url(u, secret=False)}: {', '.join(r)}" for u, r in per_am.items())
            raise CheckError(
                f"the Alertmanagers route the alert differently (configs out of sync?): {text}", data
            )

        amtool = amtool_receivers(self.am_urls[0], labels, ctx.timeout)
        data["amtool_receivers"] = amtool
        if amtool is not None and sorted(amtool) != sorted(first):
            raise CheckError(
                f"API says receivers {', '.join(first)} but amtool's route test of the running "
                f"config says {', '.join(amtool)}",
                data,
            )

        expected = ctx.settings.expect_receivers
        if expected:
            routed = [r for r in first if r in expected or r != ctx.settings.capture_receiver]
            if sorted(set(routed)) != sorted(set(expected)):
                raise CheckError(
                    f"routed to {', '.join(routed) or '(none)'}, expected {', '.join(expected)}", data
                )

        s = ctx.settings
        where = "Alertmanager" if len(self.am_urls) == 1 else f"all {len(self.am_urls)} Alertmanagers"
        detail = (
            f"{s.alert_name} (severity {s.severity}) held by {where}, routed to "
            f"{', '.join(first) or '(no receiver)'}"
        )
        if amtool is not None:
            detail += " (amtool agrees)"
        if suppressed:
            detail += f"; SUPPRESSED, nothing will be sent: {'; '.join(suppressed)}"
        return Outcome(detail, data)

    def _wait_held(self, ctx: Context, url: str) -> dict[str, Any]:
        deadline = time.monotonic() + ctx.timeout
        matchers = {RUN_LABEL: ctx.settings.run_id}
        last: list[dict[str, Any]] = []
        while True:
            last = find_alerts(ctx.session, url, matchers, ctx.timeout)
            ready = [
                a
                for a in last
                if a.get("receivers") and (a.get("status") or {}).get("state") != "unprocessed"
            ]
            if ready:
                return ready[0]
            if time.monotonic() >= deadline:
                seen = "listed but not yet routed" if last else "not listed"
                raise CheckError(
                    f"{display_url(url, secret=False)} accepted the alert but it is {seen} "
                    f"after {ctx.timeout:g}s"
                )
            time.sleep(POLL_S)

    def _resolve(self, ctx: Context, posted: list[str], firing: dict[str, Any]) -> str:
        """Resolve on every Alertmanager that got the alert; '' when done, else what went wrong."""
        if not posted:
            return ""
        ends = max(
            dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1),
            self.started_at + dt.timedelta(milliseconds=1),
        )
        resolved = {**firing, "endsAt": _iso(ends)}
        problems: list[str] = []
        for url in posted:
            where = display_url(url, secret=False)
            try:
                post_alerts(ctx.session, url, [resolved], ctx.timeout)
                deadline = time.monotonic() + ctx.timeout
                while find_alerts(ctx.session, url, {RUN_LABEL: ctx.settings.run_id}, ctx.timeout):
                    if time.monotonic() >= deadline:
                        problems.append(
                            f"{where} still lists the alert as active after resolving "
                            "(clock skew between this host and Alertmanager?)"
                        )
                        break
                    time.sleep(POLL_S)
            except CheckError as exc:
                problems.append(f"resolving on {where} failed: {exc.detail}")
            except Exception as exc:
                problems.append(f"resolving on {where} failed: {describe_error(exc, url)}")
        if problems:
            problems.append(f"it ends by itself at {firing['endsAt']}")
        return "; ".join(problems)
