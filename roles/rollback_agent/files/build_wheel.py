#!/usr/bin/env python3
"""Build the rollback agent's wheel on the controller, reproducibly.

    build_wheel.py SOURCE_DIR OUTPUT_DIR

Copies SOURCE_DIR (agent/) to a temporary directory without build leftovers,
builds a wheel there with pip (no build isolation: the controller's setuptools
and wheel, no network) and SOURCE_DATE_EPOCH fixed, so the same source always
gives the same bytes. The wheel is moved into OUTPUT_DIR atomically; prints
{"wheel": PATH, "sha256": HEX} on stdout. Exits non-zero with pip's output when
the build fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

IGNORED = shutil.ignore_patterns(
    "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache", ".ruff_cache",
    "bench",
)
EPOCH = "315532800"  # 1980-01-01, the earliest time a zip file can hold


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    source, output = Path(argv[0]).resolve(), Path(argv[1])
    if not (source / "pyproject.toml").is_file():
        print(f"{source} has no pyproject.toml: not the agent's source tree", file=sys.stderr)
        return 2
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rollback-agent-build-") as tmp:
        tree = Path(tmp) / "src"
        shutil.copytree(source, tree, ignore=IGNORED)
        wheels = Path(tmp) / "wheels"
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
             "--disable-pip-version-check", "--wheel-dir", str(wheels), str(tree)],
            capture_output=True, text=True, env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH}, check=False,
        )
        built = sorted(wheels.glob("*.whl"))
        if proc.returncode != 0 or len(built) != 1:
            print(f"building the agent's wheel failed:\n{proc.stdout}\n{proc.stderr}", file=sys.stderr)
            return 1
        target = output / built[0].name
        staged = output / f".{built[0].name}.{os.getpid()}"
        shutil.copyfile(built[0], staged)
        os.replace(staged, target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    print(json.dumps({"wheel": str(target), "sha256": digest}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
