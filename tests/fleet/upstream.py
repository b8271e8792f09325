#!/usr/bin/env python3
"""The API behind `hwsign-verifier serve` in the fleet_* tests: Python's standard library only.

Binds 127.0.0.1 on the given port (0: any free one) and prints `listening PORT` once it accepts.

- any path: answers 200 with JSON {method, target, headers: [[name, value], ...], body_len,
  body_sha256}: every header field exactly as it arrived, so a test sees what the proxy forwarded.
- /sse?gate=NAME: a Server-Sent Events stream, chunked: event `one`, then waits (at most 60 s)
  until /release?gate=NAME is requested, then event `two` and the end. A client that reads `one`
  before releasing the gate proves the proxy streamed it without waiting for the rest.
- /release?gate=NAME: opens the gate (called directly by the test, not through the proxy).
"""

import hashlib
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

GATES = {}
GATES_LOCK = threading.Lock()


def gate(name):
    with GATES_LOCK:
        return GATES.setdefault(name, threading.Event())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_any(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if url.path == "/sse":
            return self.sse(query.get("gate", ["default"])[0])
        if url.path == "/release":
            gate(query.get("gate", ["default"])[0]).set()
            return self.send_json({"released": True})
        self.send_json(
            {
                "method": self.command,
                "target": self.path,
                "headers": [[name, value] for name, value in self.headers.items()],
                "body_len": len(body),
                "body_sha256": hashlib.sha256(body).hexdigest(),
            }
        )

    def send_json(self, value):
        data = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def sse(self, name):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.chunk(b"event: one\ndata: first\n\n")
        released = gate(name).wait(60)
        self.chunk(b"event: two\ndata: %s\n\n" % (b"second" if released else b"timeout"))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = handle_any


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("listening %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
