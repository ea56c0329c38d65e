"""Serve a directory on 127.0.0.1 at a free port; write the port to a file; log each request.

Usage: serve.py DIRECTORY PORT_FILE LOG_FILE (started detached by prepare.yml, stopped by
cleanup.yml).
"""

from __future__ import annotations

import functools
import http.server
import sys
from pathlib import Path


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        with Path(sys.argv[3]).open("a", encoding="utf-8") as log:
            log.write("%s\n" % (format % args))


def main() -> None:
    handler = functools.partial(Handler, directory=sys.argv[1])
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        Path(sys.argv[2]).write_text(str(server.server_address[1]), encoding="utf-8")
        server.serve_forever()


if __name__ == "__main__":
    main()
