"""amtool's route test against the running Alertmanager config (a second opinion on routing)."""

from __future__ import annotations

import logging
import shutil
import subprocess
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


def amtool_path() -> str | None:
    return shutil.which("amtool") or shutil.which("amtool", path="/usr/bin:/usr/local/bin")


def amtool_receivers(am_url: str, labels: dict[str, str], timeout: float) -> list[str] | None:
    """Receivers amtool computes for ``labels`` from the config Alertmanager runs, or None.

    None when amtool is missing, fails, or the URL carries credentials (they would show in
    ``ps``: amtool gets nothing secret on its command line).
    """
    tool = amtool_path()
    if tool is None or urlsplit(am_url).password or urlsplit(am_url).username:
        return None
    cmd = [
        tool,
        "config",
        "routes",
        "test",
        f"--alertmanager.url={am_url}",
        f"--timeout={max(int(timeout), 1)}s",
        *(f"{k}={v}" for k, v in sorted(labels.items())),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 5, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.info("amtool failed: %s", type(exc).__name__)
        return None
    if proc.returncode != 0:
        log.info("amtool exited %d: %s", proc.returncode, proc.stderr.strip()[:200])
        return None
    line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return [name for name in line.split(",") if name]
