"""Fixtures of the monitoring tests (helpers live in monitoring_support.py; promtool and amtool
come from testkit.plugin, like in every suite)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from monitoring_support import (
    FIXTURE_PLAYBOOK,
    PRODUCTION_INVENTORY,
    RENDER_PLAYBOOK,
    Render,
    render_fixture,
    run_playbook,
)


@pytest.fixture(scope="session")
def default_render(tmp_path_factory: pytest.TempPathFactory) -> Render:
    """The content rendered with the role's defaults only (what the promtool tests assume)."""
    return render_fixture(tmp_path_factory.mktemp("default") / "render")


@pytest.fixture(scope="session")
def production_render(tmp_path_factory: pytest.TempPathFactory, default_render: Render) -> Render:
    """What `playbooks/render.yml` writes for the production inventory: the Alertmanager host's
    directory. Falls back to the fixture playbook only while playbooks/render.yml does not exist."""
    if not RENDER_PLAYBOOK.exists():
        return default_render
    render_dir = tmp_path_factory.mktemp("production") / "render"
    proc = run_playbook(RENDER_PLAYBOOK, str(PRODUCTION_INVENTORY), render_dir)
    assert proc.returncode == 0, f"playbooks/render.yml failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    hosts = sorted(p.parent for p in render_dir.glob("*/alertmanager.yml"))
    assert hosts, f"playbooks/render.yml wrote no <host>/alertmanager.yml under {render_dir}"
    return Render(hosts[0], "playbooks/render.yml -i inventories/production")


@pytest.fixture
def render_with(tmp_path: Path) -> Callable[..., Render]:
    """Render with extra variables (overrides a user or the lab would set)."""
    counter = iter(range(1000))

    def _render(**extra: Any) -> Render:
        return render_fixture(tmp_path / f"render{next(counter)}", extra)

    return _render


@pytest.fixture
def render_raw(tmp_path: Path) -> Callable[..., tuple[subprocess.CompletedProcess[str], Path]]:
    """Run the fixture playbook and hand back the process, whatever its outcome."""

    def _run(render_dir: Path | None = None, **extra: Any) -> tuple[subprocess.CompletedProcess[str], Path]:
        target = render_dir or tmp_path / "raw"
        return run_playbook(FIXTURE_PLAYBOOK, "localhost,", target, extra or None), target / "fixture"

    return _run


@pytest.fixture(scope="session")
def stripped_rules(default_render: Render, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default rule files without annotations: the promtool tests of expressions, `for:`
    and labels need not repeat every annotation text (annotations.test.yml checks those)."""
    out = tmp_path_factory.mktemp("stripped")
    for path in default_render.rules_dir.glob("*.yml"):
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)
        (out / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return out
