"""``python -m rollback_agent`` is the ``rollback-agent`` command."""

import sys

from rollback_agent.cli import main

sys.exit(main())
