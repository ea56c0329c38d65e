"""The accepted webhook's answer waits for the rollback process's word (a pipe it closes), not a poll."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from rollback_agent import preview

pytestmark = pytest.mark.agent


def _child_holding(fd: int, code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", code, str(fd)], pass_fds=(fd,), stdin=subprocess.PIPE
    )


def test_the_answer_wakes_when_the_process_says_the_preview_is_recorded() -> None:
    read_end, write_end = os.pipe()
    # The child closes its end the way the rollback process does (preview.recorded), then lingers.
    code = (
        "import sys; from rollback_agent import preview; preview.announce_to(int(sys.argv[1]));"
        "preview.recorded(); preview.recorded(); sys.stdin.read()"
    )
    child = _child_holding(write_end, code)
    os.close(write_end)
    preview.expect("INC-signal", read_end)
    try:
        assert preview.wait("INC-signal", 60.0) is True  # woken while the child still runs
        assert child.poll() is None
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)
    assert preview.wait("INC-signal", 0.1) is False  # consumed: nothing left to wait for


def test_a_process_that_ends_wakes_the_answer_and_a_silent_one_times_out() -> None:
    read_end, write_end = os.pipe()
    child = _child_holding(write_end, "import sys; sys.stdin.read()")
    os.close(write_end)
    preview.expect("INC-silent", read_end)
    assert preview.wait("INC-silent", 0.2) is False  # still open: the bound holds
    read_end, write_end = os.pipe()
    preview.expect("INC-silent", read_end)
    other = _child_holding(write_end, "import sys; sys.stdin.read()")
    os.close(write_end)
    for proc in (child, other):
        assert proc.stdin is not None
        proc.stdin.close()
    other.wait(10)  # exit (even kill -9) closes the pipe: the answer does not wait for the bound
    assert preview.wait("INC-silent", 60.0) is True
    child.wait(10)


def test_a_forgotten_incident_leaves_no_descriptor_open() -> None:
    read_end, write_end = os.pipe()
    preview.expect("INC-forgotten", read_end)
    preview.forget("INC-forgotten")
    with pytest.raises(OSError):
        os.fstat(read_end)
    os.close(write_end)
