"""Recording a payment transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from sample_app.schemas import NewTransaction


def record_transaction(conn: Connection, tx: NewTransaction) -> dict[str, Any]:
    row = conn.execute(
        text(
            "INSERT INTO transactions (user_id, amount, description) "
            "VALUES (:user_id, :amount, :description) RETURNING id, created_at"
        ),
        {"user_id": tx.user_id, "amount": tx.amount, "description": tx.description},
    ).one()
    return {
        "id": row.id,
        "user_id": tx.user_id,
        "amount": str(tx.amount),
        "created_at": row.created_at.isoformat(),
    }
