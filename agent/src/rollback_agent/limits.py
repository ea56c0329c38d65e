"""Bounds on what the agent stores from the outside world: strings capped in bytes, visibly."""

from __future__ import annotations

# Receiver, group key, label and annotation values, reasons: at most this many bytes are kept.
FIELD_BYTES = 1024


def cap(text: str, limit: int = FIELD_BYTES) -> str:
    """``text`` cut to ``limit`` bytes of UTF-8 (never inside a character), with a visible marker.

    ``"xxxx…[truncated 1000 bytes]"``: the marker says how many bytes were dropped.
    """
    if len(text) * 4 <= limit:  # fast path: cannot be over the limit
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    kept = data[:limit].decode("utf-8", "ignore")
    dropped = len(data) - len(kept.encode("utf-8", "surrogatepass"))
    return f"{kept}…[truncated {dropped} bytes]"
