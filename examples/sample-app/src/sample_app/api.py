"""The service's API: users, transactions, balances."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypeVar

import redis
from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from sample_app import metrics
from sample_app.errors import ApiError
from sample_app.payments import record_transaction
from sample_app.schemas import NewTransaction, NewUser

bp = Blueprint("api", __name__, url_prefix="/api")
M = TypeVar("M", bound=BaseModel)


def engine() -> Engine:
    return current_app.extensions["sample_app.engine"]  # type: ignore[no-any-return]


def cache() -> redis.Redis:
    return current_app.extensions["sample_app.redis"]  # type: ignore[no-any-return]


def parse(model: type[M]) -> M:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(400, "invalid_payload", f"{where}: {first['msg']}") from exc


@bp.errorhandler(OperationalError)
def database_down(exc: OperationalError) -> tuple[Response, int]:
    metrics.DB_ERRORS.inc()
    return jsonify(error="database_unavailable", detail=type(exc.orig).__name__), 503


@bp.post("/users")
def register() -> tuple[Response, int]:
    user = parse(NewUser)
    try:
        with engine().begin() as conn:
            row = conn.execute(
                text("INSERT INTO users (email, name) VALUES (:email, :name) RETURNING id"),
                {"email": user.email, "name": user.name},
            ).one()
    except IntegrityError as exc:
        metrics.REGISTRATIONS.labels("rejected").inc()
        raise ApiError(409, "email_taken", f"{user.email} is already registered") from exc
    except Exception:
        metrics.REGISTRATIONS.labels("failed").inc()
        raise
    metrics.REGISTRATIONS.labels("success").inc()
    return jsonify(id=row.id, email=user.email, name=user.name), 201


@bp.get("/users/<int:user_id>")
def get_user(user_id: int) -> Response:
    with engine().connect() as conn:
        row = conn.execute(text("SELECT id, email, name FROM users WHERE id = :id"), {"id": user_id}).first()
    if row is None:
        raise ApiError(404, "not_found", f"no user {user_id}")
    return jsonify(id=row.id, email=row.email, name=row.name)


@bp.post("/transactions")
def create_transaction() -> tuple[Response, int]:
    tx = parse(NewTransaction)
    try:
        with metrics.TRANSACTION_DURATION.time(), engine().begin() as conn:
            if conn.execute(text("SELECT 1 FROM users WHERE id = :id"), {"id": tx.user_id}).first() is None:
                metrics.TRANSACTIONS.labels("rejected").inc()
                raise ApiError(404, "not_found", f"no user {tx.user_id}")
            result = record_transaction(conn, tx)
    except ApiError:
        raise
    except Exception:
        metrics.TRANSACTIONS.labels("failed").inc()
        metrics.PAYMENTS.labels("failed").inc()
        raise
    metrics.TRANSACTIONS.labels("success").inc()
    metrics.PAYMENTS.labels("success").inc()
    _forget_balance(tx.user_id)
    return jsonify(result), 201


@bp.get("/transactions/<int:tx_id>")
def get_transaction(tx_id: int) -> Response:
    with engine().connect() as conn:
        query = text("SELECT * FROM transactions WHERE id = :id")
        row = conn.execute(query, {"id": tx_id}).mappings().first()
    if row is None:
        raise ApiError(404, "not_found", f"no transaction {tx_id}")
    return jsonify({k: _plain(v) for k, v in row.items()})


@bp.get("/users/<int:user_id>/balance")
def balance(user_id: int) -> Response:
    key = f"balance:{user_id}"
    try:
        cached = cache().get(key)
    except redis.RedisError:
        metrics.REDIS_ERRORS.inc()
        cached = None
    if cached is not None:
        return jsonify(user_id=user_id, balance=cached, cached=True)
    with engine().connect() as conn:
        total = conn.execute(
            text("SELECT COALESCE(SUM(amount), 0) FROM transactions WHERE user_id = :id"), {"id": user_id}
        ).scalar_one()
    try:
        cache().set(key, str(total), ex=current_app.config["BALANCE_CACHE_TTL"])
    except redis.RedisError:
        metrics.REDIS_ERRORS.inc()
    return jsonify(user_id=user_id, balance=str(total), cached=False)


def _forget_balance(user_id: int) -> None:
    try:
        cache().delete(f"balance:{user_id}")
    except redis.RedisError:
        metrics.REDIS_ERRORS.inc()


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
