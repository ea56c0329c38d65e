"""The heavy-suite lock: one podman/molecule/lab run at a time on this machine.

The lab (scripts/lab), the e2e fixtures and the molecule tests all take it through heavy_lock().
Its path is /tmp/heavy-suite.lock unless HEAVY_SUITE_LOCK names another. A caller that already
holds it (``flock /tmp/heavy-suite.lock ...``, or an outer heavy_lock() whose children run
scripts/lab) sets HEAVY_SUITE_LOCK_HELD=1, and nothing is taken twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from lab_kit.paths import HEAVY_LOCK
from lab_kit.ui import info

LOCK_ENV = "HEAVY_SUITE_LOCK_HELD"


@contextlib.contextmanager
def heavy_lock() -> Iterator[None]:
    """Hold HEAVY_LOCK (flock(2), the lock flock(1) takes) unless this process tree holds it."""
    if os.environ.get(LOCK_ENV) == "1":
        yield
        return
    HEAVY_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with HEAVY_LOCK.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info(f"waiting for {HEAVY_LOCK} (another heavy suite is running) ...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        os.environ[LOCK_ENV] = "1"
        try:
            yield
        finally:
            os.environ.pop(LOCK_ENV, None)
            fcntl.flock(fh, fcntl.LOCK_UN)
