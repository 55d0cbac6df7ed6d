"""Commands to Redis batched per event-loop tick, on redis-py's pipeline (SPEC §1, §2.5-§2.7).

Every request makes one state call before its upstream call, and 64 requests in flight make 64
at once. Instead of one round trip each, the commands issued while a batch is in flight are sent
together as the next redis-py pipeline (no MULTI), and their replies handed back in order.
Batches go out one after another, so a command sent without waiting for its reply (a
settlement) is applied before any command sent after it: read-your-writes within a process.

    ReplyError         Redis answered this command with an error (e.g. NOSCRIPT)
    ConnectionGone     the batch could not be sent or answered within `timeout`; every command
                       in it failed with this (an OSError: callers treat Redis as unreachable)

redis-py does the protocol work (with hiredis when installed: the `redis` extra).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

Command = Sequence[str | bytes | int | float]


class ReplyError(Exception):
    """An error reply; the message is Redis's, which never contains a secret."""


class ConnectionGone(ConnectionError):
    """Redis is unreachable or slow; commands of the failed batch may or may not have run."""


class Pipe:
    """One process's ordered, batched command stream to one Redis.

    `timeout` bounds connecting and each batch's round trip. `on_connect` commands (SCRIPT LOAD)
    lead the first batch, and the first one after a failure (Redis may have restarted).
    """

    def __init__(
        self, client: Redis, *, timeout: float = 0.25, on_connect: Sequence[Command] = ()
    ) -> None:
        self._client = client
        self.timeout = timeout
        self.on_connect = list(on_connect)
        self._queue: list[tuple[Command, asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None
        self._primed = False

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 0.25, **kwargs: Any) -> Pipe:
        """`redis://`, `rediss://` or `unix://` URLs, as redis-py reads them."""
        client = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
            decode_responses=False,
        )
        return cls(client, timeout=timeout, **kwargs)

    async def call(self, *args: str | bytes | int | float) -> Any:
        """Send one command and wait for its reply; raises ReplyError or ConnectionGone."""
        return await self._submit(args)

    def send(self, args: Command, done: Callable[[Any], None]) -> None:
        """Send one command without waiting; `done` gets the reply, or the ReplyError or
        ConnectionGone that took its place. Later commands from this process run after it."""

        def report(future: asyncio.Future[Any]) -> None:
            if not future.cancelled():
                done(future.exception() or future.result())

        self._submit(args).add_done_callback(report)

    async def drain(self) -> None:
        """Wait until every command sent so far has been answered."""
        if self._queue or (self._sender is not None and not self._sender.done()):
            with contextlib.suppress(ReplyError, ConnectionGone):
                await self._submit(("PING",))

    async def close(self) -> None:
        """Wait (up to the timeout) for the commands in flight, then close the connections."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout):
                await self.drain()
        if self._sender is not None:
            self._sender.cancel()
        await self._client.aclose()

    def _submit(self, args: Command) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, future))
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._send_batches())
        return future

    async def _send_batches(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            lead = [] if self._primed else self.on_connect
            pipeline = self._client.pipeline(transaction=False)
            for command in (*lead, *(args for args, _ in batch)):
                pipeline.execute_command(*command)
            try:
                async with asyncio.timeout(self.timeout):
                    replies = await pipeline.execute(raise_on_error=False)
            except Exception as exc:  # refused, reset, timed out: Redis is unreachable
                self._primed = False
                gone = ConnectionGone(f"redis unreachable ({type(exc).__name__})")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(gone)
                continue
            self._primed = True
            for (_, future), reply in zip(batch, replies[len(lead) :], strict=True):
                if future.done():
                    continue
                if isinstance(reply, ResponseError):
                    future.set_exception(ReplyError(str(reply)))
                else:
                    future.set_result(reply)
