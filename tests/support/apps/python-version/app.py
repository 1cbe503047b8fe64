"""A tiny web app that answers with its version (the VERSION file): which deployment serves.

Standard library only, so that its image builds in a second and every variant of it shares
the same layers.
"""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = Path(__file__).with_name("VERSION").read_text()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok" if self.path == "/health" else VERSION.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # a request every 20 ms in the tests: no log line for each


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    print(f"version {VERSION.strip()} listening on 0.0.0.0:{port}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()  # noqa: S104
