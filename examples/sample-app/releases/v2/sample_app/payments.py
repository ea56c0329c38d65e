"""Recording a payment transaction."""

from __future__ import annotations

from typing import Any

from sample_app.schemas import NewTransaction
from sqlalchemy import Connection, text


def record_transaction(conn: Connection, tx: NewTransaction) -> dict[str, Any]:
    row = conn.execute(
        text(
            "INSERT INTO transactions (user_id, amount, description, category) "
            "VALUES (:user_id, :amount, :description, :category) RETURNING id, created_at"
        ),
        {"user_id": tx.user_id, "amount": tx.amount, "description": tx.description, "category": tx.category},
    ).one()
    return {
        "id": row.id,
        "user_id": tx.user_id,
        "amount": str(tx.amount),
        "category": tx.category,
        "created_at": row.created_at.isoformat(),
    }
