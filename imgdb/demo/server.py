"""Serving a built demo site on 127.0.0.1: :func:`serve`.

Files are sent as they are on disk, except HTML pages, in which :data:`HOST_TOKEN` is
replaced with the server's ``127.0.0.1:PORT``. There are no directory listings and no
request logging.
"""

from __future__ import annotations

import functools
import io
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

from imgdb.demo.site import HOST_TOKEN

_LOOPBACK = "127.0.0.1"


class _Handler(SimpleHTTPRequestHandler):
    """Static files from the site root; HTML gets HOST_TOKEN filled in; no logging."""

    # Explicit types: older Pythons' mimetypes do not know .webp.
    extensions_map: dict[str, str] = {  # noqa: RUF012 - the base class declares it per instance
        **SimpleHTTPRequestHandler.extensions_map,
        ".html": "text/html; charset=utf-8",
        ".jpg": "image/jpeg",
        ".jpeg": "image/jpeg",
        ".png": "image/png",
        ".webp": "image/webp",
        ".gif": "image/gif",
        ".css": "text/css",
        ".txt": "text/plain; charset=utf-8",
        "": "application/octet-stream",
    }

    def send_head(self) -> io.BytesIO | BinaryIO | None:
        path = self.translate_path(self.path)
        if os.path.isdir(path) and self.path.split("?", 1)[0].endswith("/"):
            path = os.path.join(path, "index.html")
        if not path.endswith(".html") or not os.path.isfile(path):
            return super().send_head()  # images, CSS, redirects for "dir" without "/", 404s
        assert isinstance(self.server, _QuietServer)
        with open(path, "rb") as f:
            data = f.read().replace(HOST_TOKEN.encode(), self.server.authority.encode())
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        return io.BytesIO(data)

    def list_directory(self, path: str | os.PathLike[str]) -> io.BytesIO | None:
        # A real shop has no auto-index; listings would hand the crawler every file.
        self.send_error(404, "Not Found")
        return None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature from base class
        pass  # the demo prints its own summary; request lines would drown it


class _QuietServer(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 at a free port, with daemon threads."""

    daemon_threads = True

    def __init__(self, handler: Callable[..., _Handler]) -> None:
        super().__init__((_LOOPBACK, 0), handler)
        #: "host:port" the server listens on; what HTML pages get instead of HOST_TOKEN.
        self.authority = f"{_LOOPBACK}:{self.server_port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-response are normal for a crawler; don't print tracebacks


@contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve `root` on 127.0.0.1 (a free port) in a daemon thread; yield the base URL.

    The base URL is ``http://127.0.0.1:PORT/``; the server stops when the block exits.
    """
    handler: Callable[..., _Handler] = functools.partial(_Handler, directory=str(root))
    server = _QuietServer(handler)
    thread = threading.Thread(target=server.serve_forever, name="imgdb-demo-site", daemon=True)
    thread.start()
    try:
        yield f"http://{server.authority}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
