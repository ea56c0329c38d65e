"""The lab's sample service: a small payments API on PostgreSQL and Redis.

It exists to be deployed, broken and rolled back by the product: releases are
git commits built by ``examples/sample-app/build-releases``; every release
exports the metrics of ``monitoring/METRICS.md`` and a ``/health`` endpoint.
"""

from sample_app.app import create_app
from sample_app.release import RELEASE

__all__ = ["RELEASE", "create_app"]
