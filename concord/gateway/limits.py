"""`server.max_concurrency` with `queue_timeout` (SPEC §2): a bounded queue in front of the work.

A request waits for a slot up to the queue timeout, then gets 503. Streams hold their slot until
the last byte, so the caller releases explicitly rather than through a context manager.
"""

from __future__ import annotations

import asyncio

from concord.gateway.errors import Overloaded


class ConcurrencyLimiter:
    """At most `limit` requests in flight; 0 means unlimited (acquire and release are no-ops)."""

    def __init__(self, limit: int, queue_timeout: float) -> None:
        self.limit = limit
        self.queue_timeout = queue_timeout
        self._semaphore = asyncio.Semaphore(limit) if limit > 0 else None

    async def acquire(self) -> None:
        semaphore = self._semaphore
        if semaphore is None:
            return
        if not semaphore.locked():
            await semaphore.acquire()  # free slot: returns without suspending
            return
        try:
            async with asyncio.timeout(self.queue_timeout):
                await semaphore.acquire()
        except TimeoutError:
            raise Overloaded(
                f"The gateway is at its concurrency limit ({self.limit}); "
                f"no slot freed within {self.queue_timeout:g}s. Retry later.",
                headers={"retry-after": "1"},
            ) from None

    def release(self) -> None:
        if self._semaphore is not None:
            self._semaphore.release()
