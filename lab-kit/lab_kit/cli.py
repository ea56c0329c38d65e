"""scripts/lab: the lab's command line (make lab, lab-break, lab-notifications, lab-down).

    scripts/lab up              boot the hosts, provision them with site.yml, deploy v1 then v2
    scripts/lab break [--slow] [--scenario NAME]
                                deploy v3 (or v3-slow) under load and follow the rollback live;
                                --scenario (or SCENARIO=, as in make lab-break SCENARIO=...):
                                bad-release (v3, the default), slow-release (v3-slow),
                                not-the-cause (deploy v2.1, stop Redis: a rollback that does not help)
                                or canary-fails (v3; app1's rollback fails: app2 aborts, untouched)
    scripts/lab status          hosts, services, deployed releases, captured messages
    scripts/lab notifications   what Slack, PagerDuty and email received [--kind K] [--full]
    scripts/lab down            remove everything the lab created
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import textwrap
import time

from lab_kit import deploys, inventory, podman, services
from lab_kit.lock import heavy_lock
from lab_kit.paths import CAPTURE_DIR, ROOT, SAMPLE_APP_PLAYBOOK, SSH_KEY, STATE
from lab_kit.runner import PlayResult, ensure_secrets, playbook, playbook_path, record_timing
from lab_kit.ui import die, info, ok, step, warn


def boot(lab: inventory.Lab) -> None:
    step(f"host image {lab.image}")
    ok("built" if podman.ensure_image(lab) else "up to date")
    step(f"network {lab.network} ({lab.subnet}) and hosts {', '.join(lab.hosts)}")
    if podman.ensure_network(lab):
        ok(f"created network {lab.network}")
    started = podman.ensure_containers(lab)
    podman.wait_booted(lab)
    ok(f"started: {', '.join(started)}" if started else "all hosts were already running")
    synced = podman.sync_trust(lab)
    if synced:
        ok(f"CA certificates and pip.conf copied to {', '.join(synced)}")
    authorized = podman.authorize_key(lab, podman.ensure_ssh_key(SSH_KEY))
    if authorized:
        ok(f"lab SSH key authorized on {', '.join(authorized)}")
    podman.wait_ssh(lab)


def provision(lab: inventory.Lab, *, quiet: bool = False) -> list[PlayResult]:
    """The sample service's runtime (the lab-only sample-app.yml), then the whole stack (site.yml)."""
    results = []
    # LAB_SITE_PLAYBOOK: another playbook in place of site.yml (developing the lab itself)
    site = os.environ.get("LAB_SITE_PLAYBOOK") or "site.yml"
    for name in (SAMPLE_APP_PLAYBOOK, site):
        path = playbook_path(name)
        if not path.exists():
            die(f"{path.relative_to(ROOT)} is missing (another area has not landed it yet)")
        step(f"ansible-playbook {path.relative_to(ROOT)}")
        res = playbook(name, quiet=quiet)
        if res.rc != 0:
            die(f"{path.relative_to(ROOT)} failed (rc {res.rc}); full log: {res.log}")
        ok(f"{path.name}: {res.tasks} tasks, {res.changed} changed, {res.seconds:.0f}s (log {res.log})")
        results.append(res)
    return results



def cmd_up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    lab = inventory.load()
    step("release history of the sample service")
    rel = services.build_releases()
    listing = ", ".join(f"{k}={v[:8]}" for k, v in rel["releases"].items())
    ok(("built " if rel["changed"] else "unchanged: ") + listing)
    ensure_secrets()
    with heavy_lock():
        boot(lab)
        step("capture server (Slack, PagerDuty, email)")
        ok("started" if services.ensure_capture(lab) else "already running")
        provision(lab, quiet=args.quiet)
        deploys.ensure_v2(lab, rel["releases"], quiet=args.quiet)
    seconds = time.monotonic() - t0
    record_timing("lab_up", seconds=round(seconds, 1))
    print_where_to_look(lab, seconds)
    return 0


def print_where_to_look(lab: inventory.Lab, seconds: float) -> None:
    def port(host: str, name: str) -> str:
        return f"http://127.0.0.1:{lab.hosts[host].port(name)}"

    step(f"the lab is up ({seconds:.0f}s)")
    lines = [
        f"Prometheus      {port('mon1', 'prometheus')}/alerts   (mon2: {port('mon2', 'prometheus')})",
        f"Alertmanager    {port('mon1', 'alertmanager')}           (mon2: {port('mon2', 'alertmanager')})",
        f"Long-term store {port('mon2', 'prometheus-longterm')}/graph    (mon2's prometheus-longterm:"
        " both replicas' remote_write, series labelled replica=mon1|mon2)",
        f"Agents' status  scripts/lab status   (API: {port('app1', 'rollback-agent')}/api/admin/rollback/"
        f"status and {port('app2', 'rollback-agent')}/...; user alertmanager, secret: webhook_secret"
        f" in {STATE / 'secrets.yml'})",
        f"Sample service  {port('app1', 'sample-app')}/health  {port('app2', 'sample-app')}/version",
        f"Notifications   {services.capture_url(lab)}/   or: make lab-notifications",
        "",
        "Next: make lab-break   deploys the bad release v3 and follows the automated rollback live",
        "      make lab-down    removes everything the lab created",
    ]
    for line in lines:
        info(line)


def cmd_down(args: argparse.Namespace) -> int:
    lab = inventory.load()
    with heavy_lock():
        step("stopping the capture server")
        ok("stopped" if services.stop_capture() else "was not running")
        podman.remove_all(lab)
    for host in lab.hosts:
        (ROOT / ".cache" / "facts" / host).unlink(missing_ok=True)
    if STATE.exists() and not args.keep_state:
        step(f"removing {STATE}")
        shutil.rmtree(STATE)
    ok("the lab is gone")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    lab = inventory.load()
    step("hosts")
    for host in lab.hosts.values():
        state = podman.container_state(host) or "absent"
        info(f"{host.name:5} {host.address:15} {state:8} groups: {', '.join(host.groups)}")
    if any(podman.container_state(h) != "running" for h in lab.hosts.values()):
        warn("the lab is not (fully) up: make lab")
        return 1
    step("deployments (rollback agents)")
    try:
        shas = deploys.host_release_shas(lab)
    except podman.PodmanError:
        shas = {}
    for host in lab.group("app"):
        st = deploys.agent_status(lab, host)
        if st is None:
            warn(f"{host.name}: the agent does not answer")
            continue
        info(deploys.describe_status(host.name, st, shas))
    step("captured notifications")
    counts: dict[str, int] = {}
    for m in services.messages(lab):
        counts[m["kind"]] = counts.get(m["kind"], 0) + 1
    info(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none yet")
    return 0


def cmd_notifications(args: argparse.Namespace) -> int:
    lab = inventory.load()
    msgs = services.messages(lab, args.kind)
    if args.json:
        json.dump(msgs, sys.stdout, indent=2)
        print()
        return 0
    if not msgs:
        info(f"no notifications captured yet ({CAPTURE_DIR / 'messages.jsonl'})")
        return 0
    for m in msgs[-args.last:]:
        when = time.strftime("%H:%M:%S", time.localtime(m["time"]))
        title = ("  ↳ " if m.get("thread_ts") else "") + m.get("title", "")[:100]  # ↳ a thread's reply
        print(f"#{m['id']:<4} {when} {m['kind']:9} {m.get('channel', '')[:24]:24} {title}")
        if args.full and m.get("text"):
            print(textwrap.indent(m["text"].strip(), "      "))
    info(f"{len(msgs)} message(s); web page: {services.capture_url(lab)}/")
    return 0


# make lab-break SCENARIO=NAME (make passes its command-line variables in the environment)
SCENARIOS = {"bad-release": "v3", "slow-release": "v3-slow", "not-the-cause": None, "canary-fails": None}


def cmd_break(args: argparse.Namespace) -> int:
    from lab_kit import canary_fails, incident, not_the_cause

    scenario = args.scenario or os.environ.get("SCENARIO") or ("slow-release" if args.slow else "bad-release")
    if scenario not in SCENARIOS:
        die(f"unknown scenario {scenario!r}: one of {', '.join(SCENARIOS)}")
    lab = inventory.load()
    with heavy_lock():
        release = SCENARIOS[scenario]
        if scenario == "canary-fails":
            report = canary_fails.run(lab, timeout=args.timeout)
        elif release is None:
            report = not_the_cause.run(lab, timeout=args.timeout)
        else:
            report = incident.run(lab, release=release, timeout=args.timeout)
    return 0 if report.success else 1


def main(argv: list[str] | None = None) -> int:
    if os.geteuid() != 0:
        die("run as root (podman containers with systemd need it)")
    parser = argparse.ArgumentParser(prog="scripts/lab", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="boot, provision and deploy the lab (idempotent)")
    up.add_argument("--quiet", action="store_true", help="log ansible's output instead of printing it")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="remove the containers, the network, the capture server and .lab/")
    down.add_argument("--keep-state", action="store_true", help="keep .lab/ (logs, timings, captures)")
    down.set_defaults(func=cmd_down)
    sub.add_parser("status", help="hosts, deployed releases, captured messages").set_defaults(func=cmd_status)
    notes = sub.add_parser("notifications", help="list what Slack/PagerDuty/email received")
    notes.add_argument("--kind", choices=["slack", "pagerduty", "email", "webhook"])
    notes.add_argument("--full", action="store_true", help="show each message's text")
    notes.add_argument("--json", action="store_true", help="print the records as JSON")
    notes.add_argument("--last", type=int, default=200, help="only the last N (default 200)")
    notes.set_defaults(func=cmd_notifications)
    brk = sub.add_parser("break", help="deploy the bad release under load and follow the rollback")
    brk.add_argument("--slow", action="store_true", help="deploy v3-slow (latency) instead of v3 (errors)")
    brk.add_argument(
        "--scenario", choices=sorted(SCENARIOS),
        help="bad-release (default), slow-release (= --slow), not-the-cause or canary-fails "
        "(default: $SCENARIO)",
    )
    brk.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    brk.set_defaults(func=cmd_break)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except podman.PodmanError as exc:
        die(str(exc))
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
