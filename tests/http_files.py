"""A file server for the remote-input tests: Python's own HTTP server on 127.0.0.1 with a
handler that answers range requests (206 with Content-Range, as object stores do), or ignores
them when told, and refuses anything under /private/ (403); it counts the bytes it sends.
Run in a child process by conftest.FileServer."""

from __future__ import annotations

import http.server
import re
from pathlib import Path


def serve(root: str, port, sent, ranges, ready) -> None:
    folder = Path(root)

    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = 10  # s: a client that stops reading cannot hold a handler thread forever

        def log_message(self, *args) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self.answer(body=False)

        def do_GET(self) -> None:
            self.answer(body=True)

        def answer(self, body: bool) -> None:
            path = folder / self.path.split("?")[0].lstrip("/")
            if self.path.startswith("/private/"):  # as a bucket without the right credentials
                self.send_response(403)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if not path.is_file():
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            size = path.stat().st_size
            found = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
            with path.open("rb") as f:
                if found and ranges.value:
                    start = int(found.group(1))
                    end = min(int(found.group(2) or size - 1), size - 1)
                    f.seek(start)
                    data = f.read(end + 1 - start)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                else:
                    data = f.read()
                    self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            if ranges.value:
                self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if body:
                try:
                    self.wfile.write(data)
                    with sent.get_lock():
                        sent.value += len(data)
                except OSError:  # the client hung up: GDAL had what it needed
                    pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    port.value = httpd.server_address[1]
    ready.set()
    httpd.serve_forever()
