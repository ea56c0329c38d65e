"""pipeline-tester: checks that alerts reach people and the rollback agents.

The console script ``pipeline-tester`` (pyproject.toml) runs ``cli.main``; docs/pipeline-tester.md
explains every check and flag.
"""

from __future__ import annotations

__version__ = "1.0.0"
TOOL_NAME = "pipeline-tester"
