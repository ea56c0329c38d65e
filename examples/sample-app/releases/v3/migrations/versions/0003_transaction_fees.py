"""v3: a fee on every transaction, from a tiered fee schedule, each fee charged in fee_charges.

The downgrade drops fee_charges and transactions.fee: the rows v3 wrote during its life (the
rollback agent counts them and backs them up before it runs this downgrade).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schedule = op.create_table(
        "fee_schedule",
        sa.Column("tier", sa.String(16), primary_key=True),
        sa.Column("max_amount", sa.Numeric(12, 2), nullable=False),
        sa.Column("fee_percent", sa.Numeric(5, 2), nullable=False),
    )
    op.bulk_insert(
        schedule,
        [
            {"tier": "small", "max_amount": 50, "fee_percent": 0.50},
            {"tier": "standard", "max_amount": 200, "fee_percent": 1.00},
        ],
    )
    op.add_column("transactions", sa.Column("fee", sa.Numeric(12, 2), nullable=False, server_default="0"))
    op.create_table(
        "fee_charges",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("transaction_id", sa.Integer, sa.ForeignKey("transactions.id"), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("fee", sa.Numeric(12, 2), nullable=False),
        sa.Column("charged_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("fee_charges")
    op.drop_column("transactions", "fee")
    op.drop_table("fee_schedule")
