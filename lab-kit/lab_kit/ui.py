"""Terminal output of scripts/lab: short, colored when on a terminal."""

from __future__ import annotations

import sys
import time

TTY = sys.stdout.isatty()


def _c(code: str, text: str) -> str:
    return f"\033[{code}m{text}\033[0m" if TTY else text


def step(msg: str) -> None:
    print(_c("1;34", "==> ") + _c("1", msg), flush=True)


def info(msg: str) -> None:
    print("    " + msg, flush=True)


def ok(msg: str) -> None:
    print(_c("32", "    ok: ") + msg, flush=True)


def warn(msg: str) -> None:
    print(_c("33", "    warning: ") + msg, flush=True)


def event(msg: str, t0: float | None = None, color: str = "0") -> None:
    stamp = time.strftime("%H:%M:%S")
    rel = f" +{time.monotonic() - t0:6.1f}s" if t0 is not None else ""
    print(f"{_c('2', stamp + rel)}  {_c(color, msg)}", flush=True)


def die(msg: str) -> None:
    print(_c("1;31", "lab: ERROR: ") + msg, file=sys.stderr, flush=True)
    raise SystemExit(1)
