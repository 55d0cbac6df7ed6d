"""A fake upstream LLM server speaking the exact OpenAI, Azure OpenAI and Anthropic wire formats.

Async tests:

    async with FakeUpstream() as up:
        spec = ProviderSpec(name="openai", type="openai", base_url=up.openai_url, api_keys=("k",))
        up.script("gpt-4o", [Fault(status=429, retry_after=2), Fault(reply="hello")])
        ...
        assert up.requests[0].headers["authorization"] == "Bearer k"

Sync tests (e.g. a Starlette TestClient whose loop runs in another thread):

    up = FakeUpstream.start_in_thread()
    try: ... up.url ...
    finally: up.stop()

Endpoints: POST /v1/chat/completions, /v1/completions, /v1/embeddings (OpenAI; base_url =
`up.openai_url`), /v1/messages (Anthropic; base_url = `up.url`), and
/openai/deployments/{deployment}/{chat/completions,completions,embeddings}?api-version=...
(Azure; base_url = `up.url`). Every request is recorded in `up.requests`.

Default behaviour is the mock provider's (`concord.providers.mock`): reply `Echo: <last user
text>`, a tool call when `tool_choice` forces one, tokens = whitespace-separated words of the
input and of the reply, so tests can assert exact usage. It answers one choice whatever `n`
says (the mock answers `n`): a test of several choices drives the mock. `up.script(key, [...])`
queues one `Fault` per call for requests whose model (or Azure deployment) or path equals `key`
("*" = any).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from concord.providers.base import SSEEvent, UpstreamEndpoint
from concord.providers.mock import (
    Reply,
    ToolCall,
    anthropic_message_events,
    anthropic_message_response,
    completion_chunks,
    completion_response,
    compose_reply,
    embedding_response,
    input_tokens,
    openai_chat_chunks,
    openai_chat_response,
)
from concord.providers.sse import encode_event
from concord.translate.usage import Usage

OPENAI_CONTEXT_MESSAGE = (
    "This model's maximum context length is 128000 tokens. However, your messages resulted in "
    "200000 tokens. Please reduce the length of the messages."
)
ANTHROPIC_CONTEXT_MESSAGE = "prompt is too long: 210000 tokens > 200000 maximum"
UNKNOWN_STREAM_OPTIONS = "Unrecognized request argument supplied: stream_options"


@dataclass(frozen=True)
class Fault:
    """What the fake does for one call; the defaults answer normally.

    - `status`: answer with this HTTP status and an error body in the provider's format
      (`message`, `error_type` and `code` fill it; sensible defaults per status; `error_extra`
      adds fields to an OpenAI-format error object).
    - `retry_after`: a `Retry-After` header value (seconds, or an HTTP date string).
    - `delay`: seconds to wait before sending the response headers.
    - `chunk_delay`: seconds to wait before each stream event after the first.
    - `drop_after`: streams only: cut the connection after this many events.
    - `end_after`: streams only: end the stream cleanly (as if complete) after this many events.
    - `omit_done`: OpenAI streams only: leave out the final `data: [DONE]`, as some
      OpenAI-compatible servers do, and end the stream cleanly after the last chunk.
    - `stream_error`: streams only: answer 200, then send as the first event an error of this
      status in the provider's format (`message`, `error_type` fill it), and end the stream.
    - `context_length`: a 400 context-length error as the provider words it.
    - `reject_stream_options`: OpenAI format only: a request that carries `stream_options` gets
      the 400 Azure api-versions before 2024-10-21 and older OpenAI-compatible servers give
      ("Unrecognized request argument supplied: stream_options"); one without it is answered.
    - `ignore_stream`: answer `stream: true` with the complete JSON answer, as a server that does
      not stream does (status 200, `application/json`).
    - `raw_body`: answer 200 with exactly this body (`text/html`), whatever was asked.
    - `reply`, `tool_call` (+ `tool_arguments`): a fixed answer instead of the echo.
    - `usage`: exact usage numbers to report (`Usage.input_tokens` includes cached ones).
    """

    status: int | None = None
    message: str | None = None
    error_type: str | None = None
    code: str | None = None
    error_extra: dict[str, Any] | None = None  # more fields in an OpenAI-format error object
    retry_after: float | str | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    drop_after: int | None = None
    end_after: int | None = None
    omit_done: bool = False
    stream_error: int | None = None
    context_length: bool = False
    reject_stream_options: bool = False
    ignore_stream: bool = False
    raw_body: str | None = None
    reply: str | None = None
    tool_call: str | None = None
    tool_arguments: str = "{}"
    usage: Usage | None = None


NORMAL = Fault()


@dataclass
class RecordedRequest:
    """One request the fake received; header names are lower-case."""

    path: str
    headers: dict[str, str]
    json: Any
    query: dict[str, str] = field(default_factory=dict)
    client_port: int | None = None  # the caller's port: one per pooled connection

    @property
    def model(self) -> str | None:
        body = self.json if isinstance(self.json, dict) else {}
        return body.get("model")


_OPENAI_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakeUpstream:
    """The fake server; see the module docstring."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.disconnects = 0  # streams the client abandoned before the end
        # a `Set-Cookie` value put on every answer, as Cloudflare-fronted providers do
        self.set_cookie: str | None = None
        self.port = 0
        self._scripts: dict[str, deque[Fault]] = {}
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        return f"{self.url}/v1"

    async def start(self) -> FakeUpstream:
        app = web.Application()
        app.on_response_prepare.append(self._add_cookie)
        app.router.add_post("/v1/chat/completions", self._openai("chat"))
        app.router.add_post("/v1/completions", self._openai("completions"))
        app.router.add_post("/v1/embeddings", self._openai("embeddings"))
        app.router.add_post("/v1/messages", self._anthropic)
        base = "/openai/deployments/{deployment}"
        app.router.add_post(base + "/chat/completions", self._openai("chat"))
        app.router.add_post(base + "/completions", self._openai("completions"))
        app.router.add_post(base + "/embeddings", self._openai("embeddings"))
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=0.1
        )
        await self._runner.setup()
        self.port = _free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeUpstream:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @classmethod
    def start_in_thread(cls) -> FakeUpstream:
        """A fake served by its own event loop in a daemon thread; call `.stop()` after."""
        fake = cls()
        ready = threading.Event()
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(fake.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(fake.aclose())
            loop.close()

        fake._loop = loop
        fake._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        fake._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake upstream did not start")
        return fake

    def stop(self) -> None:
        """Stop a fake started with `start_in_thread`."""
        if self._loop is None or self._thread is None:
            raise RuntimeError("stop() is for start_in_thread(); use `async with` otherwise")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None

    # -- scripting ---------------------------------------------------------------------------

    def script(self, key: str, behaviours: Iterable[Fault]) -> None:
        """Queue one behaviour per call for requests whose model or path is `key` ("*": any)."""
        self._scripts.setdefault(key, deque()).extend(behaviours)

    def reset(self) -> None:
        """Forget recorded requests and pending scripts."""
        self.requests.clear()
        self._scripts.clear()

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    def _next(self, model: str | None, path: str) -> Fault:
        for key in (model, path, "*"):
            queue = self._scripts.get(key) if key else None
            if queue:
                return queue.popleft()
        return NORMAL

    # -- handlers ----------------------------------------------------------------------------

    async def _add_cookie(self, request: web.Request, response: web.StreamResponse) -> None:
        if self.set_cookie is not None:
            response.headers["Set-Cookie"] = self.set_cookie

    async def _record(self, request: web.Request) -> tuple[dict[str, Any], Fault]:
        try:
            body = await request.json()
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in request.headers.items()}
        peer = request.transport.get_extra_info("peername") if request.transport else None
        port = peer[1] if peer else None
        self.requests.append(
            RecordedRequest(request.path, headers, body, dict(request.query), port)
        )
        body = body if isinstance(body, dict) else {}
        model = request.match_info.get("deployment") or body.get("model")
        behaviour = self._next(model, request.path)
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        return body, behaviour

    def _openai(self, endpoint: UpstreamEndpoint) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            body, behaviour = await self._record(request)
            if behaviour.raw_body is not None:
                return web.Response(text=behaviour.raw_body, content_type="text/html")
            if behaviour.stream_error and body.get("stream"):
                return await self._stream(request, [_openai_error_event(behaviour)], NORMAL)
            if behaviour.reject_stream_options and "stream_options" in body:
                return _openai_error(Fault(status=400, message=UNKNOWN_STREAM_OPTIONS))
            if behaviour.status or behaviour.context_length:
                return _openai_error(behaviour)
            model = str(body.get("model") or request.match_info.get("deployment") or "")
            if endpoint == "embeddings":
                return web.json_response(embedding_response(model, body))
            reply, usage = _answer(endpoint, body, behaviour)
            if not body.get("stream") or behaviour.ignore_stream:
                build = openai_chat_response if endpoint == "chat" else completion_response
                return web.json_response(build(model, reply, usage))
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = openai_chat_chunks if endpoint == "chat" else completion_chunks
            events = chunks(model, reply, usage, include_usage=include)
            return await self._stream(request, events, behaviour)

        return handle

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        body, behaviour = await self._record(request)
        if behaviour.raw_body is not None:
            return web.Response(text=behaviour.raw_body, content_type="text/html")
        if behaviour.stream_error and body.get("stream"):
            return await self._stream(request, [_anthropic_error_event(behaviour)], NORMAL)
        if behaviour.status or behaviour.context_length:
            return _anthropic_error(behaviour)
        model = str(body.get("model") or "")
        reply, usage = _answer("messages", body, behaviour)
        if not body.get("stream") or behaviour.ignore_stream:
            return web.json_response(anthropic_message_response(model, reply, usage))
        events = anthropic_message_events(model, reply, usage)
        return await self._stream(request, events, behaviour)

    async def _stream(
        self, request: web.Request, events: list[SSEEvent], behaviour: Fault
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if behaviour.omit_done:
            events = [event for event in events if event.data != "[DONE]"]
        if behaviour.end_after is not None:
            events = events[: behaviour.end_after]
        for position, event in enumerate(events):
            if behaviour.drop_after is not None and position >= behaviour.drop_after:
                # Cut the socket mid-body: the client sees an incomplete chunked response.
                if request.transport is not None:
                    request.transport.abort()
                return response
            if position and behaviour.chunk_delay:
                await asyncio.sleep(behaviour.chunk_delay)
            try:
                await response.write(encode_event(event))
            except ConnectionResetError:
                self.disconnects += 1
                return response  # the client went away
        await response.write_eof()
        return response


def _answer(
    endpoint: UpstreamEndpoint, body: dict[str, Any], behaviour: Fault
) -> tuple[Reply, Usage]:
    if behaviour.tool_call:
        reply = Reply(tool_call=ToolCall(behaviour.tool_call, behaviour.tool_arguments))
    else:
        reply = compose_reply(endpoint, body, behaviour.reply)
    usage = behaviour.usage or Usage(input_tokens(endpoint, body), reply.output_tokens)
    return reply, usage


def _headers(behaviour: Fault) -> dict[str, str]:
    return {"Retry-After": str(behaviour.retry_after)} if behaviour.retry_after is not None else {}


def _openai_error(behaviour: Fault) -> web.Response:
    status = behaviour.status or 400
    kind, code = _OPENAI_TYPES.get(status, ("server_error", None))
    message = behaviour.message or f"fake upstream error {status}"
    param = None
    if behaviour.context_length:
        kind, code, param = "invalid_request_error", "context_length_exceeded", "messages"
        message = behaviour.message or OPENAI_CONTEXT_MESSAGE
    error = {
        "message": message,
        "type": behaviour.error_type or kind,
        "param": param,
        "code": behaviour.code or code,
        **(behaviour.error_extra or {}),
    }
    return web.json_response({"error": error}, status=status, headers=_headers(behaviour))


def _anthropic_error(behaviour: Fault) -> web.Response:
    status = behaviour.status or 400
    kind = _ANTHROPIC_TYPES.get(status, "api_error")
    message = behaviour.message or f"fake upstream error {status}"
    if behaviour.context_length:
        kind, message = "invalid_request_error", behaviour.message or ANTHROPIC_CONTEXT_MESSAGE
    body = {"type": "error", "error": {"type": behaviour.error_type or kind, "message": message}}
    return web.json_response(body, status=status, headers=_headers(behaviour))


def _openai_error_event(behaviour: Fault) -> SSEEvent:
    """`data: {"error": {...}}`: how OpenAI-compatible APIs report an error inside a stream."""
    status = behaviour.stream_error or 500
    kind, code = _OPENAI_TYPES.get(status, ("server_error", None))
    error = {
        "message": behaviour.message or f"fake upstream stream error {status}",
        "type": behaviour.error_type or kind,
        "param": None,
        "code": behaviour.code or code,
    }
    return SSEEvent(data=json.dumps({"error": error}))


def _anthropic_error_event(behaviour: Fault) -> SSEEvent:
    """`event: error` with `{"type": "error", "error": {...}}`, as Anthropic streams report one."""
    status = behaviour.stream_error or 529
    error = {
        "type": behaviour.error_type or _ANTHROPIC_TYPES.get(status, "api_error"),
        "message": behaviour.message or f"fake upstream stream error {status}",
    }
    return SSEEvent(data=json.dumps({"type": "error", "error": error}), event="error")
