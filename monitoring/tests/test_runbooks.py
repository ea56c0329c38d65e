"""Every alert's runbook_url resolves to a file of docs/runbooks/ and a heading in it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from monitoring_support import REPO, ROLLBACK_TRIGGERS, Render

pytestmark = pytest.mark.monitoring

RUNBOOKS = REPO / "docs" / "runbooks"
BASE_URL = "https://github.com/example-org/sre-monitoring/blob/main/docs/runbooks/"


def github_slug(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def sections(path: Path) -> dict[str, str]:
    """Anchor -> text of each `## ` section of a runbook file."""
    found: dict[str, str] = {}
    current = None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            current = github_slug(line[3:])
            assert current not in found, f"{path.name}: two headings give the anchor #{current}"
            found[current] = ""
        elif current:
            found[current] += line + "\n"
    return found


def test_every_runbook_url_resolves_to_a_file_and_anchor(default_render: Render) -> None:
    problems = []
    for alert in default_render.alerts():
        url = alert["annotations"]["runbook_url"]
        if not url.startswith(BASE_URL):
            problems.append(f"{alert['alert']}: {url} is not under {BASE_URL}")
            continue
        file_part, _, anchor = url[len(BASE_URL) :].partition("#")
        path = RUNBOOKS / file_part
        if not path.is_file():
            problems.append(f"{alert['alert']}: {path} does not exist")
        elif not anchor or anchor not in sections(path):
            problems.append(f"{alert['alert']}: no heading for #{anchor} in {path.name}")
    assert not problems, "\n".join(problems)


def test_each_runbook_says_what_it_means_how_to_diagnose_fix_and_escalate(default_render: Render) -> None:
    problems = []
    for alert in default_render.alerts():
        file_part, _, anchor = alert["annotations"]["runbook_url"][len(BASE_URL) :].partition("#")
        text = sections(RUNBOOKS / file_part)[anchor]
        for part in ("**Meaning.**", "**Diagnose", "Fix.**", "**Escalate.**"):
            if part not in text:
                problems.append(f"{alert['alert']}: its runbook has no {part}")
        explained = "rollback trigger" in text and "**What the agent did.**" in text
        if alert["alert"] in ROLLBACK_TRIGGERS and not explained:
            problems.append(f"{alert['alert']}: a rollback trigger's runbook says what the agent did")
    assert not problems, "\n".join(problems)


def test_no_runbook_section_without_an_alert(default_render: Render) -> None:
    anchors = {a["annotations"]["runbook_url"].partition("#")[2] for a in default_render.alerts()}
    stale = [
        f"{path.name}#{anchor}"
        for path in RUNBOOKS.glob("*.md")
        if path.name != "README.md"
        for anchor in sections(path)
        if anchor not in anchors
    ]
    assert not stale, f"runbook sections for alerts that do not exist: {stale}"


def test_the_index_links_every_runbook_file() -> None:
    index = (RUNBOOKS / "README.md").read_text()
    for path in RUNBOOKS.glob("*.md"):
        if path.name != "README.md":
            assert f"({path.name})" in index, f"docs/runbooks/README.md does not link {path.name}"
    for link in re.findall(r"\]\(([\w-]+\.md)(?:#([\w-]+))?\)", index):
        target, anchor = link
        assert (RUNBOOKS / target).is_file(), target
        if anchor:
            assert anchor in sections(RUNBOOKS / target), f"{target}#{anchor}"
