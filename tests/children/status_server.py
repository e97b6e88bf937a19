"""A child that answers every GET with one HTTP status (argv: PORT STATUS [START_DELAY_S]).

It stands in for a Dynamo process's /live and /health: 503 is how a busy-but-alive worker
answers; SIGSTOP makes it silent like a hung one; START_DELAY_S is a slow start-up."""

from __future__ import annotations

import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(int(sys.argv[2]))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


if len(sys.argv) > 3:
    time.sleep(float(sys.argv[3]))
server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print("listening", flush=True)
server.serve_forever()
