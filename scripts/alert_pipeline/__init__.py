"""Alert pipeline tester: checks that alerts reach people and the rollback agents.

The entry point is ``scripts/test_alertmanager.py``; ``cli.main`` does the work.
"""

from __future__ import annotations

__version__ = "1.0.0"
TOOL_NAME = "alert-pipeline-tester"
