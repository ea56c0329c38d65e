"""The alert rules: promtool unit tests of every category, and the rules' own contract
(labels, annotations, rollback triggers, test coverage)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from monitoring_support import CATEGORIES, ROLLBACK_TRIGGERS, SEVERITIES, TESTS, Render, rule_test_files

pytestmark = pytest.mark.monitoring

DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")


def seconds(duration: str) -> float:
    match = DURATION.match(duration)
    assert match, f"not a simple duration: {duration}"
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return int(match.group(1)) * factor


def run_promtool_test(promtool: str, test_file: Path, rules_dir: Path) -> None:
    target = rules_dir / test_file.name
    shutil.copy(test_file, target)
    proc = subprocess.run([promtool, "test", "rules", str(target)], capture_output=True, text=True)
    assert proc.returncode == 0, f"promtool test rules {test_file.name} failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.parametrize(
    "test_file",
    [p for p in rule_test_files() if p.name != "annotations.test.yml"],
    ids=lambda p: p.name,
)
def test_promtool_unit_tests(promtool: str, stripped_rules: Path, test_file: Path) -> None:
    run_promtool_test(promtool, test_file, stripped_rules)


def test_promtool_annotation_texts(promtool: str, default_render: Render, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(default_render.rules_dir, rules)
    run_promtool_test(promtool, TESTS / "rules" / "annotations.test.yml", rules)


def test_every_rendered_file_passes_promtool_check(promtool: str, default_render: Render) -> None:
    files = sorted(default_render.rules_dir.glob("*.yml"))
    assert [f.stem for f in files] == sorted(CATEGORIES)
    proc = subprocess.run([promtool, "check", "rules", *map(str, files)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_fifty_rules_or_more_in_eight_categories(default_render: Render) -> None:
    alerts = default_render.alerts()
    per_category: dict[str, int] = defaultdict(int)
    for alert in alerts:
        per_category[alert["category"]] += 1
    print("rules per category:", dict(per_category), "total:", len(alerts))
    assert len(alerts) >= 50
    assert set(per_category) == set(CATEGORIES)
    names = [a["alert"] for a in alerts]
    duplicates = {n for n in names if names.count(n) > 1}
    assert not duplicates, f"alert names must be unique: {duplicates}"


def test_every_alert_has_the_labels_and_annotations(default_render: Render) -> None:
    problems = []
    for alert in default_render.alerts():
        name, labels, notes = alert["alert"], alert.get("labels", {}), alert.get("annotations", {})
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity {labels.get('severity')!r}")
        for label in ("component", "family", "service"):
            if not labels.get(label):
                problems.append(f"{name}: no {label} label")
        if labels.get("service") != "mita-api":
            problems.append(f"{name}: service label {labels.get('service')!r}")
        for key in ("summary", "description", "value", "runbook_url"):
            if not notes.get(key):
                problems.append(f"{name}: no {key} annotation")
        if "$value" not in notes.get("description", ""):
            problems.append(f"{name}: the description does not show the measured value")
        if "rollback" in labels and labels["rollback"] != "true":
            problems.append(f'{name}: rollback label must be "true" or absent')
    assert not problems, "\n".join(problems)


def test_the_seven_rollback_triggers(default_render: Render) -> None:
    triggers = {a["alert"]: a for a in default_render.alerts() if a["labels"].get("rollback") == "true"}
    assert set(triggers) == ROLLBACK_TRIGGERS
    for name, alert in triggers.items():
        assert alert["labels"]["severity"] == "critical", name
        assert "rollback trigger" in alert["annotations"]["description"], name


def test_rollback_trigger_thresholds_and_durations_match_the_spec(default_render: Render) -> None:
    alerts = {a["alert"]: a for a in default_render.alerts()}
    assert "> 0.2\n" in alerts["CriticalErrorRate"]["expr"] and alerts["CriticalErrorRate"]["for"] == "2m"
    assert "> 1.0\n" in alerts["CriticalP95Latency"]["expr"] and alerts["CriticalP95Latency"]["for"] == "2m"
    assert "> 0.4\n" in alerts["HighP95Latency"]["expr"]
    assert "> 0.05\n" in alerts["HighErrorRate"]["expr"]
    assert alerts["QueueDepthHigh"]["expr"].endswith("> 500")
    assert alerts["QueueDepthCritical"]["expr"].endswith("> 2000")
    assert alerts["DatabaseConnectionsHigh"]["expr"].endswith("> 80")
    assert "> 5\n" in alerts["MitaComponentTimeout"]["expr"] + "\n"
    assert "> 2\n" in alerts["MitaComponentSlow"]["expr"] + "\n"
    for resource in ("Memory", "Cpu", "Disk"):
        assert " > 85" in alerts[f"High{resource}Usage"]["expr"], resource
        assert " > 95" in alerts[f"Critical{resource}Usage"]["expr"], resource


def load_tests() -> dict[str, dict[str, Any]]:
    return {p.name: yaml.safe_load(p.read_text()) for p in rule_test_files()}


def test_every_category_has_a_test_file() -> None:
    names = {p.name for p in rule_test_files()}
    missing = [c for c in CATEGORIES if f"{c}.test.yml" not in names]
    assert not missing, f"categories without promtool tests: {missing}"


def test_every_alert_is_seen_firing_in_a_promtool_test(default_render: Render) -> None:
    fired = {
        case["alertname"]
        for doc in load_tests().values()
        for group in doc["tests"]
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    untested = sorted({a["alert"] for a in default_render.alerts()} - fired)
    assert not untested, f"alerts that no promtool test sees firing: {untested}"


def test_rollback_triggers_fire_after_for_and_stay_quiet_below_threshold(default_render: Render) -> None:
    """For each trigger: a test group where it is pending (no alert) at an earlier time and
    firing later, and another group where it never fires (the 'just under' case)."""
    durations = {a["alert"]: seconds(a["for"]) for a in default_render.alerts()}
    fire_after_for: set[str] = set()
    quiet: set[str] = set()
    for doc in load_tests().values():
        for group in doc["tests"]:
            cases: dict[str, list[tuple[float, bool]]] = defaultdict(list)
            for case in group.get("alert_rule_test", []):
                cases[case["alertname"]].append((seconds(case["eval_time"]), bool(case.get("exp_alerts"))))
            for name, results in cases.items():
                firing = [t for t, fires in results if fires]
                silent = [t for t, fires in results if not fires]
                if firing and any(t < min(firing) and min(firing) - t <= durations[name] for t in silent):
                    fire_after_for.add(name)
                if silent and not firing and max(silent) >= 2 * durations[name]:
                    quiet.add(name)
    missing = ROLLBACK_TRIGGERS - fire_after_for
    assert not missing, f"no 'fires after for:' case: {missing}"
    assert quiet >= ROLLBACK_TRIGGERS, f"no 'quiet under the threshold' case: {ROLLBACK_TRIGGERS - quiet}"
