"""The table, the one-line summary and the --json document. Every text passes the redactor."""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import TOOL_NAME, __version__
from .model import CheckResult, Planned, Status

COLOURS = {Status.PASS: "\033[32m", Status.FAIL: "\033[31;1m", Status.SKIP: "\033[33m"}
RESET = "\033[0m"


@dataclass
class Summary:
    passed: int
    failed: int
    skipped: int
    duration_s: float
    ok: bool

    @classmethod
    def of(cls, results: list[CheckResult], duration_s: float, fail_on_skip: bool) -> Summary:
        count = {status: sum(r.status is status for r in results) for status in Status}
        ok = count[Status.FAIL] == 0 and not (fail_on_skip and count[Status.SKIP])
        return cls(count[Status.PASS], count[Status.FAIL], count[Status.SKIP], duration_s, ok)

    def line(self, run_id: str) -> str:
        verdict = "OK" if self.ok else "FAILED"
        return (
            f"{verdict}: {self.passed} passed, {self.failed} failed, {self.skipped} skipped "
            f"in {self.duration_s:.1f}s (run {run_id})"
        )


def table(results: list[CheckResult], *, colour: bool, width: int | None = None) -> str:
    width = width or shutil.get_terminal_size((120, 24)).columns
    name_w = max([len("CHECK"), *(len(r.name) for r in results)])
    status_w, time_w = 6, 8
    detail_w = max(width - name_w - status_w - time_w - 6, 40)
    head = f"{'CHECK':<{name_w}}  {'STATUS':<{status_w}}  {'DETAIL':<{detail_w}}  {'DURATION':>{time_w}}"
    lines = [head.rstrip(), "-" * min(len(head), width)]
    for r in results:
        wrapped = textwrap.wrap(r.detail, detail_w, break_on_hyphens=False) or [""]
        status = f"{r.status.value:<{status_w}}"
        if colour:
            status = f"{COLOURS[r.status]}{status}{RESET}"
        lines.append(
            f"{r.name:<{name_w}}  {status}  {wrapped[0]:<{detail_w}}  {r.duration_s:>{time_w - 1}.2f}s"
        )
        lines.extend(f"{'':<{name_w}}  {'':<{status_w}}  {more}".rstrip() for more in wrapped[1:])
    return "\n".join(lines)


def planned_text(planned: list[Planned]) -> str:
    lines = ["Dry run: nothing is sent. Would do:"]
    for p in planned:
        lines.append(f"  [{p.check}] {p.action}")
        if p.body is not None:
            body = json.dumps(p.body, indent=2, sort_keys=True)
            lines.extend(f"      {line}" for line in body.splitlines())
    return "\n".join(lines)


def document(
    results: list[CheckResult],
    summary: Summary,
    *,
    run_id: str,
    dry_run: bool,
    planned: list[Planned],
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "tool": TOOL_NAME,
        "version": __version__,
        "run_id": run_id,
        "dry_run": dry_run,
        "ok": summary.ok,
        "summary": {
            "passed": summary.passed,
            "failed": summary.failed,
            "skipped": summary.skipped,
            "total": len(results),
            "duration_s": round(summary.duration_s, 3),
        },
        "checks": [r.as_dict() for r in results],
    }
    if dry_run:
        doc["planned"] = [p.as_dict() for p in planned]
    return doc


def render_json(doc: dict[str, Any], redact: Callable[[str], str]) -> str:
    """JSON with every string redacted (not the serialised text: masking must not break escaping)."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, dict):
            return {redact(str(k)): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(doc), indent=2, sort_keys=False, default=str)
