"""A `FakeCenter` served over HTTP on 127.0.0.1, for a CLI run in a subprocess (a live view
on a pseudo-terminal) that must see answers the test chose and whose requests the test
counts. Stopped by the context manager."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from tests.inprocess import FakeCenter


@contextlib.contextmanager
def served(center: FakeCenter) -> Iterator[str]:
    """Serve `center` on a free loopback port; yields its URL (`center.requests` counts what
    came in)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = httpx.Request(
                self.command,
                f"{center.url}{self.path}",
                headers=dict(self.headers.items()),
                content=body,
            )
            response = center.handler(request)
            data = response.read()
            self.send_response(response.status_code)
            for key, value in response.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the test reads `center.requests`."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
