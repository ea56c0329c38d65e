"""--e2e: evidence that the test alert's notification was delivered.

Three sources, each read before the alert is posted and again while waiting:
- the capture receiver the tester runs, when the routing sends test alerts to it (exact: it sees
  the alert's run label);
- Alertmanager's own counters, per integration of the receivers the alert routes to
  (``alertmanager_notification_requests_total`` minus ``..._failed_total``), so Slack, PagerDuty
  and email deliveries count without the tester seeing them (shared with other alerts);
- the rollback agents' ``rollback_agent_webhooks_total`` by outcome, for the agents that a routed
  receiver's webhook points at (a refusal such as ``unauthorized`` is a failure).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..alertmanager import NOTIFY_METRICS, RunningConfig, get_status, notification_counters
from ..capture import CaptureServer
from ..http import where
from ..model import CheckError, Outcome
from ..settings import RUN_LABEL
from .agents import REJECTED, agent_base, agent_label, webhook_counters
from .base import Context

log = logging.getLogger(__name__)
_REQUESTS, _FAILED = NOTIFY_METRICS
ROLLBACK_WEBHOOK_PATH = "/api/admin/rollback/"


@dataclass
class DeliveryWatch:
    ctx: Context
    am_urls: list[str]
    capture: CaptureServer | None = None
    capture_error: str = ""
    am_before: Counter[tuple[str, str]] | None = None
    agents_before: dict[str, Counter[str]] = field(default_factory=dict)

    # ---- before the alert is posted ----------------------------------------------------------
    def start(self) -> None:
        host, port = self.ctx.settings.capture_listen
        try:
            self.capture = CaptureServer(host, port).start()
        except OSError as exc:
            self.capture_error = (
                f"cannot listen on {host}:{port} for the capture receiver: {exc.strerror or exc}"
            )
        self.am_before = self._am_counters()
        for url in self.ctx.settings.api_urls:
            base = agent_base(url)
            counts = self._agent_counters(base)
            if counts is not None:
                self.agents_before[base] = counts

    def stop(self) -> None:
        if self.capture is not None:
            self.capture.stop()

    def _am_counters(self) -> Counter[tuple[str, str]] | None:
        total: Counter[tuple[str, str]] = Counter()
        try:
            for url in self.am_urls:
                total.update(notification_counters(self.ctx.session, url, self.ctx.timeout))
        except Exception as exc:  # metrics are one source of evidence among three
            log.info("cannot read Alertmanager metrics: %s", exc)
            return None
        return total

    def _agent_counters(self, base: str) -> Counter[str] | None:
        try:
            return webhook_counters(self.ctx.session, base, self.ctx.timeout)
        except Exception as exc:
            log.info("cannot read the metrics of agent %s: %s", where(base), exc)
            return None

    # ---- after it was posted and routed --------------------------------------------------------
    def wait(self, receivers: list[str], suppressed: list[str]) -> Outcome:
        s = self.ctx.settings
        if suppressed:
            raise CheckError(f"the test alert is suppressed, nothing will be sent: {'; '.join(suppressed)}")
        config = self._config()
        expected = config.integrations(receivers) if config and self.am_before is not None else Counter()
        agents = self._targeted_agents(config.webhooks(receivers) if config else [])
        wants_capture = s.capture_receiver in receivers
        if wants_capture and self.capture is None:
            raise CheckError(self.capture_error or "the capture receiver is not running")
        if not expected and not wants_capture and not agents:
            raise CheckError(
                f"nothing to deliver: the alert routes to {', '.join(receivers) or '(none)'}, with no "
                f"integration to count and no route to the capture receiver {s.capture_receiver!r} "
                "(see docs/pipeline-tester.md, 'End to end')"
            )

        started = time.monotonic()
        seen_at: float | None = None
        delivered: dict[str, tuple[int, int]] = {}
        agent_seen: dict[str, Counter[str]] = {}
        while True:
            if wants_capture and seen_at is None and self.capture is not None:
                hit = self.capture.find(RUN_LABEL, s.run_id)
                seen_at = None if hit is None else max(hit.received_at - started, 0.0)
            if expected and self.am_before is not None and (after := self._am_counters()) is not None:
                delivered = {kind: _delta(self.am_before, after, kind) for kind in expected}
            for base in agents:
                if base not in agent_seen and (now := self._agent_counters(base)) is not None:
                    new = now - self.agents_before[base]
                    if new:
                        agent_seen[base] = new
            refused = any(set(seen) & REJECTED for seen in agent_seen.values())  # final: stop waiting
            done = refused or (
                (seen_at is not None or not wants_capture)
                and all(delivered.get(k, (0, 0))[0] >= n for k, n in expected.items())
                and len(agent_seen) == len(agents)
            )
            if done or time.monotonic() - started >= s.e2e_timeout or self.ctx.cancel.is_set():
                break
            if self.capture is not None:
                self.capture.wait(1.0)
            else:
                time.sleep(1.0)
        return self._verdict(
            time.monotonic() - started,
            receivers,
            expected,
            delivered,
            wants_capture,
            seen_at,
            agents,
            agent_seen,
        )

    def _config(self) -> RunningConfig | None:
        try:
            status = get_status(self.ctx.session, self.am_urls[0], self.ctx.timeout)
            return RunningConfig.parse(str(status["config"]["original"]))
        except (CheckError, KeyError, TypeError) as exc:
            log.info("cannot read the running config: %s", exc)
            return None

    def _targeted_agents(self, webhook_urls: list[str]) -> list[str]:
        """The --api-url agents that a routed receiver's webhook points at.

        Matched by host:port; when Alertmanager names the agents differently (an address where
        the tester was given a host name), every agent counts as soon as a routed webhook is a
        rollback agent's.
        """
        hooks = {where(u) for u in webhook_urls if ROLLBACK_WEBHOOK_PATH in urlsplit(u).path}
        if not hooks:
            return []
        matched = [b for b in self.agents_before if where(b) in hooks]
        return matched or list(self.agents_before)

    def _verdict(
        self,
        waited: float,
        receivers: list[str],
        expected: Counter[str],
        delivered: dict[str, tuple[int, int]],
        wants_capture: bool,
        seen_at: float | None,
        agents: list[str],
        agent_seen: dict[str, Counter[str]],
    ) -> Outcome:
        s = self.ctx.settings
        parts: list[str] = []
        problems: list[str] = []
        if wants_capture:
            if seen_at is not None:
                parts.append(f"capture receiver got it after {seen_at:.1f}s")
            else:
                host, port = s.capture_listen
                problems.append(
                    f"nothing reached the capture receiver {s.capture_receiver!r} on {host}:{port}"
                )
        for kind in sorted(expected):
            ok, failed = delivered.get(kind, (0, 0))
            text = f"{kind} {ok}/{expected[kind]} delivered"
            if failed:
                text += f", {failed} failed attempt{'s' if failed != 1 else ''}"
            (parts if ok >= expected[kind] else problems).append(text)
        for base in agents:
            outcomes = agent_seen.get(base)
            label = f"agent {agent_label(base)}"
            if not outcomes:
                problems.append(f"{label} recorded no webhook")
            elif refused := sorted(set(outcomes) & REJECTED):
                problems.append(f"{label} refused the webhook ({', '.join(refused)})")
            else:
                parts.append(f"{label} got the webhook ({', '.join(sorted(outcomes))})")
        data: dict[str, Any] = {
            "waited_s": round(waited, 1),
            "receivers": receivers,
            "expected_integrations": dict(expected),
            "delivered": {k: {"ok": v[0], "failed_attempts": v[1]} for k, v in delivered.items()},
            "capture_seen_after_s": round(seen_at, 1) if seen_at is not None else None,
            "agents": {agent_label(b): dict(agent_seen.get(b, {})) for b in agents},
        }
        if self.ctx.cancel.is_set():
            problems.insert(0, "interrupted")
        if problems:
            hint = ""
            if not parts and not any(failed for _ok, failed in delivered.values()):
                hint = (
                    " - nothing was even attempted: is the route's group_wait longer than --e2e-timeout, "
                    "or did a test run in the last minutes leave its alert group waiting for group_interval?"
                )
            raise CheckError(
                f"not delivered within {waited:.0f}s: {'; '.join(problems)}"
                + (f" (ok: {'; '.join(parts)})" if parts else "")
                + hint,
                data,
            )
        note = " (Alertmanager's counters are shared with other alerts)" if expected else ""
        return Outcome(f"delivered: {'; '.join(parts)}{note}", data)


def _delta(before: Counter[tuple[str, str]], after: Counter[tuple[str, str]], kind: str) -> tuple[int, int]:
    """(delivered, failed attempts) of one integration between two readings."""
    made = after[(_REQUESTS, kind)] - before[(_REQUESTS, kind)]
    failed = after[(_FAILED, kind)] - before[(_FAILED, kind)]
    return int(made - failed), int(failed)
