"""The web intake under abuse: slow clients, deep JSON, huge strings, chunked bodies, odd secrets,
forged log lines, colliding incident ids and a metrics directory that cannot be written."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time

import pytest
import requests
from agent_gunicorn import AUTH, Gunicorn, failed_start
from agent_support import SECRET, basic_auth, payload

pytestmark = pytest.mark.agent

TRIGGER = "/api/admin/rollback/trigger"
STATUS = "/api/admin/rollback/status"
TEST = "/api/admin/rollback/test"


@pytest.fixture
def server(agent_env):
    agent_env.write_config(dry_run=True)
    started = Gunicorn(agent_env, workers=2)
    yield started
    started.stop()


def _trickle(port: int, stop: threading.Event, opened: list[socket.socket]) -> None:
    """A slow, unauthenticated client: a request line, then one header byte every 0.3 s."""
    with contextlib.suppress(OSError):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        opened.append(sock)
        sock.sendall(b"POST /api/admin/rollback/trigger HTTP/1.1\r\nHost: x\r\n")
        while not stop.is_set():
            sock.sendall(b"X")
            stop.wait(0.3)


def test_slow_clients_do_not_delay_a_real_webhook(server) -> None:
    server.start()
    stop = threading.Event()
    opened: list[socket.socket] = []
    slow = [
        threading.Thread(target=_trickle, args=(server.port, stop, opened), daemon=True) for _ in range(8)
    ]
    for thread in slow:
        thread.start()
    try:
        time.sleep(1.0)  # the eight connections are in, trickling their headers
        assert len(opened) == 8
        started = time.monotonic()
        try:
            response = requests.post(
                server.base + TRIGGER, json=payload("NotATrigger"), auth=AUTH, timeout=10
            )
            elapsed = time.monotonic() - started
        except requests.Timeout:
            elapsed = time.monotonic() - started
            response = None
        print(f"webhook answered in {elapsed:.3f}s with 8 slow clients connected")
        assert response is not None and response.status_code == 200, "the webhook timed out"
        assert elapsed < 8.0, elapsed  # stalled workers would hold it until the 10 s client timeout
    finally:
        stop.set()
        for sock in opened:
            sock.close()


def test_slow_client_is_cut_off_after_the_read_timeout(agent_env) -> None:
    agent_env.write_config(server={"read_timeout": "2s"})
    server = Gunicorn(agent_env, workers=1)
    try:
        server.start()
        stop = threading.Event()
        opened: list[socket.socket] = []
        thread = threading.Thread(target=_trickle, args=(server.port, stop, opened), daemon=True)
        thread.start()
        time.sleep(0.5)
        opened[0].settimeout(8)
        started = time.monotonic()
        with contextlib.suppress(OSError):
            while opened[0].recv(4096):
                pass
        # The server gave up on the unfinished request: the connection ends within the timeout.
        assert time.monotonic() - started < 6
        stop.set()
    finally:
        server.stop()


def test_chunked_body_over_one_mebibyte_is_a_413_and_log_lines_cannot_be_forged(server) -> None:
    server.start()

    def chunks():
        for _ in range(40):
            yield b"x" * 32768  # 1.25 MiB in all, no Content-Length

    response = requests.post(
        server.base + TRIGGER,
        data=chunks(),
        headers={"Content-Type": "application/json"},
        auth=AUTH,
        timeout=30,
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "payload_too_large"
    # A newline in an alert name is written escaped: it cannot start a log line of its own.
    forged = "Forged\nERROR rollback_agent.rollback[1]: INC-forged rolled back\x1b[31m"
    response = requests.post(server.base + TRIGGER, json=payload(forged), auth=AUTH, timeout=30)
    assert response.status_code == 200
    server.stop()
    lines = server.log.read_text(errors="replace").splitlines()
    assert not [line for line in lines if line.startswith("ERROR rollback_agent.rollback[1]")]
    assert any(
        "Forged\\nERROR rollback_agent.rollback[1]: INC-forged rolled back\\x1b[31m" in ln for ln in lines
    )


@pytest.mark.parametrize("path", [TRIGGER, TEST])
def test_deeply_nested_json_is_a_400(shared_env, path) -> None:
    client = shared_env.client()
    response = client.post(
        path, data="[" * 100000, headers={**basic_auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "nested" in response.get_json()["detail"]


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "-5", "-5s", "1e400"])
def test_durations_must_be_finite_and_positive(agent_env, capsys, value) -> None:
    from rollback_agent.cli import main
    from rollback_agent.config import ConfigError

    text = agent_env.config_path.read_text().replace("cooldown: 15m", f"cooldown: {value}")
    assert f"cooldown: {value}" in text
    agent_env.config_path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        agent_env.config()
    assert any(p.startswith("guards.cooldown:") for p in caught.value.problems), caught.value.problems
    code = main(["--config", str(agent_env.config_path), "check-config"])
    _, err = capsys.readouterr()
    assert code == 2 and "guards.cooldown:" in err


def test_huge_strings_are_stored_truncated_with_a_marker(agent_env) -> None:
    agent_env.write_config(dry_run=True)
    client = agent_env.client()
    big = 900_000
    bodies = []
    body = payload("NotATrigger")
    body["receiver"] = "r" * big
    bodies.append(body)
    body = payload("NotATrigger", fingerprint="fp-2")
    body["groupKey"] = "g" * big
    bodies.append(body)
    body = payload("CriticalErrorRate", labels={"pod": "p" * (big // 2)})  # in labels and commonLabels
    bodies.append(body)
    body = payload("NotATrigger", fingerprint="fp-4")
    body["alerts"][0]["annotations"]["summary"] = "s" * big
    body["commonAnnotations"]["summary"] = "s" * 10
    bodies.append(body)
    for body in bodies:
        response = client.post(TRIGGER, json=body, headers=basic_auth())
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
    receiver, group_key = agent_env.sql("SELECT receiver, group_key FROM webhooks ORDER BY id")[0]
    assert len(receiver.encode()) <= 2048 and re.search(r"…\[truncated \d+ bytes\]$", receiver)
    group_key = agent_env.sql("SELECT group_key FROM webhooks ORDER BY id")[1][0]
    assert len(group_key.encode()) <= 2048 and "…[truncated" in group_key
    (detail,) = agent_env.sql("SELECT detail FROM incidents ORDER BY seq DESC LIMIT 1")[0]
    pod = json.loads(detail)["labels"]["pod"]
    assert len(pod.encode()) <= 2048 and pod.endswith(f"…[truncated {big // 2 - 1024} bytes]")
    size = os.path.getsize(agent_env.state_dir / "state.db")
    assert size < 2_000_000, size
    status = client.get(STATUS, headers=basic_auth())
    assert status.status_code == 200 and len(status.get_data()) < 200_000


def test_cap_keeps_utf8_whole() -> None:
    from rollback_agent.limits import cap

    text = "é" * 1000  # 2000 bytes
    out = cap(text, 1001)
    assert out.startswith("é" * 500) and out.endswith("…[truncated 1000 bytes]")
    assert cap("short", 10) == "short"


def test_incident_ids_carry_64_random_bits_and_a_collision_is_no_500(agent_env, monkeypatch) -> None:
    from rollback_agent import decisions
    from rollback_agent.state import new_incident_id

    ids = {new_incident_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch(r"INC-\d{8}-\d{6}-[0-9a-f]{16}", i) for i in ids)
    agent_env.write_config(dry_run=True)
    client = agent_env.client()
    monkeypatch.setattr(decisions, "new_incident_id", lambda: "INC-20250101-000000-0000000000000000")
    first = client.post(TRIGGER, json=payload(), headers=basic_auth())
    assert first.status_code == 200 and first.get_json()["status"] == "dry_run"
    second = client.post(
        TRIGGER, json=payload("CriticalP95Latency", fingerprint="fp-latency"), headers=basic_auth()
    )
    assert second.status_code == 503, second.get_data(as_text=True)
    assert second.headers["Retry-After"] == "1"
    assert "incident id" in second.get_json()["detail"]


@pytest.mark.parametrize("content", [b"\xff\xfe\x00secret", None])
def test_unreadable_or_binary_secret_file_is_a_config_error_naming_the_key(
    agent_env, capsys, content
) -> None:
    from rollback_agent.cli import main

    agent_env.secret_file.unlink()
    if content is None:
        agent_env.secret_file.mkdir()  # cannot be read as a file
    else:
        agent_env.secret_file.write_bytes(content)
    code = main(["--config", str(agent_env.config_path), "check-config"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "auth.password_file:" in err + out and "Traceback" not in err + out


def test_unwritable_metrics_directory_is_a_one_line_start_up_error(agent_env, tmp_path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    stderr = failed_start(agent_env, PROMETHEUS_MULTIPROC_DIR=str(blocker / "metrics"))
    assert "Traceback" not in stderr, stderr
    assert f"metrics directory {blocker / 'metrics'}" in stderr, stderr
    assert SECRET not in stderr
