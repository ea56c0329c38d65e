"""`scripts/lab break`: deploy a bad release under load and follow the incident live.

Everything shown is read from the real components, once a second:
  Prometheus (mon1)        /api/v1/alerts        the rule going pending, firing, resolved
  Alertmanager (mon1+mon2) /api/v2/alerts        the alert arriving and its receivers
  each rollback agent      /metrics, /api/admin/rollback/status   webhooks, incident phases, the sha
  the capture server       /api/messages         what Slack/PagerDuty/email received
The returned Report holds the timeline (seconds after the bad deploy started) that the e2e
tests assert on and the benchmarks print.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from lab_kit import deploys, services
from lab_kit.inventory import Host, Lab
from lab_kit.paths import ROOT, STATE
from lab_kit.runner import PlayResult
from lab_kit.ui import event, step, warn

EXPECTED_ALERT = {"v3": "CriticalErrorRate", "v3-slow": "CriticalP95Latency"}
RESULTS = ("success", "failed", "timed_out", "interrupted")


def get_json(url: str, headers: dict[str, str] | None = None, timeout: float = 3) -> Any:
    req = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - http to the lab
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - http to the lab
        return json.loads(resp.read())


def get_text(url: str, timeout: float = 3) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
        return str(resp.read().decode())


def webhook_counts(metrics_text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in re.finditer(r'^rollback_agent_webhooks_total\{outcome="([^"]+)"\} (\S+)$', metrics_text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


@dataclass
class Report:
    release: str
    alert: str
    bad_sha: str
    good_sha: str
    started_at: float
    label: str = "bad release"  # how the follower names the release deployed
    marks: dict[str, float] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    webhooks: dict[str, dict[str, float]] = field(default_factory=dict)
    final_sha: dict[str, str | None] = field(default_factory=dict)
    am_receivers: list[str] = field(default_factory=list)
    escalations: list[str] = field(default_factory=list)  # the agents' pages (not_the_cause.py)
    waves: dict[str, int | None] = field(default_factory=dict)  # each app host's fleet wave (status)
    checks: dict[str, Any] = field(default_factory=dict)  # what a scenario read on the hosts (canary_fails)
    fired: list[str] = field(default_factory=list)
    deploy_rc: int | None = None
    success: bool = False
    reason: str = ""

    def mark(self, name: str, at: float | None = None) -> None:
        if name not in self.marks:
            self.marks[name] = round((at or time.time()) - self.started_at, 2)

    def save(self) -> str:
        path = STATE / "incidents" / f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(self.started_at))}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))
        return str(path)


class Follower:
    def __init__(self, lab: Lab, report: Report, t0: float) -> None:
        self.lab = lab
        self.r = report
        self.t0 = t0
        self.apps = lab.group("app")
        self.mons = lab.group("monitoring")
        self.prom_states: dict[str, str] = {}
        self.seen_am: set[tuple[str, str]] = set()
        self.phase: dict[str, tuple[str | None, int | None]] = {}
        self.sha: dict[str, str | None] = {}
        self.hooks: dict[str, dict[str, float]] = {}
        self.capture_after = max((m["id"] for m in services.messages(lab)), default=0)
        self.baseline_incidents: dict[str, set[str]] = {}
        self.auth = {"Authorization": deploys._auth()}

    def say(self, msg: str, color: str = "0") -> None:
        self.r.events.append((round(time.time() - self.r.started_at, 2), msg))
        event(msg, self.t0, color)

    def agent_url(self, host: Host, path: str) -> str:
        return f"http://127.0.0.1:{host.port('rollback-agent')}{path}"

    def baseline(self) -> None:
        for host in self.apps:
            st = deploys.agent_status(self.lab, host) or {}
            self.baseline_incidents[host.name] = {i["incident_id"] for i in st.get("history") or []}
            self.sha[host.name] = deploys.current_sha(st)
            self.r.waves[host.name] = (st.get("fleet") or {}).get("wave")
            try:
                self.hooks[host.name] = webhook_counts(get_text(self.agent_url(host, "/metrics")))
            except OSError:
                self.hooks[host.name] = {}

    def poll_prometheus(self) -> None:
        """Every rollback trigger (rollback="true"): pending, firing, and resolved once all are gone."""
        url = f"http://127.0.0.1:{self.mons[0].port('prometheus')}/api/v1/alerts"
        try:
            alerts = get_json(url)["data"]["alerts"]
        except (OSError, ValueError, KeyError):
            return
        now: dict[str, tuple[str, dict[str, Any]]] = {}
        for a in alerts:
            if a["labels"].get("rollback") != "true":
                continue
            name = a["labels"]["alertname"]
            if a["state"] == "firing" or name not in now:
                now[name] = (a["state"], a)
        for name, (state, a) in sorted(now.items()):
            if self.prom_states.get(name) == state:
                continue
            self.prom_states[name] = state
            self.r.mark(state)
            self.r.mark(f"{state}_{name}")
            if state == "pending":
                self.say(f"Prometheus: {name} is PENDING (value {float(a.get('value') or 0):.3g})", "33")
            else:
                if name not in self.r.fired:
                    self.r.fired.append(name)
                labels = {k: v for k, v in a["labels"].items() if k != "alertname"}
                self.say(f"Prometheus: {name} is FIRING {labels}", "1;31")
        for name in [n for n in self.prom_states if n not in now]:
            del self.prom_states[name]
            self.r.mark(f"resolved_{name}")
            self.say(f"Prometheus: {name} resolved", "32")
        if self.r.fired and not now and "firing" in self.r.marks:
            if "resolved" not in self.r.marks:
                self.say("Prometheus: every rollback trigger is resolved", "1;32")
            self.r.mark("resolved")

    def poll_alertmanagers(self) -> None:
        flt = urllib.parse.quote('rollback="true"')
        for mon in self.mons:
            url = f"http://127.0.0.1:{mon.port('alertmanager')}/api/v2/alerts?filter={flt}"
            try:
                alerts = get_json(url)
            except (OSError, ValueError):
                continue
            for a in alerts:
                name = a["labels"]["alertname"]
                if (a.get("status") or {}).get("state") != "active" or (mon.name, name) in self.seen_am:
                    continue
                self.seen_am.add((mon.name, name))
                receivers = sorted({r["name"] for r in a.get("receivers", [])})
                self.r.am_receivers = sorted(set(self.r.am_receivers) | set(receivers))
                self.r.mark(f"alertmanager_{mon.name}")
                self.say(f"Alertmanager {mon.name}: {name} active, receivers: {', '.join(receivers)}", "35")

    def poll_agents(self) -> None:
        for host in self.apps:
            try:
                counts = webhook_counts(get_text(self.agent_url(host, "/metrics")))
            except OSError:
                counts = None
            if counts is not None:
                before = self.hooks.get(host.name, {})
                for outcome, value in sorted(counts.items()):
                    delta = value - before.get(outcome, 0.0)
                    if delta > 0:
                        if outcome != "ignored":  # not a leftover (e.g. an earlier alert resolving)
                            self.r.mark(f"webhook_{host.name}")
                        self.r.webhooks.setdefault(host.name, {})
                        self.r.webhooks[host.name][outcome] = (
                            self.r.webhooks[host.name].get(outcome, 0) + delta
                        )
                        self.say(
                            f"{host.name} agent: webhook received -> {outcome}"
                            + (f" (x{delta:.0f})" if delta > 1 else ""),
                            "36",
                        )
                self.hooks[host.name] = counts
            st = deploys.agent_status(self.lab, host)
            if st is None:
                continue
            sha = deploys.current_sha(st)
            if sha != self.sha.get(host.name):
                name = (
                    f"{self.r.label} {self.r.release}"
                    if sha == self.r.bad_sha
                    else ("good release" if sha == self.r.good_sha else "another release")
                )
                self.say(f"{host.name}: now runs {name} ({(sha or '-')[:10]})", "1")
                if sha == self.r.bad_sha:
                    self.r.mark(f"bad_live_{host.name}")
                if sha == self.r.good_sha and f"bad_live_{host.name}" in self.r.marks:
                    self.r.mark(f"back_on_good_{host.name}")
                self.sha[host.name] = sha
            running = st.get("in_progress") or {}
            if running.get("kind") == "rollback":
                key = (running.get("phase"), running.get("progress"))
                if key != self.phase.get(host.name):
                    self.phase[host.name] = key
                    self.r.mark(f"{running.get('phase')}_{host.name}")
                    bar = progress_bar(int(running.get("progress") or 0))
                    awaiting = ", ".join((running.get("fleet") or {}).get("awaiting") or [])
                    self.say(
                        f"{host.name} rollback {running.get('incident_id')}: {running.get('phase')} {bar}"
                        + (f" waiting for: {awaiting}" if awaiting else ""),
                        "36",
                    )
            for inc in st.get("history") or []:
                if inc["incident_id"] in self.baseline_incidents.get(host.name, set()):
                    continue
                known = self.r.incidents.get(host.name, {}).get(inc["incident_id"])
                self.r.incidents.setdefault(host.name, {})[inc["incident_id"]] = inc
                if known is not None and "detail" in known:
                    inc["detail"] = known["detail"]
                if known is None:
                    self.say(
                        f"{host.name}: incident {inc['incident_id']} ({inc['status']}) for "
                        f"{inc.get('alert_name')}: {inc.get('reason') or ''}",
                        "1;36",
                    )
                if inc.get("result") and (known or {}).get("result") != inc["result"]:
                    self.r.mark(f"rollback_done_{host.name}", inc.get("ended_at"))
                    inc["detail"] = self.incident_detail(host, inc["incident_id"])
                    phases = ", ".join(
                        f"{p['name']} {((p['ended_at'] or 0) - p['started_at']):.1f}s"
                        for p in inc.get("phases") or []
                        if p.get("ended_at")
                    )
                    color = "1;32" if inc["result"] == "success" else "1;31"
                    self.say(
                        f"{host.name}: rollback {inc['incident_id']} {inc['result'].upper()} in "
                        f"{inc.get('duration') or 0:.1f}s ({phases})",
                        color,
                    )

    def incident_detail(self, host: Host, incident_id: str) -> dict[str, Any]:
        """What the agent recorded besides the status' keys: the downgrade's preview, its backup."""
        try:
            found = deploys.agent_get(self.lab, host, f"/api/admin/rollback/incidents/{incident_id}")
        except (OSError, ValueError):
            return {}
        return dict(found.get("detail") or {}) if isinstance(found, dict) else {}

    def poll_capture(self) -> None:
        for m in services.messages(self.lab, after=self.capture_after):
            self.capture_after = max(self.capture_after, m["id"])
            where = m.get("channel") or ""
            self.say(f"notification {m['kind']} {where}: {m.get('title', '')[:110]}", "2")

    def only_duplicates(self, grace: float) -> bool:
        """Every agent got webhooks for a while, all of them 'duplicate', and no incident started."""
        first = min((v for k, v in self.r.marks.items() if k.startswith("webhook_")), default=None)
        if first is None or time.time() - self.r.started_at - first < grace or self.r.incidents:
            return False
        return all(set(self.r.webhooks.get(h.name, {})) == {"duplicate"} for h in self.apps)

    def await_verification(self, grace: float) -> None:
        """Give the agents a little time to confirm their rollbacks (Alertmanager's resolved webhook)."""
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            pending = [
                i
                for incs in self.r.incidents.values()
                for i in incs.values()
                if (i.get("verification") or {}).get("state") == "pending"
            ]
            if not pending:
                return
            time.sleep(2)
            self.poll_agents()

    def done(self) -> bool:
        finished = all(
            any(i.get("result") for i in self.r.incidents.get(h.name, {}).values()) for h in self.apps
        )
        return finished and "resolved" in self.r.marks

    def poll(self) -> None:
        self.poll_prometheus()
        self.poll_alertmanagers()
        self.poll_agents()
        self.poll_capture()


def progress_bar(pct: int, width: int = 20) -> str:
    filled = max(0, min(width, round(width * pct / 100)))
    return "[" + "#" * filled + "." * (width - filled) + f"] {pct:3d}%"


def start_load(lab: Lab, duration: float, rate: float) -> subprocess.Popen[str]:
    targets = [f"http://{h.address}:8000" for h in lab.group("app")]
    cmd = [
        sys.executable,
        str(ROOT / "examples" / "sample-app" / "loadgen.py"),
        "--rate",
        str(rate),
        "--duration",
        str(int(duration)),
        "--report-every",
        "10",
        "--concurrency",
        "16",
    ]
    for t in targets:
        cmd += ["--target", t]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def steady_load(lab: Lab, duration: float, rate: float, warmup: float, quiet: bool) -> subprocess.Popen[str]:
    """The load generator, its report lines shown (unless quiet), after ``warmup`` seconds of it: the
    rules need a steady baseline of traffic to compute ratios."""
    load = start_load(lab, duration, rate)
    t0 = time.monotonic()

    def pump() -> None:
        assert load.stdout is not None
        for line in load.stdout:
            if not quiet:
                event(line.rstrip(), t0, "2")

    threading.Thread(target=pump, daemon=True).start()
    time.sleep(warmup)
    return load


def run(
    lab: Lab,
    release: str = "v3",
    timeout: float = 600,
    rate: float = 15.0,
    warmup: float = 20.0,
    quiet_load: bool = False,
) -> Report:
    shas = deploys.host_release_shas(lab)
    alert = EXPECTED_ALERT[release]
    apps = lab.group("app")
    statuses = {h.name: deploys.agent_status(lab, h) for h in apps}
    if any(s is None for s in statuses.values()):
        raise SystemExit("lab: an agent does not answer: is the lab up? (make lab)")
    good = {deploys.current_sha(s) for s in statuses.values()}
    if len(good) != 1 or None in good:
        raise SystemExit(f"lab: the app hosts do not run one release ({good}): run make lab first")
    good_sha = str(next(iter(good)))
    step(
        f"breaking the lab: deploy {release} ({shas[release][:10]}) over "
        f"{deploys.release_name(good_sha, shas)} under load; expected alert: {alert}"
    )
    load = steady_load(lab, timeout + warmup, rate, warmup, quiet_load)
    report = Report(release, alert, shas[release], good_sha, time.time())
    follower = Follower(lab, report, time.monotonic())
    follower.baseline()
    result: dict[str, PlayResult | int] = {}

    def do_deploy() -> None:
        # --force: the bad release is marked bad after the first break; the lab breaks on purpose
        result["rc"] = deploys.deploy(lab, release, force=True, quiet=True)

    deployer = threading.Thread(target=do_deploy, daemon=True)
    follower.say(
        f"deploying {release} with playbooks/deploy.yml -e force=true (log under {STATE / 'logs'})", "1"
    )
    deployer.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            follower.poll()
            if not deployer.is_alive() and "deploy_done" not in report.marks:
                report.mark("deploy_done")
                report.deploy_rc = int(result.get("rc", -1))  # type: ignore[arg-type]
                follower.say(f"deploy.yml finished (rc {report.deploy_rc})", "1")
                if report.deploy_rc != 0:
                    follower.say(
                        f"the deploy failed: see the newest deploy-{release} log in {STATE / 'logs'}", "1;31"
                    )
                    break
            if follower.done():
                break
            if follower.only_duplicates(grace=30):
                follower.say(
                    "the agents answer 'duplicate': they already handled this alert against this release "
                    "(an earlier break of the same release; the agent remembers (alert, sha) for good). "
                    "Start from a fresh lab: make lab-down && make lab",
                    "1;31",
                )
                report.reason = "duplicate: this release was already broken and rolled back on this lab"
                break
            time.sleep(1)
    finally:
        load.terminate()
        try:
            load.wait(10)
        except subprocess.TimeoutExpired:
            load.kill()
    follower.await_verification(grace=90)  # the rollback route flushes resolved alerts every 1m
    for host in apps:
        report.final_sha[host.name] = deploys.current_sha(deploys.agent_status(lab, host))
    report.success = (
        follower.done()
        and all(s == good_sha for s in report.final_sha.values())
        and all(
            any(i.get("result") == "success" for i in report.incidents.get(h.name, {}).values()) for h in apps
        )
    )
    if not report.success:
        report.reason = (
            report.reason
            or (
                f"the deploy of {release} failed (rc {report.deploy_rc})"
                if report.deploy_rc
                else "timed out"
                if time.monotonic() >= deadline
                else "a rollback did not succeed"
            )
            + f"; final: {report.final_sha}"
        )
        warn(f"the incident did not end as expected: {report.reason}")
    summarize(report)
    path = report.save()
    event(f"report: {path}")
    return report


def judge(report: Report, problems: list[str]) -> None:
    """A scenario's verdict: success when its deploy ran, none of its checks found a problem and
    nothing went wrong on the way; otherwise the reasons, joined, and a warning."""
    report.success = report.deploy_rc == 0 and not problems and not report.reason
    if not report.success:
        report.reason = "; ".join([r for r in (report.reason,) if r] + problems)
        warn(f"the scenario did not end as expected: {report.reason}")


def summarize(r: Report) -> None:
    step(f"incident summary ({r.release}: {r.alert})")
    m = r.marks
    rows = [
        (
            "bad release live (first host)",
            min((v for k, v in m.items() if k.startswith("bad_live_")), default=None),
        ),
        ("alert pending", m.get("pending")),
        ("alert firing", m.get("firing")),
        (
            "webhook reached the first agent",
            min((v for k, v in m.items() if k.startswith("webhook_")), default=None),
        ),
        (
            "rollback complete (last host)",
            max((v for k, v in m.items() if k.startswith("rollback_done_")), default=None),
        ),
        ("alert resolved", m.get("resolved")),
    ]
    print(f"    rollback triggers that fired: {', '.join(r.fired) or 'none'}", flush=True)
    for label, value in rows:
        print(f"    {label:34} " + (f"+{value:6.1f}s" if value is not None else "   -"), flush=True)
    firing, hook = m.get("firing"), rows[3][1]
    if firing is not None and hook is not None:
        print(
            f"    firing -> webhook: {hook - firing:.1f}s (target: rollback starts < 30 s, "
            f"alert -> rollback < 1 min)",
            flush=True,
        )
    for host, incs in sorted(r.incidents.items()):
        for inc in incs.values():
            phases = " ".join(
                f"{p['name']}={((p['ended_at'] or 0) - p['started_at']):.1f}s"
                for p in inc.get("phases") or []
                if p.get("ended_at")
            )
            print(
                f"    {host}: {inc['incident_id']} {inc['status']} {inc.get('duration') or 0:.1f}s "
                f"(target < 300 s) {phases}",
                flush=True,
            )
            for line in downgrade_lines((inc.get("detail") or {}).get("downgrade")):
                print(f"      {line}", flush=True)
            verification = inc.get("verification") or {}
            if verification:
                alerts = ", ".join(
                    f"{a['alertname']} {'resolved' if a.get('resolved_at') else 'FIRING'}"
                    for a in verification.get("alerts") or []
                )
                print(f"      verification {verification['state']}: {alerts}", flush=True)
            for attached in inc.get("attached") or []:
                started = attached["starts_at"]
                print(f"      attached: {attached['alertname']} (started {started})", flush=True)
    lines = wave_lines(r)
    if lines:
        print("    waves (the agents' incidents, seconds after the deploy started):", flush=True)
        for line in lines:
            print(f"      {line}", flush=True)
    print("    next: make lab-notifications  (every message of the incident)", flush=True)


def wave_lines(r: Report) -> list[str]:
    """Each host's rollback in wave order, from its incident's phases: the wait, the rollback, the result."""

    def at(t: float | None) -> str:
        return "-" if t is None else f"+{t - r.started_at:.1f}s"

    out = []
    order = sorted(r.incidents, key=lambda h: (r.waves.get(h) is None, r.waves.get(h) or 0, h))
    for host in order:
        wave = r.waves.get(host)
        for inc in sorted(r.incidents[host].values(), key=lambda i: float(i.get("started_at") or 0)):
            if not inc.get("result"):
                continue
            phases = {p["name"]: p for p in inc.get("phases") or []}
            parts = []
            waited = phases.get("waiting_for_wave")
            if waited:
                parts.append(f"waiting_for_wave {at(waited['started_at'])} .. {at(waited.get('ended_at'))}")
            start = phases.get("initiated")
            if start:
                parts.append(f"rollback {at(start['started_at'])}")
            result = f"{inc['result']} {at(inc.get('ended_at'))}"
            if inc["result"] != "success" and inc.get("error"):
                result += f" ({inc.get('failed_step')}: {str(inc['error'])[:110]})"
            label = f"{host} (wave {wave})" if wave is not None else f"{host} (no waves)"
            out.append(f"{label}: " + ", ".join(parts) + f" -> {result}")
    return out


def downgrade_lines(downgrade: dict[str, Any] | None) -> list[str]:
    """The database phase of a rollback as the summary shows it: classification, rows, backup."""
    if not downgrade:
        return []
    get = downgrade.get
    lines = [
        f"downgrade {get('from_revision')} -> {get('to_revision')}: {get('classification')} "
        f"(policy {get('policy')}, action {get('action')})"
    ]
    for item in downgrade.get("dropped") or []:
        what = f"column {item['table']}.{item['column']}" if item.get("column") else f"table {item['table']}"
        rows = "rows not counted" if item.get("rows") is None else f"{item['rows']:,} rows"
        lines.append(f"  drops {what} ({rows})")
    backup = downgrade.get("backup")
    if backup:
        lines.append(f"  backup {backup['path']} ({backup['size']:,} bytes, sha256 {backup['sha256']})")
    return lines
