"""The test-support package of every suite (pytest.ini puts tests/support on sys.path).

    testkit.plugin   the fixtures every suite shares (pytest.ini loads it with -p testkit.plugin)
    testkit.net      free_port, wait_for_port, wait_for
    testkit.tools    require_tool
    testkit.postgres a throwaway PostgreSQL cluster
    testkit.lab      helpers of the lab's end-to-end tests
    testkit.ansible  run_playbook: a small playbook of the roles on an inventory written by the test

Real components only: the tools and servers come from the Debian packages that scripts/bootstrap
installs. A missing tool fails the test with the command that installs it; nothing is skipped.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]

# The roles that each install and run one service (a systemd unit): molecule has a scenario for
# each, and each has the install/configure/service phase tags. stack_common and monitoring_config
# are entered from them; sample_app is the lab's.
SERVICE_ROLES = (
    "alertmanager",
    "blackbox_exporter",
    "grafana",
    "node_exporter",
    "postgres_exporter",
    "prometheus",
    "redis_exporter",
    "rollback_agent",
)
