"""Command-line tools the tests run (installed by scripts/bootstrap)."""

from __future__ import annotations

import shutil

import pytest


def require_tool(name: str) -> str:
    """Absolute path of a command-line tool, or a failure that says how to get it."""
    found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin:/sbin:/bin")
    if not found:
        pytest.fail(f"{name} is not installed: run 'make bootstrap' (scripts/bootstrap installs it)")
    return found
