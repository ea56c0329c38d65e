"""The ``rollback-agent`` command.

Exit codes: 0 done (or nothing to do), 1 the operation failed, 2 usage or configuration error,
3 refused (bad release without --force, rollback blocked), 4 deployed but unhealthy,
5 busy (another deploy or rollback holds the lock). ``--json`` prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rollback_agent import __version__
from rollback_agent.config import CONFIG_ENV, DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from rollback_agent.durations import format_duration
from rollback_agent.logs import configure_logging

if TYPE_CHECKING:
    from rollback_agent.host import Host
    from rollback_agent.planner import Plan

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_UNHEALTHY, EXIT_BUSY = 0, 1, 2, 3, 4, 5


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _when(stamp: float | None) -> str:
    if not stamp:
        return "-"
    return (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
        + f" ({format_duration(time.time() - stamp)} ago)"
    )


def _short(sha: str | None) -> str:
    return sha[:10] if sha else "-"


def _emit(args: argparse.Namespace, data: dict[str, Any], human: Callable[[], None]) -> None:
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        human()


def _progress(args: argparse.Namespace) -> Callable[[str], None]:
    stream = sys.stderr if args.json else sys.stdout

    def echo(text: str) -> None:
        print(text, file=stream, flush=True)

    return echo


def _load(args: argparse.Namespace) -> Config:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise CliError(exc.render(), EXIT_USAGE) from None
    _refuse_wrong_user(config)
    return config


def _refuse_wrong_user(config: Config) -> None:
    """Running as root would leave root-owned state files the agent's own user cannot write."""
    if os.geteuid() != 0:
        return
    try:
        owner = config.state_dir.stat().st_uid
    except OSError:
        return
    if owner != 0:
        import pwd

        try:
            name = pwd.getpwuid(owner).pw_name
        except KeyError:
            name = str(owner)
        raise CliError(
            f"run this as the agent's user, not root: sudo -u {name} rollback-agent ... "
            f"({config.state_dir} belongs to {name})",
            EXIT_USAGE,
        )


def _host(config: Config) -> Host:
    from rollback_agent.host import Host

    try:
        return Host(config)
    except ConfigError as exc:
        raise CliError(exc.render(), EXIT_USAGE) from None


# --- commands ---------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args)
    _host(config)  # secrets readable, state usable: fail here with a clear message, not in a worker
    os.environ[CONFIG_ENV] = str(config.source)
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:rollback_agent.gunicorn_conf",
        "rollback_agent.wsgi:app",
    ]
    os.execv(sys.executable, argv)  # noqa: S606 - replaces this process with gunicorn
    return EXIT_FAILED  # not reached


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        host = _host(config)
    except (ConfigError, CliError) as exc:
        # With --json the answer keeps its shape: one failed "config" check per problem.
        problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
        source = exc.source if isinstance(exc, ConfigError) else args.config
        failed = {
            "ok": False,
            "config": source,
            "problems": problems,
            "checks": [{"name": "config", "ok": False, "detail": p} for p in problems],
        }
        if not args.json:
            raise CliError(exc.render() if isinstance(exc, ConfigError) else str(exc), EXIT_USAGE) from None
        print(json.dumps(failed, indent=2))
        return EXIT_USAGE
    from rollback_agent.preflight import checks as host_checks

    _refuse_wrong_user(config)
    checks = host_checks(host)
    ok = all(c["ok"] for c in checks)
    data: dict[str, Any] = {
        "ok": ok,
        "config": config.source,
        "host": config.host,
        "mode": config.mode,
        "triggers": sorted(n for n, t in config.triggers.items() if t.auto_rollback),
        "checks": checks,
    }

    def human() -> None:
        for c in checks:
            print(f"{'ok ' if c['ok'] else 'ERR'} {c['name']}: {c['detail']}")
        print(
            f"{'configuration OK' if ok else 'problems found'}: {config.source} "
            f"(host {config.host}, {config.mode}, {len(data['triggers'])} triggers)"
        )

    _emit(args, data, human)
    return EXIT_OK if ok else EXIT_USAGE


def cmd_status(args: argparse.Namespace) -> int:
    from rollback_agent.report import status

    data = status(_host(_load(args)), history=5)

    def human() -> None:
        a, d = data["agent"], data["deployment"]
        print(f"rollback-agent {a['version']} on {a['host']} ({a['mode']})")
        if d.get("error"):
            print(f"deployment: ERROR {d['error']}")
        else:
            print(f"deployed:   {_short(d.get('sha'))} {d.get('subject') or ''}".rstrip())
            print(
                f"  ref {d['ref']} in {d['repo']}; since {_when(d.get('deployed_at'))}; "
                f"alembic {d.get('alembic_revision') or '-'}" + ("; MARKED BAD" if d.get("bad") else "")
            )
            if d.get("warning"):
                print(f"  warning: {d['warning']}")
        running = data["in_progress"]
        if running:
            if running.get("kind") == "rollback":
                print(
                    f"in progress: rollback {running['incident_id']} phase {running['phase']} "
                    f"{running['progress']}% (pid {running['runner_pid']})"
                )
                waiting = running.get("fleet") or {}
                if running["phase"] == "waiting_for_wave" and waiting:
                    print(f"  waiting for: {', '.join(waiting.get('awaiting') or []) or '-'} (earlier waves)")
            else:
                print(
                    f"in progress: {running.get('kind')} {running.get('id') or ''} (pid {running.get('pid')})"
                )
        else:
            print("in progress: nothing")
        if data.get("freeze"):
            print(f"FROZEN:     until {data['freeze']['until_utc']}: {data['freeze']['reason']}")
        if data.get("fleet"):
            peers = ", ".join(p["host"] for p in data["fleet"]["peers"]) or "-"
            print(f"fleet:      wave {data['fleet']['wave']}; peers {peers}")
        print(f"triggers:   {', '.join(data['monitored_triggers'])}")
        _print_history(data["history"])

    _emit(args, data, human)
    return EXIT_OK


def _print_history(items: list[dict[str, Any]]) -> None:
    if not items:
        print("history:    no incidents")
        return
    print("history:")
    for inc in items:
        what = inc.get("alert_name") or inc.get("trigger_id") or "-"
        line = (
            f"  {inc['incident_id']}  {inc['status']:<11} {what:<28} {_short(inc.get('from_sha'))} -> "
            f"{_short(inc.get('to_sha'))}  {format_duration(inc.get('duration'))}"
        )
        print(line)
        if inc.get("error"):
            print(f"      {inc.get('failed_step')}: {inc['error'].splitlines()[0][:200]}")
        verification = inc.get("verification")
        if verification:
            alerts = ", ".join(
                f"{a['alertname']} {'resolved' if a.get('resolved_at') else 'firing'}"
                for a in verification.get("alerts") or []
            )
            print(f"      verification {verification['state']}: {alerts}")
        if inc.get("attached"):
            print(f"      attached: {', '.join(a['alertname'] for a in inc['attached'])}")


def cmd_history(args: argparse.Namespace) -> int:
    from rollback_agent.report import history

    data = history(_host(_load(args)), args.limit)
    incidents, deploys = data["incidents"], data["deploys"]

    def human() -> None:
        _print_history(incidents)
        print("deploys:")
        for d in deploys:
            print(
                f"  {_when(d['deployed_at'] or d['started_at'])}  {d['kind']:<8} {_short(d['sha'])} "
                f"{d['ref'] or '':<12} {d['outcome']:<10} alembic {d['revision'] or '-'}"
            )

    _emit(args, data, human)
    return EXIT_OK


def cmd_deploy(args: argparse.Namespace) -> int:
    from rollback_agent.deployer import Deployer

    host = _host(_load(args))
    result = Deployer(host, echo=_progress(args)).deploy(args.ref, force=args.force)
    host.notifier.flush(timeout=10.0)
    data = result.as_dict()

    def human() -> None:
        line = f"{result.result}: {args.ref} ({_short(result.sha)})"
        if result.result == "unchanged":
            line += " is deployed already"
        elif result.result in ("deployed", "unhealthy"):
            line += f", was {_short(result.previous_sha)}, alembic {result.revision or '-'}"
        print(line + f" in {format_duration(result.duration)}")
        if result.error:
            print(f"error ({result.failed_step}): {result.error}", file=sys.stderr)

    _emit(args, data, human)
    return result.exit_code


def cmd_rollback(args: argparse.Namespace) -> int:
    from rollback_agent.locking import LockBusyError
    from rollback_agent.planner import build_plan, preview_downgrade
    from rollback_agent.recovery import recover
    from rollback_agent.report import incident_summary
    from rollback_agent.rollback import execute
    from rollback_agent.state import RUNNING, new_incident_id

    host = _host(_load(args))
    if args.fleet and host.config.fleet is None:
        raise CliError("--fleet needs a fleet: section in the configuration (wave, peers)", EXIT_USAGE)
    plan = build_plan(host, manual=True, to=args.to)
    if args.dry_run:
        preview_downgrade(host, plan)
    blocked = plan.blocked_by
    base = {"plan": plan.as_dict(), "dry_run": args.dry_run}
    if args.dry_run or blocked is not None:
        data = {
            **base,
            "result": "blocked" if blocked else "dry_run",
            "reason": f"{blocked.name}: {blocked.detail}" if blocked else "nothing executed",
        }

        def human() -> None:
            _print_plan(plan)
            print(f"{data['result']}: {data['reason']}")

        _emit(args, data, human)
        return EXIT_REFUSED if blocked else EXIT_OK
    try:
        lock = host.lock().acquire("rollback", "cli")
    except LockBusyError as exc:
        busy = str(exc)
        _emit(
            args, {**base, "result": "busy", "reason": busy}, lambda: print(f"busy: {busy}", file=sys.stderr)
        )
        return EXIT_BUSY
    with lock:
        recover(host, lock)
        plan = build_plan(host, manual=True, to=args.to)
        if plan.blocked_by is not None:
            raise CliError(f"blocked: {plan.blocked_by.name}: {plan.blocked_by.detail}", EXIT_REFUSED)
        _refuse_forbidden(host, plan, args.allow_forbidden)
        echo = _progress(args)
        _print_plan(plan, echo)
        incident_id = new_incident_id()
        host.store.open_incident(
            incident_id,
            source="cli",
            status=RUNNING,
            trigger_id="manual",
            reason=args.reason,
            **plan.releases(),
            # --fleet: wait for the earlier waves of the fleet first, like a webhook's rollback.
            detail={
                "plan": plan.as_dict(),
                "requested_target": args.to,
                "fleet_wave": bool(args.fleet),
                "allow_forbidden": bool(args.allow_forbidden),  # a person overrode downgrade: forbidden
            },
            bad_reason=f"rolled back by hand ({incident_id}): {args.reason}",
        )
        result = execute(host, incident_id, lock, echo=echo)
    host.notifier.flush(timeout=30.0)
    incident = host.store.incident(incident_id)
    assert incident is not None
    data = {**base, "result": result, **incident_summary(incident)}
    _emit(
        args,
        data,
        lambda: print(
            f"{incident_id}: {result}"
            + (f" ({incident.failed_step}: {incident.error})" if incident.error else "")
        ),
    )
    return EXIT_OK if result == "success" else EXIT_FAILED


def _refuse_forbidden(host: Host, plan: Plan, allowed: bool) -> None:
    """A release declaring ``downgrade: forbidden`` is rolled back by hand only with --allow-forbidden."""
    from rollback_agent import datasafety

    if plan.from_sha is None or host.migrations is None or plan.from_revision == plan.to_revision:
        return
    try:
        declared = datasafety.release_declaration(host.deployment, plan.from_sha)
    except datasafety.DataSafetyError as exc:
        raise CliError(f"refused: {exc}", EXIT_REFUSED) from None
    if declared.downgrade == "forbidden" and not allowed:
        raise CliError(
            f"refused: release {_short(plan.from_sha)} declares downgrade: forbidden in "
            f"{datasafety.RELEASE_FILE} (its downgrade destroys data nobody may lose). Nothing was changed. "
            "Save its data first (rollback --dry-run lists what the downgrade drops), then run again with "
            "--allow-forbidden: the override is recorded in the incident and "
            "migrations.destructive_downgrade still applies (backup_then_run takes a copy first)",
            EXIT_REFUSED,
        )


def cmd_fleet_status(args: argparse.Namespace) -> int:
    from rollback_agent.fleet_status import collect, table

    data = collect(_host(_load(args)))
    _emit(args, data, lambda: print("\n".join(table(data))))
    return EXIT_OK


def _print_plan(plan: Plan, echo: Callable[[str], None] = print) -> None:
    echo(
        f"plan: {_short(plan.from_sha)} (alembic {plan.from_revision or '?'}) -> {_short(plan.to_sha)} "
        f"(alembic {plan.to_revision or '-'}, {plan.to_revision_source or '-'}); "
        f"units {', '.join(plan.units)}"
    )
    if plan.downgrade is not None:
        echo(f"  database: {plan.downgrade.get('summary') or plan.downgrade.get('error')}")
        echo(f"  -> {plan.downgrade['action']} ({plan.downgrade.get('reason', '')})")
    for g in plan.guards:
        mark = "ok " if g.ok else ("NO " if g.enforced else "(!)")
        echo(f"  {mark} {g.name}: {g.detail}" + ("" if g.enforced or g.ok else " [not enforced by hand]"))


def cmd_freeze(args: argparse.Namespace) -> int:
    from rollback_agent.freeze import FreezeError, freeze

    host = _host(_load(args))
    try:
        data = freeze(host, args.duration, args.reason)
    except FreezeError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    _emit(args, {"freeze": data}, lambda: print(f"frozen until {data['until_utc']}: {data['reason']}"))
    return EXIT_OK


def cmd_unfreeze(args: argparse.Namespace) -> int:
    from rollback_agent.freeze import unfreeze

    was = unfreeze(_host(_load(args)))
    _emit(
        args,
        {"freeze": None, "was_frozen": was},
        lambda: print("unfrozen: automated rollbacks allowed again" if was else "was not frozen"),
    )
    return EXIT_OK


def cmd_test(args: argparse.Namespace) -> int:
    from rollback_agent.decisions import simulate

    host = _host(_load(args))
    labels = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--label wants KEY=VALUE, got {item!r}")
        labels[key] = value
    result = simulate(host, args.alertname, labels)

    def human() -> None:
        print(f"{args.alertname}: would be {result.would}: {result.reason}")
        if result.trigger is not None:
            t = result.trigger
            print(
                f"  trigger {t.trigger} (confidence {t.confidence}, auto_rollback {t.auto_rollback}):"
                f" {t.reason}"
            )
        _print_plan(result.plan)
        for c in result.checks:
            if not c["ok"]:
                print(f"  ERR {c['name']}: {c['detail']}")
        print("nothing was executed")

    _emit(args, result.as_dict(), human)
    return EXIT_OK if result.config_ok else EXIT_USAGE


# --- parser -----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        "-c",
        default=argparse.SUPPRESS,
        metavar="PATH",
        help=f"configuration file (default: ${CONFIG_ENV}, then {DEFAULT_CONFIG_PATH})",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print one JSON object on stdout (progress goes to stderr)",
    )
    common.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help="log more")

    parser = argparse.ArgumentParser(
        prog="rollback-agent",
        parents=[common],
        description="Rolls a host's deployment back when Alertmanager says so; deploys releases.",
        epilog="Exit codes: 0 ok, 1 failed, 2 usage/config error, 3 refused, 4 deployed but unhealthy, "
        "5 busy.",
    )
    parser.add_argument("--version", action="version", version=f"rollback-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser(
        "serve", parents=[common], help="run the HTTP agent (gunicorn with the packaged settings)"
    ).set_defaults(func=cmd_serve)
    sub.add_parser(
        "check-config", parents=[common], help="validate the configuration and the host"
    ).set_defaults(func=cmd_check_config)
    sub.add_parser(
        "status", parents=[common], help="current release, rollback in progress, recent incidents"
    ).set_defaults(func=cmd_status)
    p = sub.add_parser("history", parents=[common], help="incidents and the deploy ledger")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_history)
    p = sub.add_parser("deploy", parents=[common], help="deploy a release (sha, tag or branch)")
    p.add_argument("ref", metavar="REF")
    p.add_argument(
        "--force", action="store_true", help="deploy a release marked bad, or redeploy the same one"
    )
    p.set_defaults(func=cmd_deploy)
    p = sub.add_parser("rollback", parents=[common], help="roll back now (same engine as the webhook)")
    p.add_argument("--to", metavar="SHA", help="release to go back to (default: the last healthy one)")
    p.add_argument("--dry-run", action="store_true", help="show the plan, execute nothing")
    p.add_argument("--reason", default="manual rollback", metavar="TEXT", help="recorded and notified")
    p.add_argument(
        "--allow-forbidden",
        action="store_true",
        help="roll back a release whose rollback.yml says downgrade: forbidden (recorded in the incident)",
    )
    p.add_argument(
        "--fleet",
        action="store_true",
        help="take part in the fleet's waves: on wave N > 0, wait for the earlier waves to succeed first",
    )
    p.set_defaults(func=cmd_rollback)
    p = sub.add_parser(
        "freeze", parents=[common], help="no automated rollback for a while (planned maintenance)"
    )
    p.add_argument("--for", dest="duration", required=True, metavar="DURATION", help="e.g. 2h, 30m")
    p.add_argument("--reason", required=True, metavar="TEXT", help="shown in every blocked decision")
    p.set_defaults(func=cmd_freeze)
    sub.add_parser("unfreeze", parents=[common], help="end the freeze").set_defaults(func=cmd_unfreeze)
    p = sub.add_parser(
        "test", parents=[common], help="what a firing ALERTNAME would do now (executes nothing)"
    )
    p.add_argument("alertname", metavar="ALERTNAME")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="extra alert label")
    p.set_defaults(func=cmd_test)
    from rollback_agent.backup import add_commands as add_backup_commands

    add_backup_commands(sub, common)  # backup --to FILE, restore --from FILE
    from rollback_agent.stuck import add_commands as add_stuck_commands

    add_stuck_commands(sub, common)  # resolve INC-... --note TEXT
    sub.add_parser(
        "fleet-status",
        parents=[common],
        help="one table for the fleet: host, wave, release, last incident with result and verification",
    ).set_defaults(func=cmd_fleet_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in (("config", None), ("json", False), ("verbose", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    if args.config is not None:
        args.config = str(Path(args.config))
    configure_logging("info" if args.verbose else "warning")
    os.umask(0o027)
    try:
        return int(args.func(args))
    except CliError as exc:
        if args.json:
            print(json.dumps({"result": "error", "error": str(exc), "exit_code": exc.code}))
        print(f"rollback-agent: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
