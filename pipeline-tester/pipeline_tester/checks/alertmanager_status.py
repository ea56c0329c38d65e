"""Alertmanager status through the v2 API: reachable, version, uptime, cluster, config loaded."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..alertmanager import RunningConfig, api, get_status, human_duration, parse_started
from ..model import CheckError, Outcome, Planned
from ..secrets import display_url
from .base import Check, Context


class AlertmanagerStatus(Check):
    group = "alertmanager"

    def __init__(self, url: str, label: str | None = None) -> None:
        self.url = url
        self.name = f"alertmanager[{label}]" if label else "alertmanager"

    def plan(self, ctx: Context) -> list[Planned]:
        return [Planned(self.name, f"GET {display_url(api(self.url, '/api/v2/status'), secret=False)}")]

    def run(self, ctx: Context) -> Outcome:
        status = get_status(ctx.session, self.url, ctx.timeout)
        version_info: dict[str, Any] = status.get("versionInfo") or {}
        version = version_info.get("version", "?")
        started = parse_started(str(status.get("uptime", "")))
        uptime_s = (dt.datetime.now(dt.timezone.utc) - started).total_seconds() if started else None

        cluster: dict[str, Any] = status.get("cluster") or {}
        cluster_status = str(cluster.get("status", "?"))
        peers = [f"{p.get('name', '?')}@{p.get('address', '?')}" for p in cluster.get("peers") or []]
        original = str((status.get("config") or {}).get("original") or "")

        data: dict[str, Any] = {
            "url": display_url(self.url, secret=False),
            "version": version,
            "revision": version_info.get("revision"),
            "started_at": status.get("uptime"),
            "uptime_s": round(uptime_s) if uptime_s is not None else None,
            "cluster_status": cluster_status,
            "peers": peers,
        }
        problems: list[str] = []
        if not original.strip():
            problems.append("no configuration loaded")
            config_text = "no config"
        else:
            config = RunningConfig.parse(original)
            data["receivers"] = sorted(config.receivers)
            config_text = (
                f"config loaded ({len(config.receivers)} receivers, {config.inhibit_rules} inhibit rules)"
            )

        if cluster_status == "disabled":
            cluster_text = "cluster disabled (single node)"
        else:
            cluster_text = f"cluster {cluster_status}, {len(peers)} peer{'s' if len(peers) != 1 else ''}"
            if peers:
                cluster_text += f" ({', '.join(peers)})"
            if cluster_status not in ("ready", "settling"):
                problems.append(f"cluster status is {cluster_status!r}")
            elif cluster_status == "settling":
                cluster_text += " [still settling after start]"
        expected = ctx.settings.expect_peers
        if expected is not None:
            count = 0 if cluster_status == "disabled" else len(peers)
            if count != expected:
                problems.append(f"expected {expected} cluster peers, found {count}")

        uptime_text = f"up {human_duration(uptime_s)}" if uptime_s is not None else "uptime unknown"
        detail = f"v{version}, {uptime_text}, {cluster_text}, {config_text}"
        if problems:
            raise CheckError("; ".join(problems) + f" ({detail})", data)
        return Outcome(detail, data)
