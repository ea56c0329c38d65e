"""Grafana dashboards, and every PromQL expression of the rules and dashboards.

promtool 2.42 has no command that parses a bare expression, so the expressions are put in a
rule file as recording rules and checked with `promtool check rules`, which parses each one with
Prometheus' own parser (and reports the rule that fails).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from monitoring_support import MONITORING, Render

pytestmark = pytest.mark.monitoring

DASHBOARDS = sorted((MONITORING / "dashboards").glob("*.json"))
EXPECTED = {"service-overview", "hosts", "postgresql", "redis", "rollback-agent"}
# Grafana's own variables and the values they take in a query.
BUILTIN = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "__range_s": "3600"}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def variables(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in board["templating"]["list"]}


def substitute(expr: str, board: dict[str, Any]) -> str:
    """Replace Grafana variables by values a query could take."""
    defined = variables(board)

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in BUILTIN:
            return BUILTIN[name]
        assert name in defined, f"{board['uid']}: ${name} is not a variable of the dashboard"
        var = defined[name]
        if var["type"] == "textbox":
            return str(var["query"])
        return ".*" if var.get("includeAll") else "x"

    return VARIABLE.sub(value, expr)


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every target and every query variable of every dashboard."""
    found = []
    for path in DASHBOARDS:
        board = load(path)
        for panel in panels(board):
            for target in panel.get("targets", []):
                where = f"{path.stem} / {panel['title']} / {target['refId']}"
                found.append((where, substitute(target["expr"], board)))
        for var in variables(board).values():
            if var["type"] == "query":
                query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
                match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
                assert match, f"{path.stem}: variable {var['name']} is not label_values(selector, label)"
                found.append((f"{path.stem} / variable {var['name']}", substitute(match.group(1), board)))
    return found


def check_expressions(
    promtool: str, expressions: list[tuple[str, str]], workdir: Path
) -> subprocess.CompletedProcess[str]:
    rules = [{"record": f"promql_check:expr_{i}", "expr": expr} for i, (_, expr) in enumerate(expressions)]
    path = workdir / "expressions.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "promql_check", "rules": rules}]}, sort_keys=False))
    return subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)


def explain(proc: subprocess.CompletedProcess[str], expressions: list[tuple[str, str]]) -> str:
    lines = [proc.stdout, proc.stderr]
    for number in re.findall(r"rule (\d+)", proc.stdout + proc.stderr):
        where, expr = expressions[int(number) - 1]
        lines.append(f"rule {number} is {where}: {expr}")
    return "\n".join(lines)


def test_the_five_dashboards_exist() -> None:
    assert {p.stem for p in DASHBOARDS} == EXPECTED


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_json_model(path: Path) -> None:
    board = load(path)
    for key in ("uid", "title", "description", "panels", "templating", "schemaVersion", "time"):
        assert board.get(key), f"{path.name}: no {key}"
    assert re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"])
    assert "id" not in board or board["id"] is None, "a provisioned dashboard carries no database id"
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
    assert "datasource" in variables(board), "dashboards pick their Prometheus through a datasource variable"
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel.get("title") and panel.get("description"), f"{path.name}: panel without a title or text"
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"{path.name}: {panel['title']} has no query"
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"]


def test_dashboards_have_distinct_uids_and_titles() -> None:
    boards = [load(p) for p in DASHBOARDS]
    assert len({b["uid"] for b in boards}) == len(boards)
    assert len({b["title"] for b in boards}) == len(boards)


def test_every_promql_expression_parses(promtool: str, default_render: Render, tmp_path: Path) -> None:
    expressions = [(f"rule {a['alert']}", a["expr"]) for a in default_render.alerts()]
    expressions += dashboard_expressions()
    proc = check_expressions(promtool, expressions, tmp_path)
    assert proc.returncode == 0, explain(proc, expressions)
    assert f"SUCCESS: {len(expressions)} rules found" in proc.stdout
    print(f"{len(expressions)} PromQL expressions parse ({len(default_render.alerts())} from rules)")


def test_the_parse_check_catches_a_bad_expression(promtool: str, tmp_path: Path) -> None:
    proc = check_expressions(promtool, [("good", "sum(rate(x[5m]))"), ("bad", "sum(rate(x[5m])")], tmp_path)
    assert proc.returncode != 0
    assert "rule 2 is bad" in explain(proc, [("good", ""), ("bad", "")])


def test_every_application_metric_is_in_the_metric_contract(default_render: Render) -> None:
    contract = (MONITORING / "METRICS.md").read_text()
    text = "\n".join(a["expr"] for a in default_render.alerts())
    text += "\n".join(expr for _, expr in dashboard_expressions())
    used = set(re.findall(r"\b(mita_[a-z0-9_]+)", text))
    used = {re.sub(r"_(bucket|count|sum)$", "", m) for m in used}
    missing = sorted(m for m in used if f"`{m}`" not in contract)
    assert not missing, f"metrics used by rules or dashboards but not documented in METRICS.md: {missing}"


def test_every_rollback_agent_metric_is_in_the_metric_contract() -> None:
    contract = (MONITORING / "METRICS.md").read_text()
    text = "\n".join(expr for _, expr in dashboard_expressions())
    text += (MONITORING / "rules" / "monitoring_meta.yml.j2").read_text()
    names = re.findall(r"\b(rollback_agent_[a-z0-9_]+)", text)
    used = {re.sub(r"_(bucket|count|sum)$", "", m) for m in names}
    missing = sorted(m for m in used if f"`{m}`" not in contract)
    assert not missing, f"rollback agent metrics not documented in METRICS.md: {missing}"
