"""Authentication of /api/admin/: HTTP Basic (what Alertmanager's basic_auth sends) or a Bearer token.

Both compare against the webhook secret in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from flask import Request, Response

from rollback_agent.web.errors import error_response

REALM = 'Basic realm="rollback-agent", charset="UTF-8"'


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def check(request: Request, username: str, secret: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return _equal(value, secret)
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        if not sep:
            return False
        # Evaluate both comparisons so timing does not tell which part was wrong.
        user_ok = _equal(user, username)
        password_ok = _equal(password, secret)
        return user_ok and password_ok
    return False


def unauthorized() -> tuple[Response, int]:
    response, status = error_response(
        401, "missing or wrong credentials: use HTTP Basic (user and webhook secret) or Authorization: Bearer"
    )
    response.headers["WWW-Authenticate"] = REALM
    return response, status
