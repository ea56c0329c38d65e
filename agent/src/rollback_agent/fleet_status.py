"""``rollback-agent fleet-status``: one table for the fleet (what on-call runs first).

This host's view and every peer's (``GET /api/admin/rollback/fleet``): host, wave, current
release, last incident with its result and verification; a peer that does not answer says why.
"""

from __future__ import annotations

from typing import Any

from rollback_agent import fleet
from rollback_agent.host import Host

HEADER = ("host", "wave", "release", "last incident", "result", "verification")


def collect(host: Host) -> dict[str, Any]:
    """This host's view, then each peer's, by wave; ``ok`` when every peer answered."""
    rows: list[dict[str, Any]] = [{"answered": True, **fleet.view(host)}, *fleet.ask_peers(host)]
    rows.sort(key=lambda r: (r.get("wave") if isinstance(r.get("wave"), int) else 10**6, r["host"]))
    return {"ok": all(r["answered"] for r in rows), "hosts": rows}


def table(data: dict[str, Any]) -> list[str]:
    lines = [HEADER]
    for row in data["hosts"]:
        if not row["answered"]:
            lines.append((row["host"], "?", "-", "-", "NO ANSWER", row.get("error", "")[:80]))
            continue
        release = row.get("release") or {}
        sha = (release.get("sha") or "-")[:10]
        inc = row.get("incident") or {}
        verification = (inc.get("verification") or {}).get("state") or "-"
        result = inc.get("result") or inc.get("status") or "-"
        if inc.get("status") == "running":
            result = f"running ({inc.get('phase')})"
        wave = row.get("wave")
        lines.append(
            (
                row["host"],
                "-" if wave is None else str(wave),
                f"{sha} {release.get('subject') or ''}".strip()[:40],
                inc.get("incident_id") or "-",
                result,
                verification,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in lines]
