"""The lab's capture server: stands in for Slack, PagerDuty and SendGrid's SMTP relay.

It keeps everything it receives (JSON lines under the lab's state directory) and
shows it: a web page at ``/``, JSON at ``/api/messages`` and the listing of
``scripts/lab notifications``. Endpoints:

    POST /slack/<anything>          Slack incoming webhooks (Alertmanager, the agents)
    POST /slack-api/chat.postMessage  Slack's Web API (the agents with a bot token: one thread per
                                    incident; answers {"ok": true, "ts": ...} as Slack does)
    POST /pagerduty/v2/enqueue      PagerDuty Events API v2 (Alertmanager)
    POST /webhook/<anything>        any other JSON webhook
    SMTP                            email (Alertmanager's email_configs via "SendGrid")
    GET  /  /api/messages[?kind=slack&after=ID]  /healthz

The real services' code paths stay in use: only their URLs point here.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import html
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 1024 * 1024
SECRET_HEADERS = {"authorization", "cookie", "x-api-key"}


class Store:
    """Append-only JSON lines file plus an in-memory copy; thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.messages: list[dict[str, Any]] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    self.messages.append(json.loads(line))

    def add(self, kind: str, summary: dict[str, Any], raw: Any, meta: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            record = {
                "id": (self.messages[-1]["id"] + 1) if self.messages else 1,
                "time": time.time(),
                "kind": kind,
                **summary,
                "meta": meta,
                "raw": raw,
            }
            self.messages.append(record)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            return record

    def query(self, kind: str | None = None, after: int = 0) -> list[dict[str, Any]]:
        with self.lock:
            return [m for m in self.messages if m["id"] > after and (kind is None or m["kind"] == kind)]


def summarize_slack(body: dict[str, Any]) -> dict[str, Any]:
    texts = [str(body.get("text") or "")]
    title = ""
    color = ""
    for att in body.get("attachments") or []:
        if isinstance(att, dict):
            title = title or str(att.get("title") or att.get("fallback") or "")
            color = color or str(att.get("color") or "")
            texts.append(str(att.get("text") or ""))
            if att.get("footer"):
                texts.append(str(att["footer"]))
            fields = [f for f in att.get("fields") or [] if isinstance(f, dict)]
            texts += [f"{f.get('title')}: {f.get('value')}" for f in fields]
    for block in body.get("blocks") or []:
        if isinstance(block, dict):
            text = block.get("text")
            if isinstance(text, dict):
                texts.append(str(text.get("text") or ""))
            for f in block.get("fields") or []:
                if isinstance(f, dict):
                    texts.append(str(f.get("text") or ""))
    text = "\n".join(t for t in texts if t)
    return {
        "channel": str(body.get("channel") or ""),
        "sender": str(body.get("username") or ""),
        "title": title or text.split("\n", 1)[0][:200],
        "text": text,
        "color": color,
        "thread_ts": str(body.get("thread_ts") or ""),
    }


def summarize_pagerduty(body: dict[str, Any]) -> dict[str, Any]:
    payload = body.get("payload") if isinstance(body.get("payload"), dict) else {}
    return {
        "channel": f"pagerduty:{str(body.get('routing_key') or '')[:6]}...",
        "sender": str(body.get("client") or ""),
        "title": f"[{body.get('event_action', '?')}] {payload.get('summary', '')}",
        "text": json.dumps(payload.get("custom_details") or {}, indent=1)[:4000],
        "color": str(payload.get("severity") or ""),
        "routing_key_suffix": str(body.get("routing_key") or "")[-4:],
        "event_action": body.get("event_action"),
        "severity": payload.get("severity"),
    }


class Handler(BaseHTTPRequestHandler):
    server_version = "lab-capture/1"
    store: Store

    def log_message(self, fmt: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    def _send(self, status: int, body: Any, ctype: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/healthz":
            self._send(200, {"status": "ok", "messages": len(self.store.messages)})
        elif url.path == "/api/messages":
            try:
                after = int(query.get("after", ["0"])[0])
            except ValueError:
                self._send(400, {"error": "bad_request", "detail": "after must be an integer"})
                return
            self._send(200, self.store.query(query.get("kind", [None])[0], after))
        elif url.path == "/":
            self._send(200, render_page(self.store.query()), "text/html; charset=utf-8")
        else:
            self._send(404, {"error": "not_found", "detail": url.path})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(413, {"error": "too_large", "detail": f"body over {MAX_BODY} bytes"})
            return
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            self._send(400, {"error": "invalid_json", "detail": "the body must be JSON"})
            return
        path = urlsplit(self.path).path
        meta = {
            "path": path,
            "client": self.client_address[0],
            "headers": {
                k: ("<redacted>" if k.lower() in SECRET_HEADERS else v) for k, v in self.headers.items()
            },
        }
        if not isinstance(body, dict):
            self._send(400, {"error": "invalid_payload", "detail": "the body must be a JSON object"})
            return
        if path.startswith("/slack/"):
            self.store.add("slack", summarize_slack(body), body, meta)
            self._send(200, "ok", "text/plain")  # what Slack answers
        elif path == "/slack-api/chat.postMessage":
            record = self.store.add("slack", summarize_slack(body), body, meta)
            ts = f"{record['time']:.6f}"  # the message's id: later replies name it as thread_ts
            self._send(200, {"ok": True, "channel": str(body.get("channel") or ""), "ts": ts})
        elif path == "/pagerduty/v2/enqueue":
            self.store.add("pagerduty", summarize_pagerduty(body), body, meta)
            answer = {"status": "success", "message": "Event processed", "dedup_key": body.get("dedup_key")}
            self._send(202, answer)
        elif path.startswith("/webhook/"):
            self.store.add("webhook", {"channel": path, "sender": "", "title": path, "text": ""}, body, meta)
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": "not_found", "detail": path})


class SmtpHandler:
    """aiosmtpd handler: every accepted message becomes a record of kind 'email'."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        parts: dict[str, str] = {}
        for part in msg.walk():
            ctype = part.get_content_type()
            if ctype in ("text/plain", "text/html") and ctype not in parts:
                parts[ctype] = str(part.get_content())
        self.store.add(
            "email",
            {
                "channel": ", ".join(envelope.rcpt_tos),
                "sender": envelope.mail_from,
                "title": str(msg.get("Subject", "")),
                "text": parts.get("text/plain") or parts.get("text/html", "")[:4000],
                "color": "",
                "html": parts.get("text/html", ""),
            },
            None,
            {"peer": str(session.peer[0]) if session.peer else "", "auth": bool(session.authenticated)},
        )
        return "250 Message accepted for delivery"


def render_page(messages: list[dict[str, Any]]) -> str:
    rows = []
    for m in reversed(messages[-500:]):
        when = time.strftime("%H:%M:%S", time.localtime(m["time"]))
        rows.append(
            "<tr class='{kind}'><td>{id}</td><td>{when}</td><td>{kind}</td><td>{ch}</td>"
            "<td><b>{title}</b><pre>{text}</pre></td></tr>".format(
                id=m["id"], when=when, kind=html.escape(m["kind"]), ch=html.escape(m.get("channel", "")),
                title=html.escape(m.get("title", "")), text=html.escape(m.get("text", ""))[:3000],
            )
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='refresh' content='5'>"
        "<title>lab notifications</title><style>body{font-family:sans-serif;margin:1em}"
        "table{border-collapse:collapse;width:100%}td{border-bottom:1px solid #ddd;padding:4px;"
        "vertical-align:top}pre{white-space:pre-wrap;margin:2px 0;font-size:12px}"
        ".slack td:nth-child(3){color:#611f69}.pagerduty td:nth-child(3){color:#06ac38}"
        ".email td:nth-child(3){color:#1a73e8}</style></head><body>"
        f"<h1>Lab notifications ({len(messages)})</h1><p>What Slack, PagerDuty and email would have "
        "received. Newest first; refreshes every 5 s. JSON: <a href='/api/messages'>/api/messages</a></p>"
        "<table><tr><th>#</th><th>time</th><th>kind</th><th>channel / to</th><th>message</th></tr>"
        + "".join(rows) + "</table></body></html>"
    )


def serve(state: Path, http_binds: list[tuple[str, int]], smtp_binds: list[tuple[str, int]]) -> None:
    from aiosmtpd.controller import Controller

    store = Store(state / "messages.jsonl")
    handler = type("BoundHandler", (Handler,), {"store": store})
    servers = [ThreadingHTTPServer(addr, handler) for addr in http_binds]
    smtps = [Controller(SmtpHandler(store), hostname=h, port=p) for h, p in smtp_binds]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    for c in smtps:
        c.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"capture: http {http_binds} smtp {smtp_binds} state {state}", flush=True)
    stop.wait()
    for c in smtps:
        c.stop()
    for s in servers:
        s.shutdown()


def _bind(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r}: expected HOST:PORT")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="capture server for Slack, PagerDuty and email")
    parser.add_argument("--state", type=Path, required=True, help="directory for messages.jsonl")
    parser.add_argument("--http", type=_bind, action="append", required=True, help="HOST:PORT (repeatable)")
    parser.add_argument("--smtp", type=_bind, action="append", default=[], help="HOST:PORT (repeatable)")
    args = parser.parse_args(argv)
    serve(args.state, args.http, args.smtp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
