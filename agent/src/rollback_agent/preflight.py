"""Checks that change nothing: ``check-config``'s host checks, and the preflight of a rollback or a
deploy (git lock files, local changes, free space in ``state_dir``, revisions known to the scripts).

The names (``state_dir``, ``deployment.repo``, ``deployment.ref``, ``working_tree``,
``migrations.command``, ``migrations.environment_file``, ``services.restart_command``,
``services.status_command``, ``notify.slack``) are what the role's validate-config reads.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from rollback_agent.gitops import GitError
from rollback_agent.host import Host
from rollback_agent.migrations import BASE, MigrationError, release_graph


def checks(host: Host) -> list[dict[str, Any]]:
    """Each check as ``{"name", "ok", "detail"}``, the configuration first."""
    config = host.config
    out: list[dict[str, Any]] = [{"name": "config", "ok": True, "detail": config.source or "in memory"}]

    def add(name: str, ok: bool, detail: str) -> None:
        out.append({"name": name, "ok": ok, "detail": detail})

    def found(name: str, ok: bool, subject: str, missing: str = "not found") -> None:
        add(name, ok, f"{subject} " + ("found" if ok else missing))

    state_dir = config.state_dir
    writable = os.access(state_dir, os.W_OK | os.X_OK)
    add("state_dir", writable, f"{state_dir} " + ("is writable" if writable else "is not writable"))
    try:
        with host.git_lock:
            sha = host.deployment.current_sha()
            dirty = host.deployment.dirty_files()
        add("deployment.repo", True, f"{config.deployment.repo} is a git working tree")
        ref = config.deployment.ref
        add("deployment.ref", sha is not None, f"{ref} -> {sha[:10]}" if sha else f"{ref} does not exist")
        add("working_tree", not dirty, "clean" if not dirty else "local changes in " + ", ".join(dirty[:5]))
    except GitError as exc:
        add("deployment.repo", False, str(exc))
    if config.migrations is not None:
        command = config.migrations.command[0]
        found("migrations.command", _executable(command), command, "not found or not executable")
        env_file = config.migrations.environment_file
        if env_file is not None:
            readable = os.access(env_file, os.R_OK)
            add(
                "migrations.environment_file",
                readable,
                f"{env_file} " + ("is readable" if readable else "is not readable"),
            )
    for key, argv in (
        ("services.restart_command", config.services.restart_command),
        ("services.status_command", config.services.status_command),
    ):
        found(key, _executable(argv[0]), argv[0])
    add(
        "notify.slack",
        True,
        "configured" if host.notifier.enabled else "not configured (no notifications)",
    )
    return out


def _executable(command: str) -> bool:
    if "/" in command:
        return os.access(command, os.X_OK) and Path(command).is_file()
    return shutil.which(command) is not None


# --- before a rollback or a deploy changes anything ---------------------------------------------------
# Room the state disk needs to record an operation (phases, ledger, result) whatever happens.
MIN_FREE_BYTES = 8 * 1024 * 1024
# Files git leaves behind when it dies mid-write; checkout and update-ref stop on them.
GIT_LOCK_FILES = ("index.lock", "HEAD.lock", "packed-refs.lock")


def git_lock_files(host: Host) -> list[Path]:
    """Lock files that would make the checkout or the ref update fail (they exist now)."""
    git_dir = Path(host.deployment.repo.git_dir)
    names = [f"{host.config.deployment.ref}.lock", *GIT_LOCK_FILES]
    return [git_dir / name for name in names if (git_dir / name).exists()]


def state_space_problem(host: Host) -> str | None:
    state_dir = host.config.state_dir
    try:
        free = shutil.disk_usage(state_dir).free
    except OSError as exc:
        return f"state_dir {state_dir}: cannot tell the free space ({exc.strerror or exc})"
    if free < MIN_FREE_BYTES:
        return (
            f"state_dir {state_dir} has {free // 1024} KiB free, at least {MIN_FREE_BYTES // 1024} KiB "
            "are needed to record the operation"
        )
    return None


def change_problems(host: Host) -> list[str]:
    """What blocks changing this host now: git lock files, local changes, a full state disk."""
    problems = [
        f"git lock file {path} exists (a git process died or runs): remove it once no git runs"
        for path in git_lock_files(host)
    ]
    dirty = host.deployment.dirty_files()
    if dirty:
        problems.append(
            "the working tree has local changes (" + ", ".join(dirty[:5]) + "): commit or discard them"
        )
    space = state_space_problem(host)
    if space:
        problems.append(space)
    return problems


def revision_problems(
    host: Host, live_sha: str, database_revision: str, target_sha: str | None, target_revision: str | None
) -> list[str]:
    """The database and the target revision must be known to the scripts of both releases involved.

    The live release's scripts downgrade (and upgrade back on a failure); the target's run next.
    """
    assert host.config.migrations is not None
    config_file = host.config.migrations.config_file()
    problems: list[str] = []
    graphs: dict[str, dict[str, tuple[str, ...]]] = {}
    for sha in dict.fromkeys(s for s in (live_sha, target_sha) if s):
        try:
            graphs[sha] = release_graph(host.deployment, sha, config_file)
        except (MigrationError, GitError) as exc:
            problems.append(f"cannot read the migration scripts of {sha[:10]}: {exc}")
    live = graphs.get(live_sha)
    if live is not None and database_revision != BASE and database_revision not in live:
        problems.append(
            f"the database is at revision {database_revision}, which is not in the migration scripts "
            f"of the live release {live_sha[:10]}"
        )
    if target_sha and target_revision and target_revision != BASE:
        for sha, graph in graphs.items():
            if target_revision not in graph:
                problems.append(
                    f"the target revision {target_revision} is not in the migration scripts of {sha[:10]}"
                )
    return problems
