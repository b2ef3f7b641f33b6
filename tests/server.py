"""A real HTTP/1.1 server on 127.0.0.1 for tests, with routes registered per test.

Use the ``http_server`` fixture (tests/conftest.py), or ``with LocalServer() as s:``
when a test needs a second origin (``from tests.server import LocalServer, Response``)::

    def test_something(http_server):
        http_server.route("/", "<img src='/a.jpg'>")                 # str body -> text/html
        http_server.route("/a.jpg", jpeg_bytes)                       # type guessed: image/jpeg
        http_server.route("/old", status=404)
        http_server.route("/slow", b"x", delay=0.5)                   # sleep before answering
        http_server.route("/big", b"x" * 10_000, chunked=True)        # no Content-Length
        http_server.route("/drip.jpg", data, trickle=1.0)             # one body byte a second
        http_server.route("/gone", hang_up=True)                      # closes without answering
        http_server.route("/c.jpg", data, last_modified=dt, etag='"v1"')  # answers 304 itself
        http_server.sequence("/flaky", [500, 500, Response(body=b"ok")])  # last one repeats
        http_server.redirect("/from", "/to", status=301)
        http_server.handle("/echo", lambda req: Response(body=req.headers["User-Agent"]))
        http_server.static("tests/fixtures/shop", prefix="/shop/")   # files, with 304s
        url = http_server.url("/")                                    # http://127.0.0.1:PORT/
        ...
        assert http_server.count("/robots.txt") == 1
        method, path, headers = http_server.requests[0]
        assert http_server.max_in_flight <= 4

Paths are matched exactly, first including the query string ("/list?page=2"), then
without it. Anything unregistered, /robots.txt included, is a 404.
"""

from __future__ import annotations

import mimetypes
import posixpath
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import Message
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

__all__ = ["LocalServer", "Request", "Response"]


class Request(NamedTuple):
    """One request as the server saw it; ``headers`` lookups are case-insensitive."""

    method: str
    path: str  # raw request target, query string included
    headers: Message


@dataclass
class Response:
    """What a route answers. ``body`` may be str (UTF-8 encoded on the way out)."""

    status: int = 200
    body: bytes | str = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None  # default: guessed from the path, else text/html
    delay: float = 0.0  # seconds to sleep before sending anything (slow server)
    chunked: bool = False  # Transfer-Encoding: chunked, no Content-Length
    etag: str | None = None  # sent, and If-None-Match honoured (-> 304)
    last_modified: datetime | None = None  # sent, and If-Modified-Since honoured (-> 304)
    trickle: float = 0.0  # seconds between body bytes: a server that never quite finishes
    hang_up: bool = False  # read the request, then close the connection without a word


Handler = Callable[[Request], Response]


class LocalServer:
    """Threaded HTTP server on 127.0.0.1 and a free port, serving registered routes."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.requests: list[Request] = []
        self.in_flight = 0  # requests being handled right now
        self.max_in_flight = 0  # high-water mark of in_flight since start/reset()
        self._routes: dict[str, Handler] = {}
        self._static: list[tuple[str, Path]] = []
        self._lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> LocalServer:
        self._httpd = _HTTPServer((self.host, 0), _RequestHandler)
        self._httpd.app = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() waits up to one poll interval
            name=f"LocalServer:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    def url(self, path: str = "/") -> str:
        """Absolute URL of ``path`` on this server."""
        return f"http://{self.host}:{self.port}/{path.lstrip('/')}"

    # ------------------------------------------------------------------- routes

    def route(
        self,
        path: str,
        body: bytes | str = b"",
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        content_type: str | None = None,
        delay: float = 0.0,
        chunked: bool = False,
        etag: str | None = None,
        last_modified: datetime | None = None,
        trickle: float = 0.0,
        hang_up: bool = False,
    ) -> None:
        """Answer every request for ``path`` with the same response."""
        response = Response(
            status, body, dict(headers or {}), content_type, delay, chunked, etag, last_modified, trickle, hang_up
        )
        self._routes[path] = lambda request: response

    def sequence(self, path: str, responses: Iterable[Response | int]) -> None:
        """Answer the n-th request with the n-th response; the last one then repeats.

        An int is shorthand for ``Response(status=n)``.
        """
        queue = [Response(status=r) if isinstance(r, int) else r for r in responses]
        assert queue, "sequence needs at least one response"
        calls = iter(range(sys.maxsize))
        lock = threading.Lock()

        def respond(request: Request) -> Response:
            with lock:
                n = next(calls)
            return queue[min(n, len(queue) - 1)]

        self._routes[path] = respond

    def redirect(self, path: str, to: str, status: int = 302) -> None:
        """Redirect ``path`` to ``to`` (a path on this server or an absolute URL)."""
        self.route(path, status=status, headers={"Location": to})

    def handle(self, path: str, handler: Handler) -> None:
        """Answer ``path`` with ``handler(request)``, for anything the helpers can't say."""
        self._routes[path] = handler

    def static(self, directory: str | Path, prefix: str = "/") -> None:
        """Serve files under ``directory`` at ``prefix``, with Last-Modified/ETag and 304s.

        A directory URL serves its index.html. Registered routes take precedence.
        """
        prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
        self._static.append((prefix, Path(directory)))
        self._static.sort(key=lambda item: len(item[0]), reverse=True)  # longest first

    # ------------------------------------------------------------ request log

    def paths(self) -> list[str]:
        """Requested paths (with query), in arrival order."""
        return [r.path for r in self.requests]

    def count(self, path: str) -> int:
        """How many requests asked for ``path`` (compared with and without the query)."""
        return sum(1 for r in self.requests if path in (r.path, r.path.split("?", 1)[0]))

    def reset(self) -> None:
        """Forget the request log and the in-flight high-water mark; routes stay."""
        with self._lock:
            self.requests.clear()
            self.max_in_flight = self.in_flight

    # ---------------------------------------------------------------- internals

    def _dispatch(self, request: Request) -> Response:
        split = urlsplit(request.path)
        for key in (request.path, split.path):
            if key in self._routes:
                return self._routes[key](request)
        for prefix, directory in self._static:
            if split.path.startswith(prefix):
                return _static_file(directory, unquote(split.path[len(prefix) :]))
        return Response(404, b"not found", content_type="text/plain")

    def _enter(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # keep-alive threads must not hold up stop()
    app: LocalServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out and hang up are part of the tests, not errors.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked, like real servers
    server: _HTTPServer

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class names it
        pass  # keep pytest output clean; use server.requests instead

    def _serve(self, send_body: bool) -> None:
        app = self.server.app
        request = Request(self.command, self.path, self.headers)
        app._enter(request)
        left = False
        try:
            try:
                response = app._dispatch(request)
            except Exception:  # a bug in a test's handler: make it visible
                traceback.print_exc()
                response = Response(500, traceback.format_exc(), content_type="text/plain")
            if response.delay:
                time.sleep(response.delay)
            if response.hang_up:
                self.close_connection = True
                return
            # Leave before writing: once the client has the answer it may send the next
            # request, and max_in_flight must not count this one twice.
            app._leave()
            left = True
            self._write(request, response, send_body)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        finally:
            if not left:
                app._leave()

    def _write(self, request: Request, response: Response, send_body: bool) -> None:
        body = response.body.encode() if isinstance(response.body, str) else response.body
        status = response.status
        if status == 200 and _not_modified(request, response):
            status, body = 304, b""
        headers = {k.lower(): (k, v) for k, v in response.headers.items()}
        self.send_response(status)
        if "content-type" not in headers and status not in (204, 304):
            self.send_header("Content-Type", _content_type(request.path, response))
        if response.etag:
            self.send_header("ETag", response.etag)
        if response.last_modified:
            self.send_header("Last-Modified", format_datetime(_utc(response.last_modified), usegmt=True))
        for name, value in headers.values():
            self.send_header(name, value)
        if status in (204, 304) or 100 <= status < 200:
            self.end_headers()
            return
        if response.trickle and send_body:
            # Honest headers, then the body a byte at a time until done or the client hangs up.
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.close_connection = True
            self.end_headers()
            self.wfile.flush()
            for i in range(len(body)):
                time.sleep(response.trickle)
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
            return
        if "content-length" in headers:
            # A test-chosen (possibly lying) length: the connection can't be reused.
            self.send_header("Connection", "close")
            self.close_connection = True
            self.end_headers()
            if send_body:
                self.wfile.write(body)
        elif response.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if send_body:
                for start in range(0, len(body), 16 * 1024):
                    chunk = body[start : start + 16 * 1024]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)
        self.wfile.flush()


def _content_type(path: str, response: Response) -> str:
    if response.content_type:
        return response.content_type
    guessed, _ = mimetypes.guess_type(urlsplit(path).path)
    if guessed:
        return guessed + ("; charset=utf-8" if guessed.startswith("text/") else "")
    return "text/html; charset=utf-8"


def _not_modified(request: Request, response: Response) -> bool:
    """Conditional GET, as a real server would answer it (If-None-Match wins)."""
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and response.etag:
        return response.etag in [tag.strip() for tag in if_none_match.split(",")] or if_none_match.strip() == "*"
    if_modified_since = request.headers.get("If-Modified-Since")
    if if_modified_since and response.last_modified:
        try:
            since = _utc(parsedate_to_datetime(if_modified_since))
        except (TypeError, ValueError):
            return False
        return _utc(response.last_modified).replace(microsecond=0) <= since
    return False


def _static_file(directory: Path, relative: str) -> Response:
    """A file under ``directory`` as a Response with validators, or a 404."""
    parts = [p for p in posixpath.normpath("/" + relative).split("/") if p]
    path = directory.joinpath(*parts)
    if path.is_dir():
        path = path / "index.html"
    if not path.is_file():
        return Response(404, b"not found", content_type="text/plain")
    stat = path.stat()
    guessed, _ = mimetypes.guess_type(path.name)
    return Response(
        body=path.read_bytes(),
        content_type=guessed or "application/octet-stream",
        etag=f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"',
        last_modified=datetime.fromtimestamp(int(stat.st_mtime), timezone.utc),
    )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
