"""The blackbox modules, validated and probing a local health URL with a real blackbox_exporter."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

import pytest
import requests
import yaml
from monitoring_support import Render
from pytest_httpserver import HTTPServer
from testkit.net import free_port, wait_for
from testkit.tools import require_tool

pytestmark = pytest.mark.monitoring


@pytest.fixture(scope="module")
def exporter(default_render: Render, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("blackbox") / "blackbox.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                require_tool("prometheus-blackbox-exporter"),
                f"--config.file={default_render.blackbox_yml}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(requests.RequestException):
                return requests.get(f"{url}/-/healthy", timeout=1).ok
            return False

        try:
            wait_for(ready, 20, "blackbox_exporter")
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


def probe(exporter: str, module: str, target: str) -> dict[str, float]:
    text = requests.get(f"{exporter}/probe", params={"module": module, "target": target}, timeout=15).text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            values[name] = float(value)
    return values


def test_modules_and_config_check(default_render: Render) -> None:
    modules = yaml.safe_load(default_render.blackbox_yml.read_text())["modules"]
    assert set(modules) == {"http_health", "http_2xx", "https_2xx", "tcp_connect", "icmp"}
    assert modules["https_2xx"]["http"]["fail_if_not_ssl"] is True
    proc = subprocess.run(
        [
            require_tool("prometheus-blackbox-exporter"),
            "--config.check",
            f"--config.file={default_render.blackbox_yml}",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_health_probe_succeeds_and_fails_like_the_service(exporter: str, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/health").respond_with_json({"status": "healthy"})
    httpserver.expect_request("/broken").respond_with_json({"status": "unhealthy"}, status=503)
    assert probe(exporter, "http_health", httpserver.url_for("/health"))["probe_success"] == 1
    assert probe(exporter, "http_health", httpserver.url_for("/broken"))["probe_success"] == 0
    assert probe(exporter, "tcp_connect", f"127.0.0.1:{httpserver.port}")["probe_success"] == 1
    # https_2xx refuses plain HTTP: it is for TLS endpoints and certificate expiry.
    assert probe(exporter, "https_2xx", httpserver.url_for("/health"))["probe_success"] == 0
