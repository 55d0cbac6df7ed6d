"""Responses: JSON answers, errors, and server-sent event streams (SPEC §3).

`EventStreamResponse` is a small ASGI response of its own rather than Starlette's
StreamingResponse because the gateway must know how a stream ended: it watches for the client's
disconnect, and whatever happens (end, upstream failure, disconnect, shutdown) it closes the
upstream stream and runs the request's `on_close` exactly once (usage record, concurrency slot).

A stream whose upstream ended it with an error event of its own gets no second error event from
the gateway: the relay already gave the client that one, in the client's format. The request is
still recorded as failed (502, the transport's error kind).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from concord.gateway.bridge import Relay
from concord.gateway.errors import ClientWire, GatewayError, ShuttingDown, UpstreamFailed
from concord.providers.base import SSEEvent, UpstreamError, UpstreamStream
from concord.providers.sse import is_error_event
from concord.translate.anthropic_openai import error_message

JSON_TYPE = "application/json"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
CUT_NOTICE_SECONDS = 1.0  # how long a stream cut at shutdown may take to tell its client


def json_response(content: bytes, status: int, headers: Mapping[str, str]) -> Response:
    return JSONAnswer(content, status, headers)


class JSONAnswer(Response):
    """A JSON answer whose raw header list is built in one pass: the same bytes on the wire as
    Starlette's `Response(content, status, headers, media_type=JSON_TYPE)`, for less work on
    every request."""

    media_type = JSON_TYPE

    def __init__(self, content: bytes, status: int, headers: Mapping[str, str]) -> None:
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self._init(content, status, raw)

    @classmethod
    def raw(cls, content: bytes, status: int, raw: list[tuple[bytes, bytes]]) -> JSONAnswer:
        """From header pairs already lower-case and encoded (the gateway's own answers)."""
        answer = cls.__new__(cls)
        answer._init(content, status, raw)
        return answer

    def _init(self, content: bytes, status: int, raw: list[tuple[bytes, bytes]]) -> None:
        self.status_code = status
        self.background = None
        self.body = content
        names = {name for name, _ in raw}
        if b"content-length" not in names and status >= 200 and status not in (204, 304):
            raw.append((b"content-length", str(len(content)).encode()))
        if b"content-type" not in names:
            raw.append((b"content-type", _JSON_TYPE_RAW))
        self.raw_headers = raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send({"type": "http.response.body", "body": self.body})


_JSON_TYPE_RAW = JSON_TYPE.encode()


def error_response(error: GatewayError, wire: ClientWire, headers: dict[str, str]) -> Response:
    if error.headers:
        headers.update(error.headers)
    return json_response(error.render(wire), error.status, headers)


class StreamState:
    """How a relayed stream went, read by the usage record once it is over."""

    __slots__ = ("error", "first_byte_at", "status", "upstream_error")

    def __init__(self) -> None:
        self.status = 200
        self.error: str | None = None
        self.first_byte_at: float | None = None
        self.upstream_error: UpstreamError | None = None  # the upstream broke the stream


class EventStreamResponse:
    """Relays an upstream event stream to the client, translated, until it ends or they leave."""

    def __init__(
        self,
        upstream: UpstreamStream,
        relay: Relay,
        wire: ClientWire,
        raw_headers: list[tuple[bytes, bytes]],
        on_close: Callable[[StreamState], Awaitable[None]],
    ) -> None:
        """`raw_headers`: lower-case names and values as bytes (`Call.raw_headers`)."""
        self.upstream = upstream
        self.relay = relay
        self.wire = wire
        self.state = StreamState()
        self.on_close = on_close
        self.started = False  # http.response.start sent
        raw = list(raw_headers)
        raw.append((b"content-type", b"text/event-stream; charset=utf-8"))
        raw.extend((k.encode(), v.encode()) for k, v in SSE_HEADERS.items())
        self.raw_headers = raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump = asyncio.ensure_future(self._pump(send))
        watch = asyncio.ensure_future(_wait_disconnect(receive))
        cut = False
        try:
            await asyncio.wait((pump, watch), return_when=asyncio.FIRST_COMPLETED)
            if not pump.done():  # SPEC §2.5: the client left; abandon the upstream call
                self.state.status = 499
                self.state.error = "client_disconnected"
        except asyncio.CancelledError:  # the server stopped waiting (its shutdown grace ran out)
            if pump.done():
                raise
            self.state.status = 503
            self.state.error = "shutdown"
            cut = True
        finally:
            for task in (pump, watch):
                task.cancel()
            await asyncio.gather(pump, watch, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.upstream.aclose()
            await self.on_close(self.state)
        if cut:  # answered, not raised: the server would log the cancellation as a crash
            await self._end_cut(send)
            cancellation_handled()

    async def _end_cut(self, send: Send) -> None:
        """End a stream the shutdown cut with an error event the client's SDK raises, rather
        than a connection that just stops; within a second, as the server is going away."""

        async def end() -> None:
            if not self.started:
                await send(self._start())
            event = ShuttingDown().sse(self.wire)
            await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        with contextlib.suppress(Exception):
            await asyncio.wait_for(end(), CUT_NOTICE_SECONDS)

    async def _pump(self, send: Send) -> None:
        self.started = True
        await send(self._start())
        async for chunk in self._chunks():
            if chunk:
                if self.state.first_byte_at is None:
                    self.state.first_byte_at = time.monotonic()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _start(self) -> Message:
        return {"type": "http.response.start", "status": 200, "headers": self.raw_headers}

    async def _chunks(self) -> AsyncIterator[bytes]:
        relay = self.relay
        event: SSEEvent | None = None  # the last upstream event relayed, once the loop is over
        try:
            async for event in self.upstream:
                yield relay.feed(event)
            yield relay.finish()
        except UpstreamError as error:
            # SPEC §2.5: after the first byte there is no failover; the client gets an error event.
            self.state.status = 502
            self.state.error = error.kind
            self.state.upstream_error = error
            if event is not None and is_error_event(event):
                return  # the upstream's own error event, relayed in the client's format, ends it
            detail = error_message(error.body) if error.body is not None else error.message
            yield UpstreamFailed(f"The upstream stream failed: {detail}").sse(self.wire)


def cancellation_handled() -> None:
    """The request's task was cancelled and has answered for it: clear the request, so that
    nothing above takes the task for one still being cancelled."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
