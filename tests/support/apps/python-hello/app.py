"""A tiny web app: its answer needs a third-party package (installed at build time)."""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import humanize


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            body = b"ok"
        else:
            greeting = os.environ.get("GREETING", "hello")
            body = f"{greeting}: {humanize.intcomma(1234567)} users\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        print("request:", format % args, flush=True)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    print(f"listening on 0.0.0.0:{port}", flush=True)
    # All interfaces on purpose: inside its container, the app is reached on its bridge IP.
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()  # noqa: S104
