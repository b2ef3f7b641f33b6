"""Per-host limits that hold across the cluster, not per download actor.

Every download actor runs its own ``Fetcher`` (robots.txt, retries, byte caps, redirects);
only the per-host concurrency slot and the Crawl-delay spacing are taken from one
``HostLimiter`` actor, so four requests per host means four in the whole cluster however
many download actors there are. A slot is a lease: one held by an actor that died (a lost
node) expires after ``lease`` seconds instead of shrinking the host's limit for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import Any

from imgdb.acquire.fetch import Fetcher, FetchPolicy, _host_key


class HostLimiter:
    """Hands out per-host request slots (as a Ray async actor: ``limiter_actor``)."""

    def __init__(self, per_host: int, lease: float):
        self.per_host = max(1, per_host)
        self.lease = lease
        self.held: dict[str, dict[int, float]] = {}  # host -> slot token -> lease expiry
        self.next_slot: dict[str, float] = {}  # host -> monotonic time of its next Crawl-delay slot
        self.changed = asyncio.Condition()
        self.tokens = itertools.count(1)

    async def acquire(self, host: str, crawl_delay: float = 0.0) -> int:
        """Wait for a free slot of ``host`` (and its Crawl-delay turn); returns the slot's token."""
        async with self.changed:
            while True:
                held = self.held.setdefault(host, {})
                now = time.monotonic()
                for token in [t for t, expiry in held.items() if expiry < now]:
                    del held[token]  # its holder died without releasing it
                if len(held) < self.per_host:
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), timeout=min(held.values()) - now + 0.01)
            token = next(self.tokens)
            held[token] = now + self.lease
            wait = 0.0
            if crawl_delay > 0:
                slot = max(now, self.next_slot.get(host, now))
                self.next_slot[host] = slot + crawl_delay  # reserved before sleeping
                wait = slot - now
        if wait > 0:
            await asyncio.sleep(wait)
        return token

    async def release(self, host: str, token: int) -> None:
        async with self.changed:
            self.held.get(host, {}).pop(token, None)
            self.changed.notify_all()


def limiter_actor(policy: FetchPolicy, node_id: str | None = None) -> Any:
    """A ``HostLimiter`` actor, kept on ``node_id`` (the driver's node) when given: it outlives workers."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    options: dict[str, Any] = {"num_cpus": 0, "max_restarts": -1, "max_task_retries": -1}
    if node_id is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=True)
    # A lease outlasts any request: its whole deadline plus the longest wait it may make.
    lease = policy.timeout + policy.max_retry_after + 5.0
    return ray.remote(HostLimiter).options(**options).remote(policy.per_host, lease)


class _ClusterSlot:
    """Stands where ``Fetcher`` keeps a host's ``asyncio.Semaphore``: the slot comes from the limiter."""

    def __init__(self, fetcher: ClusterFetcher, host: str):
        self.fetcher = fetcher
        self.host = host
        self.tokens: list[int] = []

    async def __aenter__(self) -> None:
        token = await self.fetcher.limiter.acquire.remote(self.host, self.fetcher.crawl_delay(self.host))
        self.tokens.append(token)

    async def __aexit__(self, *exc: object) -> None:
        token = self.tokens.pop()
        await self.fetcher.limiter.release.remote(self.host, token)


class _ClusterSlots(dict):
    """``Fetcher._per_host``: one ``_ClusterSlot`` per host, whatever default is offered."""

    def __init__(self, fetcher: ClusterFetcher):
        super().__init__()
        self.fetcher = fetcher

    def setdefault(self, host: Any, default: Any = None) -> Any:
        if host not in self:
            self[host] = _ClusterSlot(self.fetcher, host)
        return self[host]


class ClusterFetcher(Fetcher):
    """A ``Fetcher`` whose per-host slots and Crawl-delay spacing are the cluster's, not its own."""

    def __init__(self, policy: FetchPolicy, limiter: Any):
        super().__init__(policy)
        self.limiter = limiter

    def _open(self) -> Any:
        client = super()._open()
        if not isinstance(self._per_host, _ClusterSlots):
            self._per_host = _ClusterSlots(self)
        return client

    async def _pace(self, origin: str) -> None:
        """Crawl-delay is spaced by the limiter, across every actor (see ``crawl_delay``)."""

    def crawl_delay(self, host: str) -> float:
        """The Crawl-delay robots.txt set for ``host`` (0 when none, or not read yet)."""
        delays = [r.crawl_delay or 0.0 for origin, r in self._robots.items() if _host_key(origin) == host]
        return max(delays, default=0.0)
