"""``check-config``'s host checks: everything the agent needs on this host, changing nothing.

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
