"""Polite async HTTP: robots.txt, X-Robots-Tag, retries, byte caps, concurrency limits.

``Fetcher.get`` either returns a ``Fetched`` (2xx or 304) or raises one of the
``imgdb.errors.FetchError`` subclasses; no raw httpx exception escapes, so callers can
record ``err.reason`` per URL and carry on.

Redirects are followed by hand (not by httpx) so that every hop goes through the same
robots check, per-host limit, retry loop and byte cap as the first request.

Nothing a server does can hold a request for long:

* every request has one total deadline (``FetchPolicy.timeout``: connect, headers and the
  whole body), so a server that trickles a byte a second ends at the deadline; an answer
  that started but did not finish in time is not asked for again;
* retry waits (backoff and Retry-After) per URL add up to at most ``max_retry_total``: a
  wait that would pass it is not made, the last answer or error stands;
* a name that does not resolve is not retried, and its host is skipped for the rest of the
  run (reason ``host-down``), as is a host after ``host_down_after`` connect failures in a
  row;
* robots.txt is read once per origin and run, failures included: when it cannot be
  fetched, every URL of that origin fails the same way without asking again.

robots.txt is parsed by Protego (the parser Scrapy uses): ``*`` and ``$`` wildcards, the
longest match wins, ``Crawl-delay`` spaces requests to the origin. A robots.txt that
answers 5xx or 429 is "unavailable" (RFC 9309: nothing may be fetched), reported as such
with reason ``robots-unavailable``, not as a disallow.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal

import httpx
from protego import Protego

from imgdb.config import USER_AGENT
from imgdb.errors import (
    ConnectFailed,
    FetchError,
    FetchTimeout,
    HTTPStatusError,
    NoAIRefused,
    RobotsDisallowed,
    TooLarge,
    TooManyRedirects,
)

__all__ = ["ROBOTS_TOKEN", "FetchPolicy", "Fetched", "Fetcher", "page_refuses_ai"]

#: The product token we look for in robots.txt groups and X-Robots-Tag prefixes.
ROBOTS_TOKEN = "imgdb"

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_RETRY_AFTER_STATUSES = frozenset({429, 503})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# RFC 9309 asks parsers to handle at least 500 KiB; anything past that is ignored.
_ROBOTS_MAX_BYTES = 512 * 1024
# X-Robots-Tag directives that mean "do not use this image" for us. "none" is
# shorthand for "noindex, nofollow".
_REFUSING_DIRECTIVES = frozenset({"noai", "noimageai", "noindex", "none"})
# On a page, the directives that keep us from using the images it shows.
_NOAI_DIRECTIVES = frozenset({"noai", "noimageai"})
# Directives that carry a value after a colon, so "max-snippet: 20" is not a user agent.
_VALUED_DIRECTIVES = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})

_Kind = Literal["page", "image", "robots"]


@dataclass
class FetchPolicy:
    """How hard and how politely to fetch."""

    user_agent: str = USER_AGENT
    timeout: float = 20.0  # total seconds per request: connect, headers and the whole body
    max_connections: int = 16  # in total
    per_host: int = 4  # concurrent requests per host
    retries: int = 3  # extra attempts on connect errors, timeouts, 429 and 5xx
    backoff: float = 0.5  # seconds; doubles per attempt, with jitter
    max_retry_after: float = 60.0  # cap on an honoured Retry-After (and Crawl-delay)
    max_retry_total: float = 30.0  # cap on all retry waits of one URL together
    host_down_after: int = 5  # connect failures in a row before a host is skipped for the run
    max_bytes: int = 50 * 2**20  # body cap for kind="image"
    max_page_bytes: int = 10 * 2**20  # body cap for kind="page"
    max_redirects: int = 5
    respect_robots: bool = True  # robots.txt and X-Robots-Tag; False = an explicit user flag


@dataclass
class Fetched:
    """A successful (2xx) or not-modified (304) response."""

    url: str  # as requested
    final_url: str  # after redirects
    status: int  # 200..299 or 304
    headers: httpx.Headers
    content: bytes  # b"" for 304
    content_type: str | None  # media type only, lower-case, no params
    fetched_at: datetime  # UTC, tz-aware


@dataclass
class _Robots:
    """The cached robots.txt verdict for one origin (for the Fetcher's lifetime: one run)."""

    parser: Protego | None = None  # None: no rules, everything allowed
    unavailable: str | None = None  # why robots.txt could not be read (5xx, 429, garbled): fetch nothing
    error: FetchError | None = None  # could not connect or timed out: every URL of the origin fails so
    crawl_delay: float | None = None


@dataclass
class _Attempt:
    """What one request got to before it ended (for telling a dead host from a slow one)."""

    answered: bool = False  # response headers arrived


class _TooSlow(FetchTimeout):
    """The answer started but did not finish within the deadline: not retried."""


class Fetcher:
    """An ``httpx.AsyncClient`` wrapped with imgdb's politeness rules.

    Use as ``async with Fetcher(policy) as f: await f.get(url)``. ``transport`` is for
    tests (e.g. ``httpx.MockTransport``).
    """

    def __init__(
        self,
        policy: FetchPolicy | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.policy = policy or FetchPolicy()
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._total: asyncio.Semaphore | None = None
        self._per_host: dict[str, asyncio.Semaphore] = {}
        self._robots: dict[str, _Robots] = {}
        self._robots_locks: dict[str, asyncio.Lock] = {}
        self._next_slot: dict[str, float] = {}  # origin -> loop time of next Crawl-delay slot
        self._streak: dict[str, int] = {}  # host key -> connect failures in a row
        self._down: dict[str, str] = {}  # host key, or host name for DNS, -> why it is skipped

    async def __aenter__(self) -> Fetcher:
        self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (also done by ``async with``)."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # ------------------------------------------------------------------- public

    async def get(
        self,
        url: str,
        *,
        kind: Literal["page", "image"] = "page",
        headers: dict[str, str] | None = None,
    ) -> Fetched:
        """Fetch ``url`` politely; raise a ``FetchError`` subclass on any failure.

        ``headers`` may carry conditional headers (If-None-Match, If-Modified-Since); a
        304 comes back as a ``Fetched`` with status 304 and empty content. An invalid
        URL or a non-http(s) scheme raises a plain ``FetchError`` (reason "fetch") so a
        bad link found on a page is recorded like any other failed URL.
        """
        return await self._get(url, kind, headers, check_robots=self.policy.respect_robots)

    async def allowed(self, url: str) -> bool:
        """True if robots.txt lets us fetch ``url`` (always True with respect_robots off).

        robots.txt is fetched once per origin and cached, failures too. If it cannot be
        fetched at all (connection refused, timeout) this raises ``ConnectFailed`` /
        ``FetchTimeout`` for ``url`` rather than guessing; if it answered 5xx or 429 (it is
        "unavailable") this is False.
        """
        _check_url(url)
        if not self.policy.respect_robots:
            return True
        robots = await self._robots_for(url)
        if robots.error is not None:
            raise _retarget(robots.error, url)
        return _robots_allow(robots, url)

    # ---------------------------------------------------------------- internals

    def _open(self) -> httpx.AsyncClient:
        """Create the client and semaphores on first use, inside the running loop."""
        if self._client is None:
            p = self.policy
            self._client = httpx.AsyncClient(
                headers={"User-Agent": p.user_agent},
                timeout=httpx.Timeout(p.timeout),
                limits=httpx.Limits(max_connections=p.max_connections),
                follow_redirects=False,
                transport=self._transport,
            )
            # Semaphores and locks belong to the running event loop: make fresh ones.
            self._total = asyncio.Semaphore(max(1, p.max_connections))
            self._per_host.clear()
            self._robots_locks.clear()
        return self._client

    async def _get(self, url: str, kind: _Kind, headers: dict[str, str] | None, *, check_robots: bool) -> Fetched:
        """Follow redirects hop by hop; each hop is retried on its own."""
        _check_url(url)
        current = url
        seen: list[str] = []
        for _hop in range(self.policy.max_redirects + 1):
            self._raise_if_down(current)
            if check_robots:
                await self._check_robots(current)
            response = await self._with_retries(current, kind, headers)
            location = response.headers.get("location")
            if response.status_code not in _REDIRECT_STATUSES or not location:
                return self._result(url, response)
            seen.append(current)
            try:
                current = str(httpx.URL(current).join(location.strip()))
                _check_url(current)
            except (httpx.InvalidURL, ValueError, FetchError) as exc:
                raise FetchError(url, f"bad redirect to {location!r}: {url}") from exc
        loop = " (loop)" if current in seen else ""
        raise TooManyRedirects(url, f"more than {self.policy.max_redirects} redirects{loop}: {url}")

    def _result(self, url: str, response: _Response) -> Fetched:
        """Turn the final response into a ``Fetched`` or an ``HTTPStatusError``."""
        status = response.status_code
        if not (200 <= status < 300 or status == 304):
            raise HTTPStatusError(url, status, f"HTTP {status}{response.note}: {url}")
        content_type = response.headers.get("content-type")
        media_type = content_type.split(";", 1)[0].strip().lower() if content_type else ""
        return Fetched(
            url=url,
            final_url=response.url,
            status=status,
            headers=response.headers,
            content=response.content,
            content_type=media_type or None,
            fetched_at=response.fetched_at,
        )

    async def _with_retries(self, url: str, kind: _Kind, headers: dict[str, str] | None) -> _Response:
        """One hop, retried on connect errors, timeouts, 429 and 5xx.

        The final attempt's response is returned whatever its status; the caller
        decides whether it is an error. Not retried: an answer slower than the deadline,
        a name that does not resolve, a host marked down, and any retry whose wait would
        take this URL's waits past ``max_retry_total``.
        """
        retries = max(0, self.policy.retries)
        waited = 0.0
        for attempt in range(retries + 1):
            try:
                response = await self._once(url, kind, headers)
            except _TooSlow:
                raise
            except (ConnectFailed, FetchTimeout):
                if attempt == retries or self._down_reason(url) is not None:
                    raise
                delay = self._backoff(attempt)
                if waited + delay > self.policy.max_retry_total:
                    raise
            else:
                if response.status_code not in _RETRY_STATUSES or attempt == retries:
                    return response
                after = self._retry_after(response) if response.status_code in _RETRY_AFTER_STATUSES else None
                delay = self._backoff(attempt) if after is None else after
                if waited + delay > self.policy.max_retry_total:
                    asked = f"Retry-After {response.headers.get('retry-after', '').strip()}" if after else "backoff"
                    response.note = (
                        f" (not retried: {asked} is past the {self.policy.max_retry_total:g} s retry budget)"
                    )
                    return response
            waited += delay
            # No semaphore is held while sleeping: other requests use the slots meanwhile.
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, url: str, kind: _Kind, headers: dict[str, str] | None) -> _Response:
        """Exactly one HTTP request, inside the per-host and total limits."""
        client = self._open()
        assert self._total is not None
        host = _host_key(url)
        host_sem = self._per_host.setdefault(host, asyncio.Semaphore(max(1, self.policy.per_host)))
        request_headers = httpx.Headers(headers or {})
        request_headers["User-Agent"] = self.policy.user_agent  # on every request, always
        if "accept" not in request_headers:
            request_headers["Accept"] = _ACCEPT[kind]
        # Host slot first, then a global one, so a queue for one busy host never holds
        # global slots other hosts could use.
        async with host_sem:
            self._raise_if_down(url)  # it may have gone down while we queued for the slot
            await self._pace(_origin(url))
            async with self._total:
                attempt = _Attempt()
                deadline = self.policy.timeout
                try:
                    # One deadline for the whole request: httpx's timeouts are per read.
                    return await asyncio.wait_for(self._request(client, url, kind, request_headers, attempt), deadline)
                except asyncio.TimeoutError:
                    if attempt.answered:
                        raise _TooSlow(url, f"timed out (answer not complete within {deadline:g} s): {url}") from None
                    self._connect_failed(url, f"no answer within {deadline:g} s")
                    raise FetchTimeout(url, f"timed out (no answer within {deadline:g} s): {url}") from None
                except (httpx.HTTPError, httpx.InvalidURL) as exc:
                    if not attempt.answered and isinstance(exc, _CONNECT_ERRORS):
                        self._connect_failed(url, _describe(exc), unresolvable=_is_name_failure(exc))
                        if _is_name_failure(exc):
                            raise ConnectFailed(url, f"cannot resolve host ({_describe(exc)}): {url}") from exc
                    raise _fetch_error(url, exc) from exc

    async def _request(
        self, client: httpx.AsyncClient, url: str, kind: _Kind, headers: httpx.Headers, attempt: _Attempt
    ) -> _Response:
        async with client.stream("GET", url, headers=headers) as resp:
            attempt.answered = True
            self._streak.pop(_host_key(url), None)
            status = resp.status_code
            content = b""
            if 200 <= status < 300:
                # Also for a "page" URL that turns out to be an image itself.
                is_image = resp.headers.get("content-type", "").lower().startswith("image/")
                if (kind == "image" or is_image) and self.policy.respect_robots:
                    _check_x_robots_tag(url, resp.headers)
                content = await self._read_body(url, resp, kind)
            return _Response(str(resp.url), status, resp.headers, content)

    # ------------------------------------------------------------- dead hosts

    def _connect_failed(self, url: str, why: str, *, unresolvable: bool = False) -> None:
        """Count a connect failure; mark the host down after too many in a row (or at once for DNS)."""
        key = _host_key(url)
        if unresolvable:
            self._down.setdefault(httpx.URL(url).host, f"the name does not resolve: {why}")
            return
        self._streak[key] = self._streak.get(key, 0) + 1
        if self._streak[key] >= max(1, self.policy.host_down_after):
            self._down.setdefault(key, f"{self._streak[key]} connect failures in a row, the last: {why}")

    def _down_reason(self, url: str) -> str | None:
        try:
            parsed = httpx.URL(url)
            return self._down.get(parsed.host) or self._down.get(_host_key(url))
        except (httpx.InvalidURL, KeyError):
            return None

    def _raise_if_down(self, url: str) -> None:
        why = self._down_reason(url)
        if why is not None:
            exc = ConnectFailed(url, f"host skipped for this run ({why}): {url}")
            exc.reason = "host-down"
            raise exc

    async def _read_body(self, url: str, resp: httpx.Response, kind: _Kind) -> bytes:
        """Stream the body, refusing it as soon as it is known to exceed the cap."""
        if kind == "robots":
            cap, truncate = _ROBOTS_MAX_BYTES, True
        else:
            cap = self.policy.max_bytes if kind == "image" else self.policy.max_page_bytes
            truncate = False
        length = resp.headers.get("content-length", "")
        if not truncate and length.strip().isdigit() and int(length) > cap:
            raise TooLarge(url, f"Content-Length {int(length)} > {cap} bytes: {url}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.aiter_bytes():  # decoded, so gzip bombs are capped too
            size += len(chunk)
            if size > cap:
                if truncate:
                    chunks.append(chunk[: len(chunk) - (size - cap)])
                    break
                raise TooLarge(url, f"body over {cap} bytes: {url}")
            chunks.append(chunk)
        return b"".join(chunks)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with +-50% jitter so retries from many tasks spread out."""
        return self.policy.backoff * (2**attempt) * random.uniform(0.5, 1.5)

    def _retry_after(self, response: _Response) -> float | None:
        """Seconds from a Retry-After header (delta or HTTP date), capped; None if absent."""
        value = (response.headers.get("retry-after") or "").strip()
        if not value:
            return None
        if re.fullmatch(r"\d+(\.\d+)?", value):
            seconds = float(value)
        else:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            seconds = (when - datetime.now(timezone.utc)).total_seconds()
        return min(max(0.0, seconds), self.policy.max_retry_after)

    async def _pace(self, origin: str) -> None:
        """Space requests to an origin by its robots.txt Crawl-delay, if it set one."""
        robots = self._robots.get(origin)
        if robots is None or not robots.crawl_delay:
            return
        now = asyncio.get_running_loop().time()
        slot = max(now, self._next_slot.get(origin, now))
        self._next_slot[origin] = slot + robots.crawl_delay  # reserve before sleeping
        if slot > now:
            await asyncio.sleep(slot - now)

    # -------------------------------------------------------------------- robots

    async def _check_robots(self, url: str) -> None:
        robots = await self._robots_for(url)
        if robots.error is not None:
            raise _retarget(robots.error, url)
        if robots.unavailable is not None:
            exc = RobotsDisallowed(url, f"robots.txt unavailable ({robots.unavailable}), so nothing is fetched: {url}")
            exc.reason = "robots-unavailable"
            raise exc
        if not _robots_allow(robots, url):
            raise RobotsDisallowed(url, f"robots.txt disallows {ROBOTS_TOKEN}: {url}")

    async def _robots_for(self, url: str) -> _Robots:
        """The cached robots.txt of ``url``'s origin, fetching it once per run (RFC 9309 rules).

        A failure is cached too: an origin whose robots.txt cannot be fetched is not asked
        again in this run (``_Robots.error``), so a dead host costs one robots.txt fetch.
        """
        origin = _origin(url)
        cached = self._robots.get(origin)
        if cached is not None:
            return cached
        lock = self._robots_locks.setdefault(origin, asyncio.Lock())
        async with lock:  # concurrent requests to a new origin share one robots fetch
            self._raise_if_down(url)
            cached = self._robots.get(origin)
            if cached is not None:
                return cached
            robots = await self._fetch_robots(origin)
            self._robots[origin] = robots
            return robots

    async def _fetch_robots(self, origin: str) -> _Robots:
        robots_url = f"{origin}/robots.txt"
        try:
            fetched = await self._get(robots_url, "robots", None, check_robots=False)
        except (ConnectFailed, FetchTimeout) as exc:
            # Reported against each URL asked for, so an unreachable host reads as
            # "connect" (or "timeout"), not "robots".
            return _Robots(error=exc)
        except HTTPStatusError as exc:
            if 400 <= exc.status < 500 and exc.status != 429:
                return _Robots()  # "unavailable" in RFC 9309 terms: no rules at all
            return _Robots(unavailable=f"HTTP {exc.status}")  # "unreachable": assume no access
        except TooManyRedirects:
            return _Robots()  # RFC 9309 2.3.1.2: may be treated as unavailable
        except FetchError as exc:
            return _Robots(unavailable=f"unreadable answer: {type(exc).__name__}")  # garbled: be conservative
        text = fetched.content.decode("utf-8", errors="replace")
        try:
            parser = Protego.parse(text)
        except Exception as exc:  # Protego is lenient; anything it still cannot read is refused
            return _Robots(unavailable=f"cannot parse it: {type(exc).__name__}")
        return _Robots(parser, crawl_delay=_crawl_delay(parser, self.policy.max_retry_after))


@dataclass
class _Response:
    """What ``_once`` keeps of an httpx response after the stream is closed."""

    url: str
    status_code: int
    headers: httpx.Headers
    content: bytes
    fetched_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    note: str = ""  # why the last attempt was not retried, for the error message


_ACCEPT: dict[str, str] = {
    "page": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.5",
    "image": "image/*,*/*;q=0.5",
    "robots": "text/plain,*/*;q=0.5",
}


def _check_url(url: str) -> httpx.URL:
    """Reject what we cannot fetch with a clear ``FetchError`` instead of an httpx crash."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError, UnicodeError) as exc:
        raise FetchError(str(url), f"invalid URL ({exc}): {url!r}") from exc
    if parsed.scheme not in ("http", "https"):
        raise FetchError(url, f"unsupported URL scheme {parsed.scheme!r}: {url}")
    if not parsed.host:
        raise FetchError(url, f"URL has no host: {url}")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise FetchError(url, f"invalid URL (port {parsed.port} is not in 1..65535): {url}")
    return parsed


def _origin(url: str) -> str:
    """scheme://host:port, the unit robots.txt applies to."""
    parsed = httpx.URL(url)
    port = parsed.port or {"http": 80, "https": 443}[parsed.scheme]
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    return f"{parsed.scheme}://{host}:{port}"


def _host_key(url: str) -> str:
    """host:port, the unit of the per-host concurrency limit (http and https share it)."""
    parsed = httpx.URL(url)
    return f"{parsed.host}:{parsed.port or {'http': 80, 'https': 443}[parsed.scheme]}"


def _crawl_delay(parser: Protego, cap: float) -> float | None:
    try:
        delay = parser.crawl_delay(ROBOTS_TOKEN)
    except (TypeError, ValueError):
        return None
    return min(float(delay), cap) if delay else None


def _robots_allow(robots: _Robots, url: str) -> bool:
    if robots.error is not None or robots.unavailable is not None:
        return False
    return robots.parser is None or robots.parser.can_fetch(url, ROBOTS_TOKEN)


def _retarget(exc: FetchError, url: str) -> FetchError:
    """The same failure (class, reason, cause) reported against another URL of the origin."""
    text = str(exc)
    suffix = f": {exc.url}"
    what = text[: -len(suffix)] if text.endswith(suffix) else text
    again = (FetchTimeout if isinstance(exc, FetchTimeout) else type(exc))(url, f"{what}: {url}")
    if again.reason != exc.reason:
        again.reason = exc.reason
    return again


# Failures before any answer that say "nobody is there": DNS, refused, reset, hung up, connect timeout.
_CONNECT_ERRORS = (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ConnectTimeout)


def _is_name_failure(exc: BaseException) -> bool:
    """True if a ``socket.gaierror`` (the name did not resolve) is somewhere in the chain."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, socket.gaierror):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _check_x_robots_tag(url: str, headers: httpx.Headers) -> None:
    """Raise ``NoAIRefused`` if an X-Robots-Tag directive for us (or everyone) forbids use."""
    value = _x_robots_refusal(headers, _REFUSING_DIRECTIVES)
    if value is not None:
        raise NoAIRefused(url, f"X-Robots-Tag {value!r} refuses use: {url}")


def page_refuses_ai(headers: httpx.Headers) -> bool:
    """True if a page's X-Robots-Tag says noai or noimageai to us (or everyone): skip its images.

    Only those two: ``noindex`` on a page is about indexing the page, not its images.
    """
    return _x_robots_refusal(headers, _NOAI_DIRECTIVES) is not None


def _x_robots_refusal(headers: httpx.Headers, refusing: frozenset[str]) -> str | None:
    """The first X-Robots-Tag value with a ``refusing`` directive for us (or everyone), else None.

    Each header value is a comma-separated list; ``name: directive`` starts a group for
    that user agent (``googlebot: noindex`` is not about us, ``imgdb: noai`` is).
    """
    for value in headers.get_list("x-robots-tag"):
        agent: str | None = None
        for token in value.split(","):
            token = token.strip().lower()
            name, colon, rest = token.partition(":")
            name = name.strip()
            if colon and name not in _VALUED_DIRECTIVES and " " not in name:
                agent, token = name, rest.strip()
            if agent not in (None, ROBOTS_TOKEN):
                continue
            for directive in token.split():
                if directive in refusing:
                    return value
    return None


def _fetch_error(url: str, exc: httpx.HTTPError | httpx.InvalidURL) -> FetchError:
    """Map an httpx exception to ours: timeouts, connection trouble, anything else."""
    if isinstance(exc, httpx.TimeoutException):
        return FetchTimeout(url, f"timed out ({_describe(exc)}): {url}")
    if isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)):
        # DNS failure, refused, reset, or the server hung up without answering.
        return ConnectFailed(url, f"cannot connect ({_describe(exc)}): {url}")
    return FetchError(url, f"{_describe(exc)}: {url}")


def _describe(exc: BaseException) -> str:
    """``ConnectError: [Errno 111] Connection refused`` -> a short, readable cause."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
