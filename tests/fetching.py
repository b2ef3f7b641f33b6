"""Fetching from tests: one call runs one ``Fetcher`` to completion."""

from __future__ import annotations

import asyncio
from typing import Any

from imgdb.acquire.fetch import Fetched, Fetcher, FetchPolicy

# Small backoffs and timeouts keep the whole module to a few seconds.
FAST = FetchPolicy(timeout=2.0, retries=2, backoff=0.01)


def fetch(url: str, policy: FetchPolicy = FAST, **kwargs: Any) -> Fetched:
    async def go() -> Fetched:
        async with Fetcher(policy) as fetcher:
            return await fetcher.get(url, **kwargs)

    return asyncio.run(go())


def fetch_many(urls: list[str], policy: FetchPolicy = FAST, **kwargs: Any) -> list[Any]:
    """Fetch concurrently with one Fetcher (one run); exceptions are returned in place of results."""

    async def go() -> list[Any]:
        async with Fetcher(policy) as fetcher:
            return await asyncio.gather(*(fetcher.get(u, **kwargs) for u in urls), return_exceptions=True)

    return asyncio.run(go())
