"""What the HTTP adapters share: the pooled session, key rotation, timeouts, error mapping.

Subclasses say where a request goes (`url`) and how a key is presented (`auth_headers`); this
module turns every way an upstream call can fail into the `UpstreamError` tree of `base.py`.

Timeouts (SPEC §2.5, per attempt): `send` gives the whole call `request.timeout`; `stream` gives
connecting, the response headers and the first event `request.timeout`, then allows at most
`request.timeout` of silence between chunks.

A stream is complete once its terminal event arrived (`data: [DONE]` for OpenAI wire,
`message_stop` for Anthropic). Some OpenAI-compatible servers leave `[DONE]` out, so an OpenAI-wire
stream is also complete when a chunk carried a non-null `finish_reason` and the connection then
closed cleanly (anything after it, such as the usage chunk, is still relayed); that is found by a
substring match on the chunk text (`"finish_reason":"`), not by parsing it. Otherwise a connection
that ends early raises `UpstreamConnectionError` from the iterator after the events that did
arrive: a clean close before any choice finished (or, for Anthropic, before `message_stop`), or
a dropped connection at any point. A 200 stream whose
first event is an error (Anthropic's `event: error`, OpenAI's `data: {"error": ...}`) raises the
`UpstreamStatusError` that error stands for from `stream()` itself, so it can still fail over;
an error event later on reaches the client and is the stream's last word: the close after it
raises `UpstreamConnectionError` (even after a finished choice), and the gateway, seeing the
error was the last event relayed, adds no second one (`concord.gateway.respond`).

A 200 whose body holds no event at all is judged before `stream()` returns: a complete JSON
answer (a server that ignores `stream: true`) is relayed as the events it stands for, an error
object raises the status error it stands for, anything else is a 502; the last two fail over.

The `stream_options` the gateway adds for usage (`GatewayStreamOptions`, the client sent none)
are left out once a server answered 400 naming them: that call is made again without them, and
so are the adapter's later streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import aiohttp
import orjson
from yarl import URL

from concord.deadlines import call_later
from concord.engine.graph import ProviderSpec
from concord.providers.base import (
    ContextLengthError,
    SSEEvent,
    UpstreamConnectionError,
    UpstreamEndpoint,
    UpstreamError,
    UpstreamRequest,
    UpstreamResponse,
    UpstreamStatusError,
    UpstreamTimeout,
    Wire,
)
from concord.providers.keys import (
    COOLING_STATUSES,
    KeyRing,
    cools_every_model,
    rate_limit_reset,
)
from concord.providers.sse import SSEParser, is_error_event, stream_error_status
from concord.translate.anthropic_openai import error_message, is_context_length_message
from concord.translate.replay import anthropic_events, chat_chunks, completion_chunks

T = TypeVar("T")
Call = Callable[[UpstreamRequest, "str | None"], Awaitable[T]]

# The event that ends a complete stream, per wire; EOF before it means the stream was cut short.
_TERMINAL = {"openai": "[DONE]", "anthropic": "message_stop"}
# An OpenAI chunk in which a choice finished: `finish_reason` with a string value, not null. The
# key cannot match inside a JSON string value, where its quotes would be escaped.
_FINISHED = re.compile(r'"finish_reason"\s*:\s*"')
# `send` bounds the whole call with a coarse deadline (`concord.deadlines`), so aiohttp keeps no
# timer of its own: a loop timer set and cancelled per call was about 3% of the call's work.
_NO_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=None, sock_read=None, sock_connect=None)

_URL_CACHE_SIZE = 256  # parsed upstream URLs kept per adapter (Azure's vary with the deployment)
# When every key is cooling down but one comes back within this many seconds, wait for it rather
# than fail: a retry that slept the upstream's Retry-After on the loop's millisecond timers can
# wake a hair before the key's cooldown (the same Retry-After) ends.
KEY_READY_GRACE = 0.05


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or an HTTP date) or `retry-after-ms`."""
    millis = headers.get("retry-after-ms")
    if millis:
        with contextlib.suppress(ValueError):
            return max(float(millis) / 1000, 0.0)
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _encode_body(body: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # e.g. an integer beyond 64 bits, which orjson refuses
        return json.dumps(body).encode()


def _decode_body(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")


def _error_code(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return f"{error.get('code') or ''} {error.get('type') or ''}"
    return ""


def _describe(error: Exception) -> str:
    """A connection failure in words; aiohttp's messages name host and port, never headers."""
    detail = str(error) if isinstance(error, aiohttp.ClientConnectionError) else ""
    return f"{type(error).__name__}: {detail[:200]}" if detail else type(error).__name__


class HTTPProvider:
    """Base of the openai, azure and anthropic adapters: one pooled aiohttp session each."""

    wire: Wire = "openai"
    native: frozenset[UpstreamEndpoint] = frozenset()
    requires_key = True
    # `send` and `stream` hold themselves to `request.timeout` and raise UpstreamTimeout, so the
    # attempt loop adds no timer of its own around them
    bounds_timeout = True

    def __init__(self, spec: ProviderSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.keys = KeyRing(spec.api_keys, spec.key_cooldown)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._urls: dict[str, URL] = {}
        self._base_headers: dict[str | None, dict[str, str]] = {}  # by API key
        # the server refused the `stream_options` the gateway adds (`_stream_without_options`);
        # a new spec (an Azure api_version) builds a new adapter, which asks again
        self.omits_stream_options = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # -- what subclasses define --------------------------------------------------------------

    def url(self, endpoint: UpstreamEndpoint, body: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def auth_headers(self, key: str | None) -> dict[str, str]:
        raise NotImplementedError

    def default_headers(self) -> dict[str, str]:
        """Headers the API needs that a provider's `headers` may override."""
        return {}

    # -- the Provider protocol ---------------------------------------------------------------

    @property
    def available(self) -> bool:
        if not len(self.keys):
            return self.spec.available and not self.requires_key
        return self.keys.available

    def key_status(self) -> list[dict[str, Any]]:
        return self.keys.status()

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        return await self._with_keys(request, self._send_once)

    async def stream(self, request: UpstreamRequest) -> HTTPStream:
        if self.omits_stream_options and _gateway_options(request):
            request = _without_stream_options(request)
        try:
            return await self._with_keys(request, self._open_stream)
        except UpstreamStatusError as error:
            if not _refuses_gateway_options(request, error):
                raise
        return await self._stream_without_options(request)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    # -- internals ---------------------------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        """The pooled session, created on first use inside the running loop (SPEC §2.2).

        It keeps no cookies: a cookie an upstream sets in answer to one client (a CDN's
        `__cf_bm`, say) must not ride along on every other client's calls, and a gateway has no
        use for them. It also spares a cookie-jar lookup per call."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(limit=self.spec.max_connections)
            self._session = aiohttp.ClientSession(
                connector=connector, raise_for_status=False, cookie_jar=aiohttp.DummyCookieJar()
            )
            self._loop = loop
        return self._session

    async def _with_keys(self, request: UpstreamRequest, call: Call[T]) -> T:
        """SPEC §2.2: a key answered 401/403/429 cools down; the next healthy key is tried."""
        if request.api_key is not None:
            return await call(request, request.api_key)
        if not len(self.keys):
            if self.requires_key:
                raise UpstreamStatusError(f"{self.name}: no API key configured", status=401)
            return await call(request, None)
        tried: list[str] = []
        last: UpstreamStatusError | None = None
        model = request.body.get("model")
        model = model if isinstance(model, str) else None  # a 429 benches the key for it only
        while True:
            key = self.keys.first_healthy(exclude=tried, model=model)
            if key is None:
                if last is not None:
                    raise last
                key = await self._key_soon(model)
            try:
                return await call(request, key)
            except UpstreamStatusError as error:
                if error.status not in COOLING_STATUSES:
                    raise
                every = cools_every_model(error.status, error.body)
                self.keys.cool_down(key, error.retry_after, None if every else model)
                tried.append(key)
                last = error

    async def _key_soon(self, model: str | None = None) -> str:
        """Every key is cooling down (for `model`): the one back within KEY_READY_GRACE, once
        waited for (used without asking the clock again, which could still be a hair short), or
        a 429."""
        key, wait = self.keys.soonest(model)
        if wait > KEY_READY_GRACE:
            raise UpstreamStatusError(
                f"{self.name}: every API key is cooling down", status=429, retry_after=wait
            )
        await asyncio.sleep(wait)
        return key

    def _url(self, request: UpstreamRequest) -> URL:
        """`url()` parsed once: aiohttp would parse the same string on every call."""
        text = self.url(request.endpoint, request.body)
        parsed = self._urls.get(text)
        if parsed is None:
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            parsed = self._urls[text] = URL(text)
        return parsed

    def _headers(self, request: UpstreamRequest, key: str | None) -> dict[str, str]:
        """The upstream request's headers; without per-request ones, one dict per key, reused
        (aiohttp copies what it is given and never changes it)."""
        if not request.headers:
            headers = self._base_headers.get(key)
            if headers is None:
                headers = self._base_headers[key] = self._build_headers(request, key)
            return headers
        return self._build_headers(request, key)

    def _build_headers(self, request: UpstreamRequest, key: str | None) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            **self.default_headers(),
            **self.spec.headers,
            **request.headers,
        }
        headers.update(self.auth_headers(key))
        return headers

    def _scrub(self, text: str) -> str:
        """Upstreams sometimes echo the key they rejected: never let it reach a log or client."""
        for key in self.spec.api_keys:
            if key and key in text:
                text = text.replace(key, "***")
        return text

    def status_error(
        self, status: int, headers: Mapping[str, str], raw: bytes
    ) -> UpstreamStatusError:
        body = _decode_body(raw)
        if self.spec.api_keys:
            body = _decode_body(self._scrub(json.dumps(body)).encode())
        detail = self._scrub(error_message(body))
        message = f"{self.name}: upstream answered {status}: {detail[:300]}"
        retry_after = parse_retry_after(headers)
        if retry_after is None and status == 429:  # OpenAI/Azure say it in their own headers
            retry_after = rate_limit_reset(headers)
        context = is_context_length_message(f"{detail} {_error_code(body)}")
        kind = ContextLengthError if status in (400, 413, 422) and context else UpstreamStatusError
        return kind(message, status=status, retry_after=retry_after, body=body)

    async def _send_once(self, request: UpstreamRequest, key: str | None) -> UpstreamResponse:
        url = self._url(request)
        data = _encode_body(request.body)
        task = asyncio.current_task()
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            if task is not None:
                task.cancel()

        deadline = call_later(request.timeout, expire)
        try:
            response = await self.session().post(
                url, data=data, headers=self._headers(request, key), timeout=_NO_TIMEOUT
            )
            try:
                # reading to the end hands the connection back to the pool; the context
                # manager's exit cost about 6% of the call's instructions on top
                raw = await response.read()
            except BaseException:
                response.close()
                raise
            status, headers = response.status, response.headers
        except asyncio.CancelledError:
            # ours only when nobody else cancelled the task too (as `asyncio.timeout` decides)
            if expired and task is not None and task.uncancel() == 0:
                raise self._timed_out(request) from None
            raise
        except TimeoutError as error:
            raise self._timed_out(request) from error
        except aiohttp.ClientError as error:
            raise UpstreamConnectionError(f"{self.name}: {_describe(error)}") from error
        finally:
            deadline.cancel()
        if status >= 400:
            raise self.status_error(status, headers, raw)
        body = _decode_body(raw)
        if not isinstance(body, dict):
            raise UpstreamStatusError(
                f"{self.name}: upstream answered {status} with a body that is not JSON",
                status=502,
            )
        return UpstreamResponse(status=status, body=body, headers=headers)  # read-only view

    def _timed_out(self, request: UpstreamRequest) -> UpstreamTimeout:
        return UpstreamTimeout(f"{self.name}: no answer within {request.timeout:g}s")

    async def _open_stream(self, request: UpstreamRequest, key: str | None) -> HTTPStream:
        url = self._url(request)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=request.timeout, sock_read=request.timeout
        )
        data = _encode_body(request.body)
        response: aiohttp.ClientResponse | None = None
        try:
            async with asyncio.timeout(request.timeout):
                response = await self.session().post(
                    url, data=data, headers=self._headers(request, key), timeout=timeout
                )
                if response.status >= 400:
                    raw = await response.read()
                    raise self.status_error(response.status, response.headers, raw)
                stream = HTTPStream(self.name, self.wire, response, request.timeout)
                unread = await stream.prefetch()
                if unread is None:
                    error = self._first_event_error(stream)
                else:
                    error = self._unstreamed(stream, request.endpoint, unread)
                if error is not None:
                    raise error  # nothing reached the client yet: fail over (SPEC §2.5)
                return stream
        except BaseException as error:
            if response is not None:
                response.close()
            if isinstance(error, TimeoutError):
                message = f"{self.name}: no first event within {request.timeout:g}s"
                raise UpstreamTimeout(message) from error
            if isinstance(error, aiohttp.ClientError):
                message = f"{self.name}: {_describe(error)}"
                raise UpstreamConnectionError(message) from error
            raise

    def _first_event_error(self, stream: HTTPStream) -> UpstreamStatusError | None:
        """The error a 200 stream opened with (`event: error`, or an error object as data)
        as the status error it stands for, or None when its first event is not an error."""
        event = stream.first_event()
        if event is None or not is_error_event(event):
            return None
        raw = event.data.encode()
        status = stream_error_status(_decode_body(raw))
        if status is None and event.event == "error":
            status = 502  # named an error, says nothing we can read
        return None if status is None else self.status_error(status, stream.headers, raw)

    def _unstreamed(
        self, stream: HTTPStream, endpoint: UpstreamEndpoint, raw: bytes
    ) -> UpstreamStatusError | None:
        """A 200 to a streamed request whose body held no event. A server that ignores `stream`
        answers whole: that answer is replayed as the events it stands for, usage included, so
        the client gets its stream and the spend is known; an error object is the status error
        it stands for; anything else (an empty body, a web page) is a 502, which may still fail
        over since nothing reached the client (SPEC §2.5)."""
        body = _decode_body(raw) if raw.strip() else None
        status = stream_error_status(body)
        if status is not None:
            return self.status_error(status, stream.headers, raw)
        events = _answer_events(endpoint, body)
        if events is None:
            what = "a body that is neither events nor an answer" if body else "no events"
            message = f"{self.name}: upstream answered 200 to a stream with {what}"
            return UpstreamStatusError(message, status=502)
        stream.replay(events)
        return None

    async def _stream_without_options(self, request: UpstreamRequest) -> HTTPStream:
        """The server refused the `stream_options` the gateway added (Azure api-versions before
        2024-10-21, older OpenAI-compatible servers): the call once more without them. Once
        that worked, this adapter's streams leave them out from the start, so the refusal is
        not paid for again; such streams bring no usage chunk."""
        stream = await self._with_keys(_without_stream_options(request), self._open_stream)
        self.omits_stream_options = True
        return stream


def _gateway_options(request: UpstreamRequest) -> bool:
    """Whether the body's `stream_options` are the gateway's alone (the client sent none)."""
    return isinstance(request.body.get("stream_options"), GatewayStreamOptions)


def _without_stream_options(request: UpstreamRequest) -> UpstreamRequest:
    body = {name: value for name, value in request.body.items() if name != "stream_options"}
    return replace(request, body=body)


def _refuses_gateway_options(request: UpstreamRequest, error: UpstreamError) -> bool:
    """A 400 naming `stream_options` to a stream that carried only the gateway's: the server
    does not know the field. A client that sent the field itself gets the 400 as it came."""
    if error.status != 400 or not _gateway_options(request):
        return False
    return "stream_options" in error.message or "stream_options" in str(error.body)


def _answer_events(endpoint: UpstreamEndpoint, body: Any) -> list[SSEEvent] | None:
    """The events the complete answer `body` would have been streamed as, in the upstream's
    own format and with its usage (the relay records it, translates, hides what the client did
    not ask for), or None when `body` is not a complete answer of `endpoint`."""
    if not isinstance(body, dict):
        return None
    if endpoint == "messages":
        if body.get("type") != "message" or not isinstance(body.get("content"), list):
            return None
        return [SSEEvent(orjson.dumps(e).decode(), e["type"]) for e in anthropic_events(body)]
    choices = body.get("choices")
    if endpoint == "embeddings" or not isinstance(choices, list) or not choices:
        return None
    field, kind = ("message", dict) if endpoint == "chat" else ("text", str)
    if not all(isinstance(c, dict) and isinstance(c.get(field), kind) for c in choices):
        return None
    chunks = chat_chunks if endpoint == "chat" else completion_chunks
    usage = isinstance(body.get("usage"), dict)
    events = [SSEEvent(orjson.dumps(c).decode()) for c in chunks(body, include_usage=usage)]
    events.append(SSEEvent("[DONE]"))
    return events


class GatewayStreamOptions(dict[str, Any]):
    """`stream_options` the gateway adds to an OpenAI-format stream for usage (SPEC §2.6) when
    the client sent none (`concord.gateway.bridge`): being the gateway's own, an adapter may
    leave them out for a server that refuses the field (`HTTPProvider.stream`)."""

    __slots__ = ()


class HTTPStream:
    """An open upstream event stream. The first event is read before `stream()` returns, so a
    failure before any byte reaches the client can still fail over (SPEC §2.5)."""

    def __init__(
        self, provider: str, wire: Wire, response: aiohttp.ClientResponse, timeout: float
    ) -> None:
        self.status = response.status
        self.headers: Mapping[str, str] = dict(response.headers)
        self._provider = provider
        self._terminal = _TERMINAL[wire]
        # OpenAI wire: watch for a finished choice until one is seen (a clean EOF then ends it)
        self._watch_finish = wire == "openai"
        self._finished = False
        self._response = response
        self._timeout = timeout
        self._parser = SSEParser()
        self._pending: list[SSEEvent] = []
        self._eof = False
        self._complete = False
        self._closed = False

    async def prefetch(self) -> bytes | None:
        """Read until the first event (keep-alive comments do not count) or the end. None once
        an event arrived; else the whole body, in which no event was found (a server that
        ignores `stream` answers JSON), for `HTTPProvider._unstreamed` to judge."""
        unread: list[bytes] = []
        content = self._response.content
        while True:
            try:
                chunk = await content.readany()
            except (TimeoutError, aiohttp.ClientError) as error:
                raise self._read_error(error) from error
            if not chunk:
                self._eof = True
                self._pending = self._parser.finish()
                return None if self._pending else b"".join(unread)
            self._pending = self._parser.feed(chunk)
            if self._pending:
                return None
            unread.append(chunk)

    def first_event(self) -> SSEEvent | None:
        """The first event `prefetch` read, not yet consumed (None when the stream was empty)."""
        return self._pending[0] if self._pending else None

    def replay(self, events: list[SSEEvent]) -> None:
        """Serve `events` as the stream: the body they stand for was read to its end."""
        self._pending = events

    def __aiter__(self) -> AsyncIterator[SSEEvent]:
        return self._iterate()

    async def aclose(self) -> None:
        """Drop the connection: the upstream call is abandoned, not drained (client left)."""
        self._eof = True
        self._closed = True
        self._response.close()

    async def _iterate(self) -> AsyncIterator[SSEEvent]:
        failed = False  # the upstream ended the stream with an error event of its own
        try:
            while True:
                events, self._pending = self._pending, []
                for event in events:
                    if event.data == self._terminal or event.event == self._terminal:
                        self._complete = True
                    elif self._watch_finish and _FINISHED.search(event.data):
                        self._finished = True
                        self._watch_finish = False
                    yield event
                    if is_error_event(event):
                        # nothing after it is relayed, and the client is not kept waiting for a
                        # connection the upstream may hold open
                        failed = True
                        break
                if failed:
                    break
                if self._eof:
                    # a clean close after a finished choice is complete without `[DONE]`
                    self._complete = self._complete or (self._finished and not self._closed)
                    break
                self._pending = await self._read()
        finally:
            if self._complete:
                self._response.release()
            else:
                self._response.close()
        if not self._complete and not self._closed:
            raise UpstreamConnectionError(f"{self._provider}: stream ended before completion")

    async def _read(self) -> list[SSEEvent]:
        try:
            chunk = await self._response.content.readany()
        except TimeoutError as error:
            raise self._read_error(error) from error
        except aiohttp.ClientError as error:
            if self._closed:  # our own aclose() cut the connection: just stop
                self._eof = True
                return []
            raise self._read_error(error) from error
        if not chunk:
            self._eof = True
            return self._parser.finish()
        return self._parser.feed(chunk)

    def _read_error(self, error: Exception) -> UpstreamError:
        """A failed read as the error the attempt loop judges: silence, or a dropped link."""
        if isinstance(error, TimeoutError):
            return UpstreamTimeout(f"{self._provider}: no data for {self._timeout:g}s mid-stream")
        return UpstreamConnectionError(f"{self._provider}: stream dropped ({type(error).__name__})")
