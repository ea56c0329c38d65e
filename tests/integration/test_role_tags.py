"""The phase tags of every role (install, configure, service) beside the component tags of site.yml.

``ansible-playbook --list-tasks`` on site.yml and the production inventory (no host is contacted)
shows which tasks each tag selects: every role task carries exactly one phase tag (or ``always``
for the argument and preflight checks), ``--tags configure`` lists no install or service task,
``--tags service`` only the service step, and every role has tasks under each of the three.
--list-tasks cannot look inside dynamic includes, so the task files are read too: every
``include_role`` / ``include_tasks`` in a phase file passes its phase on with ``apply: {tags}``,
and the entry points of the included roles include nothing dynamically themselves (their tasks
would lose the tag). The molecule scenario of node_exporter runs ``--tags configure`` for real.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml
from testkit import SERVICE_ROLES
from testkit.ansible import BIN, ansible_env

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ROLES = list(SERVICE_ROLES)
PHASES = ("install", "configure", "service")
# the task files of each phase (roles/<role>/tasks/main.yml imports them with these tags)
PHASE_FILES = {
    "install.yml": "install",
    "repository.yml": "install",
    "configure.yml": "configure",
    "dashboards.yml": "configure",
    "service.yml": "service",
}
# the service step of each role: its include of the stack_common role's service entry point
SERVICE_STEP = {role: f"Run {role}" for role in ROLES} | {
    "grafana": "Run Grafana",
    "rollback_agent": "Run the agent",
}
TASK_LINE = re.compile(r"^\s{6}(?P<name>.+?)\tTAGS: \[(?P<tags>[^\]]*)\]$")


@cache
def listed(*args: str) -> tuple[tuple[str, str, frozenset[str]], ...]:
    """(role, task name, tags) of every task ``--list-tasks`` shows with these arguments."""
    proc = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            "inventories/production",
            "playbooks/site.yml",
            "--list-tasks",
            *args,
        ],
        cwd=REPO,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tasks = []
    for line in proc.stdout.splitlines():
        match = TASK_LINE.match(line)
        if not match:
            continue
        tags = frozenset(t.strip() for t in match["tags"].split(",") if t.strip())
        roles = tags & set(ROLES)
        assert len(roles) == 1, f"no single component tag on {line!r}"
        tasks.append((next(iter(roles)), match["name"], tags))
    assert tasks, proc.stdout
    return tuple(tasks)


def test_every_task_has_one_phase_or_always() -> None:
    wrong = [
        (role, name, sorted(tags)) for role, name, tags in listed() if len(tags & {*PHASES, "always"}) != 1
    ]
    assert not wrong


@pytest.mark.parametrize("phase", PHASES)
def test_a_phase_tag_selects_that_phase_of_every_role(phase: str) -> None:
    tasks = listed("--tags", phase)
    others = [(role, name) for role, name, tags in tasks if phase not in tags and "always" not in tags]
    assert not others, f"--tags {phase} also runs {others}"
    foreign = [(role, name) for role, name, tags in tasks if tags & (set(PHASES) - {phase})]
    assert not foreign
    roles = {role for role, _, tags in tasks if phase in tags}
    assert roles == set(ROLES), f"roles without {phase} tasks: {set(ROLES) - roles}"
    # the same tasks as the full list carries under that tag, and nothing else
    full = [(role, name) for role, name, tags in listed() if phase in tags or "always" in tags]
    assert [(role, name) for role, name, _ in tasks] == full


def test_configure_lists_no_install_task() -> None:
    install = {(role, name) for role, name, tags in listed("--tags", "install") if "install" in tags}
    configure = {(role, name) for role, name, _ in listed("--tags", "configure")}
    assert install, "no install task listed"
    assert not install & configure


def test_service_runs_the_service_step_of_every_role() -> None:
    service = {(role, name) for role, name, tags in listed("--tags", "service") if "service" in tags}
    for role, step in SERVICE_STEP.items():
        assert (role, step) in service, f"{role}: {step!r} not under --tags service"
    # the unit and flags are configuration: they are not part of the service step
    assert not [name for _, name in service if re.search(r"Write .*(unit|flags|command line)", name)]


def test_one_component_in_one_phase() -> None:
    """--tags prometheus --skip-tags install,service: the configuration of Prometheus alone (the
    other roles' argument checks are tagged always and are listed too)."""
    tasks = listed("--tags", "prometheus", "--skip-tags", "install,service")
    assert {role for role, _, tags in tasks if "always" not in tags} == {"prometheus"}
    configure = listed("--tags", "configure")
    assert {name for _, name, tags in tasks if "configure" in tags} == {
        name for role, name, tags in configure if role == "prometheus" and "configure" in tags
    }
    assert not [name for _, name, tags in tasks if not tags & {"configure", "always"}]


def _tasks(path: Path) -> list[dict]:
    """The tasks of a task file, blocks flattened."""
    out: list[dict] = []
    for task in yaml.safe_load(path.read_text()) or []:
        out.append(task)
        for key in ("block", "rescue", "always"):
            out.extend(task.get(key, []))
    return out


def _include(task: dict) -> dict | None:
    for module in ("ansible.builtin.include_role", "ansible.builtin.include_tasks"):
        if module in task:
            args = task[module]
            return args if isinstance(args, dict) else {"file": args}
    return None


@pytest.mark.parametrize("role", ROLES)
def test_dynamic_includes_pass_their_phase_on(role: str) -> None:
    main = _tasks(REPO / "roles" / role / "tasks" / "main.yml")
    imported = {t["ansible.builtin.import_tasks"]: t.get("tags") for t in main}
    checked = 0
    for file, tags in imported.items():
        assert tags in ([PHASE_FILES.get(file)], ["always"]), f"{role}: {file} imported with tags {tags}"
        for task in _tasks(REPO / "roles" / role / "tasks" / file):
            include = _include(task)
            if include is None:
                continue
            checked += 1
            assert include.get("apply", {}).get("tags") == tags, (
                f"{role}/{file}: {task['name']!r} does not apply its phase tag {tags} to the included tasks"
            )
    assert role == "grafana" or checked > 0


@pytest.mark.parametrize(
    "entry",
    [
        "stack_common/tasks/user.yml",
        "stack_common/tasks/install.yml",
        "stack_common/tasks/install_tarball.yml",
        "stack_common/tasks/args.yml",
        "stack_common/tasks/unit.yml",
        "stack_common/tasks/web_config.yml",
        "stack_common/tasks/service.yml",
        "monitoring_config/tasks/rules.yml",
        "monitoring_config/tasks/render_rules.yml",
        "monitoring_config/tasks/alertmanager.yml",
        "monitoring_config/tasks/blackbox.yml",
        "monitoring_config/tasks/rollback_alerts.yml",
    ],
)
def test_included_entry_points_include_nothing_dynamically(entry: str) -> None:
    """A nested dynamic include drops the caller's phase tag unless it applies the phase itself
    (stack_common's install step includes the tarball tasks dynamically, applying `install`)."""
    phase = ["install"] if entry.startswith("stack_common/tasks/install") else None
    dynamic = [
        task["name"]
        for task in _tasks(REPO / "roles" / entry)
        if (include := _include(task)) is not None
        and (phase is None or include.get("apply", {}).get("tags") != phase)
    ]
    assert not dynamic, f"{entry}: {dynamic} would drop the caller's phase tag"
