#!/usr/bin/python3
"""Test fixture: answers like Slack's incoming webhooks and appends each POST to a JSON-lines file."""

import json
from http.server import BaseHTTPRequestHandler, HTTPServer

LOG = "/var/lib/molecule-capture/requests.jsonl"


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        with open(LOG, "a") as fh:
            fh.write(json.dumps({"path": self.path, "body": body}) + "\n")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok")


HTTPServer(("127.0.0.1", 9099), Handler).serve_forever()
