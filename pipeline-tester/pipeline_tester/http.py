"""HTTP with timeouts, bounded retries (tenacity) and error messages that name the problem."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from . import TOOL_NAME, __version__

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = f"{TOOL_NAME}/{__version__}"


def new_session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    session.trust_env = True  # honours HTTPS_PROXY and REQUESTS_CA_BUNDLE
    return session


def where(url: str) -> str:
    """host:port of a URL: safe to print even when the path holds a secret."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def request(
    session: requests.Session,
    method: str,
    url: str,
    *,
    timeout: float,
    attempts: int = 3,
    idempotent: bool = True,
    retry_statuses: Collection[int] = RETRY_STATUSES,
    **kwargs: Any,
) -> requests.Response:
    """One HTTP request, retried on connection errors and on 429/5xx with exponential backoff.

    A non-idempotent request is retried only when the connection could not be made (so the
    server never saw it). The last response is returned when every attempt got a retryable
    status; the caller judges it. Retries stop after ``attempts`` or ``3 * timeout`` seconds.
    """
    retry_exc: tuple[type[BaseException], ...] = (
        (requests.ConnectionError, requests.Timeout)
        if idempotent
        else (requests.ConnectTimeout, _ConnectRefused)
    )

    def _log_retry(state: RetryCallState) -> None:
        outcome = state.outcome
        why = (
            describe_error(outcome.exception(), url)
            if outcome and outcome.failed
            else (f"HTTP {outcome.result().status_code}" if outcome else "?")
        )
        log.info("%s %s: attempt %d failed (%s), retrying", method, url, state.attempt_number, why)

    def _send() -> requests.Response:
        try:
            return session.request(method, url, timeout=timeout, **kwargs)
        except requests.ConnectionError as exc:
            if _is_refused(exc) and not isinstance(exc, requests.Timeout):
                raise _ConnectRefused(*exc.args, request=exc.request, response=exc.response) from exc
            raise

    retrying = Retrying(
        retry=retry_if_exception_type(retry_exc) | retry_if_result(lambda r: r.status_code in retry_statuses),
        stop=stop_after_attempt(attempts) | stop_after_delay(3 * timeout),
        wait=wait_exponential(multiplier=0.25, min=0.25, max=4),
        before_sleep=_log_retry,
        retry_error_callback=_last_outcome,
        reraise=True,
    )
    response: requests.Response = retrying(_send)
    log.info("%s %s -> HTTP %d", method, url, response.status_code)  # masked by the log filter
    return response


class _ConnectRefused(requests.ConnectionError):
    """Connection refused: the request never reached the server, so it is safe to repeat."""


def _is_refused(exc: BaseException) -> bool:
    text = str(exc)
    return "Connection refused" in text or "Errno 111" in text


def _last_outcome(state: RetryCallState) -> Any:
    assert state.outcome is not None
    return state.outcome.result()  # re-raises the last exception, or returns the last response


def describe_error(exc: BaseException | None, url: str) -> str:
    """A short, secret-free description of a failed request (no path, no query)."""
    target = where(url)
    if exc is None:
        return "unknown error"
    if isinstance(exc, requests.ConnectTimeout):
        return f"timed out connecting to {target}"
    if isinstance(exc, requests.ReadTimeout):
        return f"{target} did not answer in time"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS error with {target}: {_root_cause(exc)}"
    if isinstance(exc, requests.ConnectionError):
        text = str(exc)
        if _is_refused(exc):
            return f"connection refused by {target} (nothing listening?)"
        if (
            "Name or service not known" in text
            or "Temporary failure in name resolution" in text
            or "nodename nor servname" in text
        ):
            return f"cannot resolve host {urlsplit(url).hostname}"
        return f"cannot connect to {target}: {_root_cause(exc)}"
    if isinstance(exc, requests.RequestException):
        return f"request to {target} failed: {type(exc).__name__}"
    return f"{type(exc).__name__}: {exc}"


def _root_cause(exc: BaseException) -> str:
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    text = str(seen)
    # urllib3 wraps the useful part: "...: [Errno 113] No route to host')"
    if "] " in text:
        text = text.rsplit("] ", 1)[-1].rstrip("')\"")
    return text[:200]


def json_or_text(response: requests.Response, limit: int = 300) -> Any:
    """The body as JSON when it is JSON, else its first ``limit`` characters."""
    try:
        return response.json()
    except ValueError:
        return response.text[:limit]


def short_body(response: requests.Response, limit: int = 200) -> str:
    text = response.text.strip().replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"
