"""Every error imgdb raises on purpose.

The CLI turns any ``ImgdbError`` into one line on stderr and a non-zero exit (followed
by the error's ``hints``, when a library gave some: DuckDB's "Candidate bindings" lines, a
caret under the bad token); anything else is a bug. Per-image problems during an ingest are *recorded* as failures with the
error's ``reason`` (a short, stable, SQL-friendly word) and never stop the run.

    ImgdbError
    ├── UsageError            bad argument: unknown id, bad URL, missing file
    │   └── NoStore               no store where --db / $IMGDB_DB points
    ├── FetchError            one URL could not be fetched (reason: see subclasses)
    │   ├── RobotsDisallowed      robots.txt forbids it            reason "robots"
    │   ├── NoAIRefused           X-Robots-Tag noai/noimageai/...  reason "x-robots-tag"
    │   ├── HTTPStatusError       4xx/5xx after retries            reason "http-<status>"
    │   ├── TooLarge              body over the byte cap           reason "too-large"
    │   ├── TooManyRedirects      redirect loop or chain too long  reason "redirects"
    │   ├── FetchTimeout          connect/read timeout             reason "timeout"
    │   └── ConnectFailed         DNS, refused, reset              reason "connect"
    ├── DecodeError           bytes are not a usable image     reason e.g. "not-image",
    │                         "truncated", "bomb", "svg", "empty", "too-large"
    ├── ModelError            ONNX model or its JSON spec is missing or inconsistent
    └── StoreError            the store cannot be opened or written
        ├── StoreBusy             another imgdb process holds the store
        └── ReadOnlyStore         a write through a store opened read-only
"""

from __future__ import annotations


class ImgdbError(Exception):
    """Base class: a problem we can explain to the user in one line."""

    reason = "error"
    hints: tuple[str, ...] = ()  # lines shown after the message, as they are

    def with_hints(self, lines: list[str]) -> ImgdbError:
        self.hints = tuple(lines)
        return self


class UsageError(ImgdbError):
    reason = "usage"


class NoStore(UsageError):
    pass


class FetchError(ImgdbError):
    reason = "fetch"

    def __init__(self, url: str, message: str | None = None):
        self.url = url
        super().__init__(message or f"{self.reason}: {url}")


class RobotsDisallowed(FetchError):
    reason = "robots"


class NoAIRefused(FetchError):
    reason = "x-robots-tag"


class HTTPStatusError(FetchError):
    def __init__(self, url: str, status: int, message: str | None = None):
        self.status = status
        super().__init__(url, message or f"HTTP {status}: {url}")

    @property
    def reason(self) -> str:  # type: ignore[override]
        return f"http-{self.status}"


class TooLarge(FetchError):
    reason = "too-large"


class TooManyRedirects(FetchError):
    reason = "redirects"


class FetchTimeout(FetchError):
    reason = "timeout"


class ConnectFailed(FetchError):
    reason = "connect"


class DecodeError(ImgdbError):
    """Bytes that are not a usable image; ``reason`` says why."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


class ModelError(ImgdbError):
    reason = "model"


class StoreError(ImgdbError):
    reason = "store"


class StoreBusy(StoreError):
    reason = "busy"


class ReadOnlyStore(StoreError):
    reason = "read-only"
