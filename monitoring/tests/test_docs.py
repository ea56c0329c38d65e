"""monitoring/README.md: the generated alert reference is up to date, its links resolve."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from monitoring_support import MONITORING, REPO, Render

pytestmark = pytest.mark.monitoring

README = MONITORING / "README.md"
SCRIPT = MONITORING / "scripts" / "alert_reference.py"


def test_alert_reference_is_up_to_date(default_render: Render) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--rules", str(default_render.rules_dir), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"


def test_alert_reference_lists_every_alert(default_render: Render) -> None:
    text = README.read_text()
    section = text.split("<!-- BEGIN ALERT REFERENCE", 1)[1]
    for alert in default_render.alerts():
        assert f"| {alert['alert']} |" in section, alert["alert"]


def test_check_mode_detects_a_stale_reference(default_render: Render, tmp_path) -> None:
    # A rules directory with one alert less: the README no longer matches it.
    rules = tmp_path / "rules"
    rules.mkdir()
    for path in default_render.rules_dir.glob("*.yml"):
        text = path.read_text()
        if path.stem == "resources":
            text = text.replace("alert: HostDown", "alert: HostDownRenamed")
        (rules / path.name).write_text(text)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--rules", str(rules), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 1
    assert "HostDownRenamed" in proc.stdout


def test_relative_links_of_the_readme_resolve() -> None:
    for target in re.findall(r"\]\((\.\./[^)#]+|[\w./-]+\.md)(?:#[^)]*)?\)", README.read_text()):
        assert (MONITORING / target).resolve().exists(), f"monitoring/README.md links to a missing {target}"
