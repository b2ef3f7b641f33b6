"""The app: one ``Library`` (the store, read-only, and its model, loaded once), the routes,
the safety headers, and ``run`` (uvicorn)."""

from __future__ import annotations

import contextlib
import ipaddress
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import imgdb
from imgdb.collection import Collection

if TYPE_CHECKING:
    from imgdb.serve.clustermap import ClusterMap

DEFAULT_PORT = 8765
HERE = Path(__file__).parent

#: How often the app looks for a writer (an ingest, a decision) to get out of its way.
WATCH_INTERVAL = 0.05

# No inline script or style anywhere: text from the web can never become code.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
        b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),  # not "no-referrer": Chromium then sends "Origin: null" on POSTs
    (b"x-frame-options", b"DENY"),
]


@dataclass
class DupesJob:
    """A dupes run started from the review page (one at a time)."""

    running: bool = False
    message: str = ""  # the last run's outcome or error, one line


class Library:
    """The store as the app sees it: one read-only ``Collection`` kept open (the model and
    the vectors tables are loaded once) that steps aside while any writer runs."""

    def __init__(self, path: str | Path | None, model: str | Path | None = None):
        self.reader = imgdb.open(path, "r", model=model)
        self.path = self.reader.path
        self.model_ref = model
        self.decisions = threading.Lock()  # this process writes one thing at a time
        self.job = DupesJob()
        self.maps: dict[int, ClusterMap] = {}  # by run id: a saved run never changes
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._facets: tuple[Any, tuple[list[Any], list[Any], list[Any]]] | None = None
        self._facets_lock = threading.Lock()
        self._requests = 0  # in flight: the store is never let go of in the middle of one
        self._requests_lock = threading.Lock()

    def warm(self) -> None:
        """Load the model and open the vectors dataset searches read, not on the first request."""
        _ = self.reader.model
        key = self.reader.spec.key
        if self.reader.store.query("SELECT 1 FROM models WHERE key = ?", [key]):
            self.reader.store.count_vectors(key)

    def facets(self) -> tuple[list[Any], list[Any], list[Any]]:
        """The filter form's choices (sites, formats, clusters, with counts), counted again
        only when images were added or a clustering run saved."""
        images = self.reader
        _, version = images.sql(
            "SELECT (SELECT count(*) FROM images), (SELECT max(id) FROM runs), (SELECT max(id) FROM cluster_runs)"
        )
        with self._facets_lock:
            if self._facets is not None and self._facets[0] == version[0]:
                return self._facets[1]
        _, sites = images.sql(
            "SELECT coalesce(site, '(files)'), count(DISTINCT image_id) FROM sources GROUP BY 1 ORDER BY 2 DESC, 1 "
            "LIMIT 200"
        )
        _, formats = images.sql("SELECT format, count(*) FROM images GROUP BY 1 ORDER BY 2 DESC, 1")
        _, clusters = images.sql("SELECT cluster, count(*) FROM clusters GROUP BY 1 ORDER BY 1")
        with self._facets_lock:
            self._facets = (version[0], (sites, formats, clusters))
        return sites, formats, clusters

    def start(self) -> None:
        self._watcher = threading.Thread(target=self._watch, name="imgdb-serve-watch", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        self.reader.close()

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Around every request: when the last one in flight ends while a writer runs, let go
        of the store at once (a request's queries share one opening of the file)."""
        with self._requests_lock:
            self._requests += 1
        try:
            yield
        finally:
            with self._requests_lock:
                self._requests -= 1
                idle = self._requests == 0
            if idle:
                self._step_aside()

    def _step_aside(self) -> None:
        with contextlib.suppress(Exception):
            if self._requests == 0 and self.reader.store.writer_active():
                self.reader.store.pause()

    def _watch(self) -> None:
        # A writer (`imgdb ingest` elsewhere, or a decision here) waits for readers to let
        # go of the DuckDB file: an idle app does within WATCH_INTERVAL.
        while not self._stop.wait(WATCH_INTERVAL):
            self._step_aside()

    @contextlib.contextmanager
    def writer(self) -> Iterator[Collection]:
        """A writer ``Collection`` for one decision, under the store's writer rules."""
        with self.decisions:
            self.reader.store.pause()
            with imgdb.open(self.path, "w", model=self.model_ref) as images:
                yield images

    def run_dupes(self, keep: str) -> None:
        """``imgdb dupes --keep KEEP`` in a thread: a new run that respects every reject."""
        from imgdb.errors import ImgdbError

        if self.job.running:
            return
        self.job = DupesJob(running=True, message=f"finding duplicates (keeping the {keep})...")

        def work() -> None:
            try:
                with self.writer() as images:
                    result = images.find_dupes(keep=keep)
                self.job.message = f"run {result.run_id}: {len(result.groups)} groups"
            except ImgdbError as exc:
                self.job.message = f"the dupes run failed: {exc}"
            finally:
                self.job.running = False

        threading.Thread(target=work, name="imgdb-serve-dupes", daemon=True).start()


class TrackRequests:
    """Tells the ``Library`` which requests are in flight (see ``Library.request``)."""

    def __init__(self, app: ASGIApp, library: Library):
        self.app = app
        self.library = library

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/static/"):
            await self.app(scope, receive, send)
            return
        with self.library.request():
            await self.app(scope, receive, send)


class SafetyHeaders:
    """Adds ``SECURITY_HEADERS`` to every response, and refuses a POST that another site
    made a browser send (its Origin or Sec-Fetch-Site says so)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD") and _cross_site(scope):
            await PlainTextResponse("cross-site request refused", status_code=403)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _cross_site(scope: Scope) -> bool:
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return True
    origin = headers.get("origin")
    if origin is None or origin == "null":
        return origin == "null"
    return origin.split("://", 1)[-1] != headers.get("host", "")


def create_app(library: Library, *, host: str = "127.0.0.1") -> Starlette:
    """The ASGI app over ``library``. On a loopback ``host`` only loopback Host headers are
    answered (a web page cannot reach the app by DNS rebinding)."""
    from imgdb.serve import routes

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        library.start()
        try:
            yield
        finally:
            library.close()

    middleware = [Middleware(SafetyHeaders), Middleware(TrackRequests, library=library)]
    if is_loopback(host):
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]"]))
    app = Starlette(
        routes=[
            *routes.ROUTES,
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=middleware,
        exception_handlers=routes.EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.library = library
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run(
    path: str | Path | None,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    model: str | Path | None = None,
    ready: Any = None,
) -> None:
    """Serve the store at ``path`` until interrupted; ``ready(url, store_path)`` is called once it listens."""
    import uvicorn

    library = Library(path, model)
    library.warm()
    app = create_app(library, host=host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    if ready is not None:
        original_startup = server.startup

        async def startup(sockets: Any = None) -> None:
            await original_startup(sockets)
            shown = f"[{host}]" if ":" in host else host
            ready(f"http://{shown}:{port}/", library.path)

        server.startup = startup  # type: ignore[method-assign]
    server.run()
