#!/usr/bin/env python3
"""The old name of the alert pipeline tester: runs ``pipeline-tester`` (pipeline-tester/).

    .venv/bin/pipeline-tester --alertmanager-url http://am:9093 --api-url http://app1:9095

Run with a Python that lacks the tester's dependencies (the system python3), it says how to run
it instead of failing with a traceback. docs/pipeline-tester.md explains every check and flag.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

try:
    from pipeline_tester.cli import main
except ModuleNotFoundError as exc:
    venv_tool = ROOT / ".venv" / "bin" / "pipeline-tester"
    how = (
        f"run {venv_tool} instead (same flags)"
        if venv_tool.exists()
        else "run 'make bootstrap' (it installs it into .venv), then .venv/bin/pipeline-tester (same flags)"
    )
    print(
        f"test_alertmanager.py: this Python ({sys.executable}) cannot import the pipeline tester "
        f"({exc.name} is missing): {how}",
        file=sys.stderr,
    )
    sys.exit(2)

if __name__ == "__main__":
    sys.exit(main())
