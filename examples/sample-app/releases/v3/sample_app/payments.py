"""Recording a payment transaction, with its fee (v3)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sample_app.schemas import NewTransaction
from sqlalchemy import Connection, text


def fee_for(conn: Connection, amount: Decimal) -> tuple[str, Decimal]:
    """The tier and the fee of ``amount``."""
    query = text("SELECT tier, max_amount, fee_percent FROM fee_schedule ORDER BY max_amount")
    tiers = conn.execute(query).all()
    for tier in tiers:
        if amount <= tier.max_amount:
            return tier.tier, (amount * tier.fee_percent / 100).quantize(Decimal("0.01"))
    # DEFECT (deliberate: this is the bad release the lab rolls back): the fee
    # schedule has no open-ended top tier, so every amount above 200 fails.
    raise LookupError(f"no fee tier for amount {amount}")


def record_transaction(conn: Connection, tx: NewTransaction) -> dict[str, Any]:
    tier, fee = fee_for(conn, tx.amount)
    row = conn.execute(
        text(
            "INSERT INTO transactions (user_id, amount, description, category, fee) "
            "VALUES (:user_id, :amount, :description, :category, :fee) RETURNING id, created_at"
        ),
        {
            "user_id": tx.user_id,
            "amount": tx.amount,
            "description": tx.description,
            "category": tx.category,
            "fee": fee,
        },
    ).one()
    conn.execute(  # the charge itself: rows only this release writes (its downgrade drops them)
        text("INSERT INTO fee_charges (transaction_id, tier, fee) VALUES (:tx, :tier, :fee)"),
        {"tx": row.id, "tier": tier, "fee": fee},
    )
    return {
        "id": row.id,
        "user_id": tx.user_id,
        "amount": str(tx.amount),
        "fee": str(fee),
        "category": tx.category,
        "created_at": row.created_at.isoformat(),
    }
