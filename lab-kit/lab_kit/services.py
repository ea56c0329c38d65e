"""The controller-side pieces of the lab: the release repository and the capture server."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from lab_kit.inventory import Lab
from lab_kit.paths import CAPTURE_DIR, RELEASES_BUNDLE, RELEASES_REPO, ROOT

PIDFILE = CAPTURE_DIR / "capture.pid"
# The code the running capture server was started from: a newer lab_kit restarts it (messages are
# kept in CAPTURE_DIR), so a lab that was up before an upgrade answers what the new agents send.
CODE_STAMP = CAPTURE_DIR / "capture.code"
RELEASE_NAMES = ("v1", "v2", "v2.1", "v3", "v3-slow")


def build_releases() -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "sample-app" / "build_releases.py"), str(RELEASES_REPO),
         "--bundle", str(RELEASES_BUNDLE)],
        check=True, capture_output=True, text=True,
    )
    return dict(json.loads(out.stdout))


def capture_url(lab: Lab) -> str:
    return f"http://127.0.0.1:{lab.capture_port}"


def capture_healthy(lab: Lab) -> bool:
    try:
        with urllib.request.urlopen(f"{capture_url(lab)}/healthz", timeout=2) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except OSError:
        return False


def _pid() -> int | None:
    try:
        pid = int(PIDFILE.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def ensure_capture(lab: Lab) -> bool:
    """Start the capture server unless it runs from the current code; True when it was started."""
    code = _capture_code()
    current = CODE_STAMP.read_text().strip() if CODE_STAMP.exists() else None
    if _pid() is not None and capture_healthy(lab) and current == code:
        return False
    stop_capture()
    CAPTURE_DIR.mkdir(parents=True, exist_ok=True)
    log = (CAPTURE_DIR / "capture.log").open("a")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab_kit.capture", "--state", str(CAPTURE_DIR),
         "--http", f"127.0.0.1:{lab.capture_port}", "--http", f"{lab.gateway}:{lab.capture_port}",
         "--smtp", f"{lab.gateway}:{lab.smtp_port}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    PIDFILE.write_text(str(proc.pid))
    CODE_STAMP.write_text(code + "\n")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if capture_healthy(lab):
            return True
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"the capture server did not start: see {CAPTURE_DIR / 'capture.log'}")


def _capture_code() -> str:
    """A digest of the lab_kit sources the capture server runs (capture.py and what it imports)."""
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def stop_capture() -> bool:
    pid = _pid()
    if pid is None:
        PIDFILE.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    PIDFILE.unlink(missing_ok=True)
    return True


def messages(lab: Lab, kind: str | None = None, after: int = 0) -> list[dict[str, Any]]:
    query = f"?after={after}" + (f"&kind={kind}" if kind else "")
    try:
        with urllib.request.urlopen(f"{capture_url(lab)}/api/messages{query}", timeout=5) as resp:  # noqa: S310
            return list(json.loads(resp.read()))
    except OSError:
        path = CAPTURE_DIR / "messages.jsonl"
        if not path.exists():
            return []
        out = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        return [m for m in out if m["id"] > after and (kind is None or m["kind"] == kind)]
