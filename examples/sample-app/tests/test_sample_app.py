"""The sample service, release by release, on real PostgreSQL, Redis and gunicorn.

These are the behaviours the lab and the end-to-end tests rely on: v1 and v2
serve correctly, v3 fails a share of transactions, v3-slow is slow, every
migration downgrades cleanly from the tree that holds it, and the metrics of
monitoring/METRICS.md are exported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

APP_DIR = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


def call(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            is_json = resp.headers.get_content_type() == "application/json"
            return resp.status, json.loads(raw) if is_json else raw
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def metrics(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        return resp.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0.0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
def database(postgres_server: Any) -> str:
    return postgres_server.create_database(f"app_{uuid.uuid4().hex[:10]}")


def register(url: str) -> int:
    code, body = call("POST", f"{url}/api/users", {"email": f"{uuid.uuid4().hex}@example.com", "name": "T"})
    assert code == 201, body
    return int(body["id"])


def test_release_history_is_real_and_reproducible(releases: Any, tmp_path: Path) -> None:
    git = ["git", "-C", str(releases.repo)]
    parents = {
        r: subprocess.run([*git, "rev-parse", f"{r}^"], capture_output=True, text=True).stdout.strip()
        for r in ("v2", "v2.1", "v3", "v3-slow")
    }
    v2 = releases.shas["v2"]
    assert parents == {"v2": releases.shas["v1"], "v2.1": v2, "v3": v2, "v3-slow": v2}
    healthy = subprocess.run([*git, "diff", "--name-only", "v2", "v2.1"], capture_output=True, text=True)
    assert healthy.stdout.split() == ["sample_app/release.py"]  # v2.1: no migration, nothing else
    diff = subprocess.run([*git, "diff", "--name-only", "v2", "v3"], capture_output=True, text=True)
    files = diff.stdout.split()
    assert "migrations/versions/0003_transaction_fees.py" in files
    # the same sources give the same shas: rebuilding is a no-op (the lab's idempotence)
    out = subprocess.run(
        [sys.executable, str(APP_DIR / "build_releases.py"), str(releases.repo),
         "--bundle", str(tmp_path / "b")],
        check=True, capture_output=True, text=True,
    )
    again = json.loads(out.stdout)
    assert again["changed"] is False
    assert again["releases"] == releases.shas
    heads = subprocess.run(
        ["git", "bundle", "list-heads", str(tmp_path / "b")], capture_output=True, text=True
    )
    assert "refs/tags/v3-slow" in heads.stdout


def test_v1_serves_users_transactions_balances_and_metrics(service_factory: Any, database: str) -> None:
    svc = service_factory("v1", database)
    code, health = call("GET", f"{svc.url}/health")
    assert code == 200 and health["status"] == "healthy" and health["release"] == "v1"
    assert health["components"]["database"]["detail"] == "alembic revision 0001"
    user = register(svc.url)
    code, tx = call("POST", f"{svc.url}/api/transactions", {"user_id": user, "amount": "12.50"})
    assert code == 201 and tx["amount"] == "12.50"
    assert call("GET", f"{svc.url}/api/users/{user}/balance")[1]["cached"] is False
    code, bal = call("GET", f"{svc.url}/api/users/{user}/balance")
    assert code == 200 and bal == {"user_id": user, "balance": "12.50", "cached": True}
    code, err = call("POST", f"{svc.url}/api/transactions", {"user_id": user, "amount": "-1"})
    assert code == 400 and err["error"] == "invalid_payload" and "amount" in err["detail"]
    assert call("POST", f"{svc.url}/api/transactions", {"user_id": 999999, "amount": "1"})[0] == 404
    assert call("GET", f"{svc.url}/api/users/{user}/spending")[0] == 404  # a v2 feature

    text = metrics(svc.url)
    assert sample(text, "mita_http_requests_total", endpoint="/api/transactions", status="201") == 1
    assert sample(text, "mita_http_requests_total", endpoint="/api/transactions", status="400") == 1
    assert sample(text, "mita_http_request_duration_seconds_count", endpoint="/api/transactions") == 3
    assert sample(text, "mita_transactions_total", status="success") == 1
    assert sample(text, "mita_user_registrations_total", status="success") == 1
    assert sample(text, "mita_health_status") == 1
    assert sample(text, "mita_transactions_total", status="failed") == 0  # initialised at 0
    assert sample(text, "process_start_time_seconds") > 0
    assert sample(text, "mita_health_check_status", check="redis", critical="false") == 1
    assert sample(text, "mita_health_checks_total", check="database", status="success") >= 1
    assert sample(text, "mita_payments_total", status="success") == 1
    assert sample(text, "mita_database_pool_size") in (5, 10)  # pool_size 5 per booted worker (livesum)
    assert sample(text, "mita_database_query_duration_seconds_count") > 0
    assert sample(text, "mita_active_users_daily") == 1


def test_v2_adds_categories_and_migration_0002(service_factory: Any, database: str) -> None:
    svc = service_factory("v2", database)
    user = register(svc.url)
    for amount, category in (("10", "food"), ("5", "food"), ("7.25", "travel")):
        body = {"user_id": user, "amount": amount, "category": category}
        assert call("POST", f"{svc.url}/api/transactions", body)[0] == 201
    code, spending = call("GET", f"{svc.url}/api/users/{user}/spending")
    assert code == 200
    assert spending["categories"] == {
        "food": {"transactions": 2, "total": "15.00"},
        "travel": {"transactions": 1, "total": "7.25"},
    }
    assert call("GET", f"{svc.url}/health")[1]["components"]["database"]["detail"] == "alembic revision 0002"


def test_v3_fails_transactions_above_200_and_counts_them(service_factory: Any, database: str) -> None:
    svc = service_factory("v3", database)
    user = register(svc.url)
    code, ok = call("POST", f"{svc.url}/api/transactions", {"user_id": user, "amount": "150"})
    assert code == 201 and ok["fee"] == "1.50"
    code, err = call("POST", f"{svc.url}/api/transactions", {"user_id": user, "amount": "250"})
    assert code == 500 and err == {"error": "internal_error", "detail": "LookupError"}
    # every fee charged is a row of fee_charges (what the downgrade to v2 would drop); the failed one is not
    charges = svc.psql("SELECT tier, fee FROM fee_charges")
    assert charges.split() == ["standard|1.50"], charges
    text = metrics(svc.url)
    assert sample(text, "mita_http_requests_total", endpoint="/api/transactions", status="500") == 1
    assert sample(text, "mita_transactions_total", status="failed") == 1


def test_v3_slow_takes_over_a_second(service_factory: Any, database: str) -> None:
    svc = service_factory("v3-slow", database)
    user = register(svc.url)
    start = time.monotonic()
    code, tx = call("POST", f"{svc.url}/api/transactions", {"user_id": user, "amount": "250"})
    assert code == 201 and tx["fee"] == "2.50"
    assert time.monotonic() - start > 1.0
    text = metrics(svc.url)
    # the whole request lands above the 1 s bucket: p95 > 1 s for CriticalP95Latency
    bucket = "mita_http_request_duration_seconds_bucket"
    assert sample(text, bucket, endpoint="/api/transactions", le="1.0") == 0
    assert sample(text, bucket, endpoint="/api/transactions", le="1.5") == 1


@pytest.mark.parametrize("bad", ["v3", "v3-slow"])
def test_rollback_path_downgrade_from_bad_tree_then_v2_runs(
    service_factory: Any, database: str, bad: str
) -> None:
    """What the agent does: alembic downgrade from the bad tree, then start v2's code on the same database."""
    v2 = service_factory("v2", database, start=False)
    bad_svc = service_factory(bad, database)
    user = register(bad_svc.url)
    assert call("POST", f"{bad_svc.url}/api/transactions", {"user_id": user, "amount": "20"})[0] == 201
    bad_svc.stop()
    out = bad_svc.alembic("downgrade", "0002")
    assert "Running downgrade 0003 -> 0002" in out.stderr
    assert "0002 (head)" in v2.alembic("current").stdout
    v2.start()
    assert call("GET", f"{v2.url}/health")[1]["status"] == "healthy"
    code, bal = call("GET", f"{v2.url}/api/users/{user}/balance")
    assert code == 200 and bal["balance"] == "20.00"  # data kept across the downgrade
    assert call("POST", f"{v2.url}/api/transactions", {"user_id": user, "amount": "300"})[0] == 201


def test_every_migration_downgrades_to_base(service_factory: Any, database: str) -> None:
    svc = service_factory("v3", database, start=False)
    svc.alembic("downgrade", "base")
    assert svc.alembic("current").stdout.strip() == ""
    svc.alembic("upgrade", "head")
    assert "0003 (head)" in svc.alembic("current").stdout


def test_unhealthy_when_the_database_is_down(service_factory: Any, redis_url: str) -> None:
    svc = service_factory("v1", f"postgresql://postgres@127.0.0.1:{unused_port()}/none", migrate=False)
    code, health = call("GET", f"{svc.url}/health")
    assert code == 503 and health["status"] == "unhealthy"
    assert health["components"]["database"]["healthy"] is False
    assert health["components"]["redis"]["healthy"] is True
    code, err = call("POST", f"{svc.url}/api/users", {"email": "x@example.com", "name": "x"})
    assert code == 503 and err["error"] == "database_unavailable"
    text = metrics(svc.url)
    assert sample(text, "mita_health_status") == 0
    assert sample(text, "mita_database_connection_errors_total") == 1


def test_loadgen_measures_v3s_error_share(service_factory: Any, database: str, tmp_path: Path) -> None:
    svc = service_factory("v3", database)
    summary = tmp_path / "summary.json"
    subprocess.run(
        [sys.executable, str(APP_DIR / "loadgen.py"), "--target", svc.url, "--rate", "40", "--duration", "5",
         "--report-every", "0", "--seed", "7", "--summary-json", str(summary)],
        check=True, capture_output=True, text=True, timeout=60,
    )
    totals = json.loads(summary.read_text())
    assert totals["requests"] >= 100
    assert totals["errors"] == 0 and totals["4xx"] == 0
    assert 0.25 < totals["5xx"] / totals["requests"] < 0.5
    assert totals["releases"] == {svc.url: "v3"}


def test_loadgen_rejects_bad_arguments() -> None:
    proc = subprocess.run(
        [sys.executable, str(APP_DIR / "loadgen.py"), "--target", "ftp://x", "--duration", "1"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2 and "must be an http(s) URL" in proc.stderr


def unused_port() -> int:
    """A loopback port nothing listens on (for the database-down case)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
