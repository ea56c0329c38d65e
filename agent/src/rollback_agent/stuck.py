"""A host a rollback could not restore: ``stuck`` until a person repairs it and says so.

A rollback whose restore failed leaves code, ref and schema out of step (``consistent: false`` in
the incident). While such an incident is not resolved, the ``stuck`` guard refuses every automatic
rollback, ``/healthz`` and the status list it, and ``rollback-agent resolve INC-... --note TEXT``
(a person, after the repair) lifts it.
"""

from __future__ import annotations

import argparse
import getpass
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rollback_agent.host import Host
    from rollback_agent.state import Incident


class ResolveError(Exception):
    pass


def stuck(host: Host) -> list[dict[str, Any]]:
    """The unresolved incidents that left the host inconsistent, oldest first."""
    return [_item(inc) for inc in host.store.stuck_incidents()]


def _item(inc: Incident) -> dict[str, Any]:
    return {
        "incident_id": inc.id,
        "ended_at": inc.ended_at,
        "failed_step": inc.failed_step,
        "error": inc.error,
        "observed": inc.detail.get("observed"),
        "resolve": f"rollback-agent resolve {inc.id} --note TEXT",
    }


def stuck_problem(host: Host) -> str | None:
    """Why automatic rollbacks are refused (the guard's detail), or None."""
    found = host.store.stuck_incidents()
    if not found:
        return None
    ids = ", ".join(i.id for i in found)
    return (
        f"the host is stuck: {ids} could not restore it (code, ref and schema out of step); a person "
        f"repairs it, then runs `rollback-agent resolve {found[0].id} --note TEXT`"
    )


def resolve(host: Host, incident_id: str, note: str, by: str | None = None) -> dict[str, Any]:
    inc = host.store.incident(incident_id)
    if inc is None:
        raise ResolveError(f"no incident {incident_id}")
    if not inc.detail.get("stuck"):
        raise ResolveError(f"{incident_id} does not hold the host stuck (nothing to resolve)")
    if not note.strip():
        raise ResolveError("--note must say what was repaired")
    resolution = {"at": time.time(), "by": by or _user(), "note": note.strip()}
    host.store.merge_detail(incident_id, stuck=False, resolution=resolution)
    return {
        "incident_id": incident_id,
        "resolution": resolution,
        "still_stuck": [i["incident_id"] for i in stuck(host)],
    }


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _cmd_resolve(args: argparse.Namespace) -> int:
    from rollback_agent import cli

    host = cli._host(cli._load(args))
    try:
        data = resolve(host, args.incident, args.note)
    except ResolveError as exc:
        raise cli.CliError(str(exc), cli.EXIT_REFUSED) from None
    left = data["still_stuck"]
    cli._emit(
        args,
        data,
        lambda: print(
            f"{args.incident} resolved: {data['resolution']['note']}"
            + (f" (still stuck: {', '.join(left)})" if left else "; automatic rollbacks allowed again")
        ),
    )
    return cli.EXIT_OK


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add `resolve` to the CLI's subcommands."""
    p = sub.add_parser(
        "resolve", parents=[common], help="a person repaired a stuck host: allow automatic rollbacks again"
    )
    p.add_argument("incident", metavar="INC-ID", help="the incident that left the host stuck")
    p.add_argument("--note", required=True, metavar="TEXT", help="what was repaired (recorded)")
    p.set_defaults(func=_cmd_resolve)
