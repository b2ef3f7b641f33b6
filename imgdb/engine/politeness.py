"""Per-host limits that hold across the cluster, not per download actor.

Every download actor runs its own ``Fetcher`` (robots.txt, retries, byte caps, redirects);
only the per-host concurrency slot and the Crawl-delay spacing are taken from one
``HostLimiter`` actor, so four requests per host means four in the whole cluster however
many download actors there are. A slot is a short lease that its holder renews while its
request runs: the slot of an actor that died (a lost node, or a pass of the run that was
ended) comes back within ``SLOT_LEASE`` seconds instead of shrinking the host's limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from typing import Any

from imgdb.acquire.fetch import Fetcher, FetchPolicy, _host_key

SLOT_LEASE = 10.0  # seconds a slot outlives its holder's last renewal
RENEW_EVERY = SLOT_LEASE / 4


class HostLimiter:
    """Hands out per-host request slots in arrival order (as a Ray async actor: ``limiter_actor``).

    A freed slot goes to the host's longest waiter only: waking every waiter on every
    release cost more CPU than the downloads themselves.
    """

    def __init__(self, per_host: int, lease: float):
        self.per_host = max(1, per_host)
        self.lease = lease
        self.held: dict[str, dict[int, float]] = {}  # host -> slot token -> lease expiry
        self.waiting: dict[str, deque[asyncio.Future[int]]] = {}  # host -> its waiters, first come first
        self.next_slot: dict[str, float] = {}  # host -> monotonic time of its next Crawl-delay slot
        self.tokens = itertools.count(1)

    async def acquire(self, host: str, crawl_delay: float = 0.0) -> int:
        """Wait for a free slot of ``host`` (and its Crawl-delay turn); returns the slot's token."""
        held = self.held.setdefault(host, {})
        waiting = self.waiting.setdefault(host, deque())
        self._expire(held)
        if len(held) < self.per_host and not waiting:
            token = self._take(held)
        else:
            turn: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            waiting.append(turn)
            try:
                while not turn.done():
                    # Woken by a release, or when the first lease may have run out (a dead holder).
                    timeout = max(0.01, min(held.values(), default=0.0) - time.monotonic())
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(asyncio.shield(turn), timeout)
                    self._hand_on(host)
            except asyncio.CancelledError:  # the caller gave up: its turn, or its slot, goes on
                if turn.done():
                    await self.release(host, turn.result())
                turn.cancel()
                raise
            token = turn.result()
        wait = 0.0
        if crawl_delay > 0:
            now = time.monotonic()
            slot = max(now, self.next_slot.get(host, now))
            self.next_slot[host] = slot + crawl_delay  # reserved before sleeping
            wait = slot - now
            held[token] = now + wait + self.lease  # the holder renews it once it has it
        if wait > 0:
            await asyncio.sleep(wait)
        return token

    async def renew(self, host: str, token: int) -> None:
        """The holder of ``token`` is alive and its request still runs."""
        held = self.held.get(host, {})
        if token in held:
            held[token] = time.monotonic() + self.lease

    async def release(self, host: str, token: int) -> None:
        self.held.get(host, {}).pop(token, None)
        self._hand_on(host)

    def _take(self, held: dict[int, float]) -> int:
        token = next(self.tokens)
        held[token] = time.monotonic() + self.lease
        return token

    def _expire(self, held: dict[int, float]) -> None:
        now = time.monotonic()
        for token in [t for t, expiry in held.items() if expiry < now]:
            del held[token]  # its holder died without releasing it

    def _hand_on(self, host: str) -> None:
        """Free slots to the first waiters (skipping any that gave up)."""
        held = self.held.setdefault(host, {})
        waiting = self.waiting.setdefault(host, deque())
        self._expire(held)
        while waiting and len(held) < self.per_host:
            turn = waiting.popleft()
            if not turn.done():
                turn.set_result(self._take(held))


def limiter_actor(policy: FetchPolicy, node_id: str | None = None) -> Any:
    """A ``HostLimiter`` actor, kept on ``node_id`` (the driver's node) when given: it outlives workers."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    options: dict[str, Any] = {"num_cpus": 0, "max_restarts": -1, "max_task_retries": -1}
    if node_id is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=True)
    return ray.remote(HostLimiter).options(**options).remote(policy.per_host, SLOT_LEASE)


class _ClusterSlot:
    """Stands where ``Fetcher`` keeps a host's ``asyncio.Semaphore``: the slot comes from the limiter.

    A download actor asks the limiter for at most ``per_host`` slots of a host at a time;
    its further requests wait for one of those, which passes from request to request
    without a round trip to the limiter, and goes back to it once this actor has nothing
    more for the host. With a Crawl-delay every request asks the limiter (it spaces them).
    """

    def __init__(self, fetcher: ClusterFetcher, host: str):
        self.fetcher = fetcher
        self.host = host
        self.held: list[tuple[int, asyncio.Task[None]]] = []  # (token, its renewal), one per request
        self.asking = 0  # requests waiting on the limiter
        self.queue: deque[asyncio.Future[tuple[int, asyncio.Task[None]]]] = deque()  # waiting on this actor's slots

    async def __aenter__(self) -> None:
        delay = self.fetcher.crawl_delay(self.host)
        if delay == 0 and self.asking + len(self.held) >= self.fetcher.policy.per_host:
            turn: asyncio.Future[tuple[int, asyncio.Task[None]]] = asyncio.get_running_loop().create_future()
            self.queue.append(turn)
            try:
                self.held.append(await turn)
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    await self._pass_on(turn.result())
                raise
            return
        self.asking += 1
        try:
            token = await self.fetcher.limiter.acquire.remote(self.host, delay)
        finally:
            self.asking -= 1
        self.held.append((token, asyncio.ensure_future(self._renew(token))))

    async def __aexit__(self, *exc: object) -> None:
        await self._pass_on(self.held.pop())

    async def _pass_on(self, lease: tuple[int, asyncio.Task[None]]) -> None:
        """To this actor's next waiting request, else back to the limiter."""
        while self.queue:
            turn = self.queue.popleft()
            if not turn.done():
                turn.set_result(lease)
                return
        token, renewal = lease
        renewal.cancel()
        await self.fetcher.limiter.release.remote(self.host, token)

    async def _renew(self, token: int) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            await self.fetcher.limiter.renew.remote(self.host, token)


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
