"""Commands to Redis batched per event-loop tick, on one redis-py connection (SPEC §1, §2.5-§2.7).

Every request makes one state call before its upstream call, and 64 requests in flight make 64
at once. Instead of one round trip each, the commands issued while a batch is in flight are sent
together as the next batch (pipelined, no MULTI), and their replies handed back in order.
Batches go out one after another, so a command sent without waiting for its reply (a
settlement) is applied before any command sent after it: read-your-writes within a process.

    ReplyError         Redis answered this command with an error (e.g. NOSCRIPT)
    ConnectionGone     the batch could not be sent or answered within `timeout`; every command
                       in it failed with this (an OSError: callers treat Redis as unreachable)

redis-py connects (TCP, TLS or a unix socket; AUTH, SELECT) and parses replies; hiredis, when
installed (the `redis` extra), encodes each command as it is submitted and speeds up the parser;
a batch is written as one buffer. Replies are Redis's own (`b"PONG"`, `b"OK"`), without
redis-py's per-command conversions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import (
    ExecAbortError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # the `redis` extra brings hiredis; without it redis-py encodes
    _hiredis_pack = None

Arg = str | bytes | int | float
Command = Sequence[Arg]
Done = Callable[[Any], None]


class ReplyError(Exception):
    """An error reply; the message is Redis's, which never contains a secret."""


class ConnectionGone(ConnectionError):
    """Redis is unreachable or slow; commands of the failed batch may or may not have run."""


# redis-py's parser drops the leading code of these error replies (keeping it as `status_code`
# only in recent versions); put it back, so callers see Redis's message ("NOSCRIPT ...").
_CODES: dict[type[ResponseError], str] = {
    NoScriptError: "NOSCRIPT",
    ReadOnlyError: "READONLY",
    OutOfMemoryError: "OOM",
    NoPermissionError: "NOPERM",
    ExecAbortError: "EXECABORT",
}


def reply_error(error: ResponseError) -> ReplyError:
    """A ReplyError with Redis's whole message, error code first."""
    code = getattr(error, "status_code", None) or _CODES.get(type(error))
    return ReplyError(f"{code} {error}" if code else str(error))


class Pipe:
    """One process's ordered, batched command stream to one Redis, on one connection.

    `timeout` bounds connecting and each batch's round trip. `on_connect` commands (SCRIPT LOAD)
    lead the first batch on every new connection: the first one, and the first one after a
    failure (Redis may have restarted).
    """

    def __init__(
        self,
        connection: AbstractConnection,
        *,
        timeout: float = 0.25,
        on_connect: Sequence[Command] = (),
    ) -> None:
        self._connection = connection
        self.timeout = timeout
        self.on_connect = list(on_connect)
        self._commands: list[bytes] = []
        self._waiters: list[asyncio.Future[Any] | Done] = []
        self._sender: asyncio.Task[None] | None = None
        # Connections made so far: a new one after the first may face a Redis that restarted
        # (and lost what it held), which `ResilientState` checks for.
        self.connections = 0

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 0.25, **kwargs: Any) -> Pipe:
        """`redis://`, `rediss://` or `unix://` URLs, as redis-py reads them. The batch timeout
        bounds every read, so the connection keeps no socket timeout of its own (one timer per
        batch, not one per reply)."""
        pool = ConnectionPool.from_url(
            url, socket_timeout=None, socket_connect_timeout=timeout, decode_responses=False
        )
        return cls(pool.make_connection(), timeout=timeout, **kwargs)

    async def call(self, *args: Arg) -> Any:
        """Send one command and wait for its reply; raises ReplyError or ConnectionGone."""
        future = asyncio.get_running_loop().create_future()
        self._submit(self.pack(args), future)
        return await future

    def send(self, args: Command, done: Done) -> None:
        """Send one command without waiting; `done` gets the reply, or the ReplyError or
        ConnectionGone that took its place. Later commands from this process run after it."""
        self._submit(self.pack(args), done)

    def pack(self, args: Command) -> bytes:
        """One command for the wire: hiredis's packer when installed (C, several times faster
        than redis-py's, which the asyncio client does not use), else redis-py's."""
        if _hiredis_pack is not None:
            return _hiredis_pack(tuple(args))
        return b"".join(self._connection.pack_command(*args))

    async def drain(self) -> None:
        """Wait until every command sent so far has been answered."""
        if self._commands or (self._sender is not None and not self._sender.done()):
            with contextlib.suppress(ReplyError, ConnectionGone):
                await self.call("PING")

    async def close(self) -> None:
        """Wait (up to the timeout) for the commands in flight, then close the connection."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout):
                await self.drain()
        if self._sender is not None:
            self._sender.cancel()
        await self._connection.disconnect()

    def _submit(self, command: bytes, waiter: asyncio.Future[Any] | Done) -> None:
        self._commands.append(command)
        self._waiters.append(waiter)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_batches())

    async def _send_batches(self) -> None:
        while self._commands:
            commands, waiters = self._commands, self._waiters
            self._commands, self._waiters = [], []
            try:
                async with asyncio.timeout(self.timeout):
                    replies = await self._exchange(commands)
            except Exception as exc:  # refused, reset, timed out: Redis is unreachable
                gone = ConnectionGone(f"redis unreachable ({type(exc).__name__})")
                await self._drop()
                replies = [gone] * len(waiters)
            except asyncio.CancelledError:  # closed: nobody is left waiting for ever
                waiters += self._waiters
                self._commands, self._waiters = [], []
                for waiter in waiters:
                    _deliver(waiter, ConnectionGone("redis connection closed"))
                raise
            for waiter, reply in zip(waiters, replies, strict=True):
                _deliver(waiter, reply)

    async def _exchange(self, commands: list[bytes]) -> list[Any]:
        """Write one batch (after the `on_connect` commands on a new connection) and read its
        replies; an error reply takes its command's place as a ReplyError."""
        connection = self._connection
        lead = 0
        if not await self._ready():
            lead = len(self.on_connect)
            commands = [self.pack(command) for command in self.on_connect] + commands
        await connection.send_packed_command(commands, check_health=False)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await connection.read_response())
            except ResponseError as exc:
                replies.append(reply_error(exc))
        return replies[lead:]

    async def _ready(self) -> bool:
        """True when the open connection is clean; otherwise connects afresh and says False.
        An idle connection that Redis closed (a restart) is replaced before it fails a batch."""
        connection = self._connection
        if connection.is_connected:
            if not await _stale(connection):
                return True
            await connection.disconnect(nowait=True)
        await connection.connect()
        self.connections += 1
        return False

    async def _drop(self) -> None:
        """Close a connection whose replies can no longer be matched to their commands."""
        with contextlib.suppress(Exception):
            await self._connection.disconnect(nowait=True)


async def _stale(connection: AbstractConnection) -> bool:
    """Whether the server closed the connection or sent what nobody asked for (no I/O on
    redis-py 8+, whose `can_read` looks at the buffers; older versions only have the
    destructive probe, which is fine here: a connection with data is dropped either way)."""
    probe = getattr(connection, "can_read", None) or connection.can_read_destructive
    try:
        return bool(await probe())
    except (RedisError, OSError):
        return True


def _deliver(waiter: asyncio.Future[Any] | Done, reply: Any) -> None:
    """Hand one reply (or the error in its place) to whoever waits for it."""
    if isinstance(waiter, asyncio.Future):
        if waiter.done():  # its caller gave up (cancelled)
            return
        if isinstance(reply, Exception):
            waiter.set_exception(reply)
        else:
            waiter.set_result(reply)
        return
    try:
        waiter(reply)
    except Exception as exc:  # one bad callback must not stop the stream
        asyncio.get_running_loop().call_exception_handler(
            {"message": "Exception in a Redis reply callback", "exception": exc}
        )
