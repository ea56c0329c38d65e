"""v2 feature: a user's spending by category."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import Engine, text

bp = Blueprint("reports", __name__, url_prefix="/api")


@bp.get("/users/<int:user_id>/spending")
def spending(user_id: int) -> Response:
    engine: Engine = current_app.extensions["sample_app.engine"]
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT category, COUNT(*) AS n, SUM(amount) AS total FROM transactions "
                "WHERE user_id = :id GROUP BY category ORDER BY category"
            ),
            {"id": user_id},
        ).all()
    return jsonify(
        user_id=user_id,
        categories={r.category: {"transactions": r.n, "total": str(r.total)} for r in rows},
    )
