#!/usr/bin/env python3
"""Alert pipeline tester: checks that alerts reach people and the rollback agents.

    python3 scripts/test_alertmanager.py --alertmanager-url http://am:9093 --api-url http://app1:9095

Checks Alertmanager (v2 status), Slack, email through SendGrid, PagerDuty, the rollback agents,
and a test alert's routing (and, with --e2e, its delivery); prints a PASS/FAIL/SKIP table and
exits non-zero when a check fails. ``--help`` lists every flag; docs/pipeline-tester.md explains.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alert_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
