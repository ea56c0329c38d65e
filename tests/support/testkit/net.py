"""Loopback ports and waiting for things to come up."""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.request
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """The first truthy result of ``predicate``; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    wait_for(lambda: port_open(port, host), timeout, f"something to listen on {host}:{port}", 0.1)


def url_answers(url: str, timeout: float = 2) -> bool:
    """True when a GET of ``url`` answers 200."""
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=timeout) as resp:
        return bool(resp.status == 200)
    return False


def wait_for_url(url: str, timeout: float = 60, interval: float = 1) -> None:
    """Until a GET of ``url`` answers 200; AssertionError after ``timeout`` seconds."""
    wait_for(lambda: url_answers(url), timeout, f"{url} to answer 200", interval)
