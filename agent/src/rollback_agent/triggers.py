"""The alerts that trigger an automated rollback by default (docs/contracts.md, "Rollback triggers")."""

from __future__ import annotations

from typing import Any

DEFAULT_TRIGGERS: dict[str, dict[str, Any]] = {
    "CriticalErrorRate": {
        "trigger": "error_rate_threshold",
        "auto_rollback": True,
        "confidence": "high",
        "reason": "Error rate exceeded 20% for 2 minutes",
    },
    "CriticalP95Latency": {
        "trigger": "latency_degradation",
        "auto_rollback": True,
        "confidence": "high",
        "reason": "P95 latency exceeded 1.0 s for 2 minutes",
    },
    "MitaSystemUnhealthy": {
        "trigger": "health_check_failure",
        "auto_rollback": True,
        "confidence": "medium",
        "reason": "Overall health check reports the system unhealthy",
    },
    "MitaDatabaseConnectionIssues": {
        "trigger": "database_connection_failure",
        "auto_rollback": True,
        "confidence": "high",
        "reason": "Database connection failures",
    },
    "TransactionProcessingFailure": {
        "trigger": "transaction_processing_failure",
        "auto_rollback": True,
        "confidence": "high",
        "reason": "Transactions are failing",
    },
    "RedisConnectionFailure": {
        "trigger": "external_service_failure",
        "auto_rollback": True,
        "confidence": "high",
        "reason": "Redis is unreachable",
    },
    "UserRegistrationDown": {
        "trigger": "business_metric_failure",
        "auto_rollback": True,
        "confidence": "medium",
        "reason": "User registrations stopped",
    },
}
