"""v2: a category on every transaction, for the spending summary.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "transactions",
        sa.Column("category", sa.String(32), nullable=False, server_default="general"),
    )
    op.create_index("ix_transactions_user_category", "transactions", ["user_id", "category"])


def downgrade() -> None:
    op.drop_index("ix_transactions_user_category", table_name="transactions")
    op.drop_column("transactions", "category")
