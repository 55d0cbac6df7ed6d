"""One request through the gateway (SPEC §1):

    auth → parse → decide → guards → attempts → provider → translate → respond → record

`handle()` reads the current graph once and uses it to the end, so a reload never changes a
request half-way (SPEC §4). Every answer, error or not, carries the x-request-id and x-concord-*
headers (SPEC §3), and every request ends in exactly one usage record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response

from concord.deadlines import call_later
from concord.engine.graph import Attempt, Decision, Endpoint, Graph, RequestContext
from concord.gateway.attempts import (
    AttemptsFailed,
    Job,
    Overhead,
    Served,
    charged,
    usage_cost,
)
from concord.gateway.auth import Principal
from concord.gateway.bridge import Relay
from concord.gateway.errors import (
    ClientWire,
    GatewayError,
    ModelNotFound,
    PolicyRejected,
    ShuttingDown,
)
from concord.gateway.guards import Admission
from concord.gateway.parse import (
    apply_params,
    build_context,
    parse_json,
    read_body,
    request_headers,
    validate,
)
from concord.gateway.record import UsageRecord
from concord.gateway.respond import (
    SSE_HEADERS,
    EventStreamResponse,
    JSONAnswer,
    StreamState,
    cancellation_handled,
    error_response,
    json_response,
)
from concord.gateway.tokens import estimate_answer
from concord.translate.anthropic_openai import uses_legacy_functions
from concord.translate.collect import collector_for
from concord.translate.replay import replay_stream, with_model
from concord.translate.usage import Usage

if TYPE_CHECKING:
    from concord.gateway.app import GatewayState
    from concord.gateway.limits import ConcurrencyLimiter

log = logging.getLogger("concord.gateway")


class Call:
    """What one request accumulated: for its headers and its usage record."""

    __slots__ = (
        "admission",
        "answered_by",
        "calls",
        "ctx",
        "decision",
        "downgraded",
        "endpoint",
        "graph",
        "legacy_functions",
        "principal",
        "request_body",
        "request_id",
        "response_body",
        "served",
        "spent",
        "started",
        "wall",
        "wire",
    )

    def __init__(self, graph: Graph, endpoint: Endpoint, request_id: str) -> None:
        self.graph = graph
        self.endpoint = endpoint
        self.wire: ClientWire = "anthropic" if endpoint == "messages" else "openai"
        self.request_id = request_id
        self.started = time.monotonic()
        self.wall = time.time()
        self.principal: Principal | None = None
        self.ctx: RequestContext | None = None
        self.decision: Decision | None = None
        self.served: Served | None = None
        self.spent: Sequence[Overhead] = ()  # the attempt loop's, once it runs
        self.downgraded: str | None = None
        self.admission: Admission | None = None
        self.answered_by: Attempt | None = None  # an upstream that refused the request itself
        self.calls = 0
        self.legacy_functions = False  # a chat request with OpenAI's deprecated `functions`
        self.request_body: bytes | None = None  # kept only with `server.log_bodies`
        self.response_body: bytes | None = None

    def headers(self) -> dict[str, str]:
        """SPEC §3 response headers; the parts not yet known are left out."""
        return {name.decode(): value.decode("latin-1") for name, value in self.raw_headers()}

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """`headers()` as the server sends them: lower-case names and values as bytes."""
        admission = self.admission
        headers = [
            (b"x-request-id", self.request_id.encode("latin-1")),
            (b"x-concord-config", self.graph.version.encode()),
            (b"x-concord-cache", (admission.cache_status if admission else "bypass").encode()),
            (b"x-concord-attempts", str(self.calls).encode()),
        ]
        decision = self.decision
        model = provider = None
        if decision is not None:
            headers.append((b"x-concord-route", (decision.route or "-").encode()))
            model = decision.model
        answered = self.served.attempt if self.served is not None else self.answered_by
        if answered is not None:
            model, provider = answered.model, answered.target.provider
        elif admission is not None and admission.cached is not None:
            hit = admission.cached  # SPEC §2.5: who answered originally
            model, provider = hit.model or model, hit.provider or provider
        if model:
            headers.append((b"x-concord-model", model.encode()))
        if provider:
            headers.append((b"x-concord-provider", provider.encode()))
        if self.downgraded:
            headers.append((b"x-concord-downgraded", self.downgraded.encode()))
        if self.wire == "anthropic":  # where Anthropic's SDK reads it (`message._request_id`)
            headers.append((b"request-id", headers[0][1]))
        return headers

    def record(
        self,
        status: int,
        usage: Usage | None = None,
        *,
        error: str | None = None,
        first_byte_at: float | None = None,
    ) -> UsageRecord:
        principal = self.principal
        served = self.served
        hit = self.admission.cached if self.admission is not None else None
        usage = usage or Usage()
        cost = usage_cost(self.graph.models, served.attempt.model, usage) if served else 0.0
        if self.spent:  # summaries made on the way: paid for upstream however the request ended
            usage, cost = charged(usage, cost, self.spent, self.graph.models)
        ctx = self.ctx
        # a request that failed after routing counts against the model it was routed to
        decided = self.decision.model if self.decision is not None else None
        return UsageRecord(
            request_id=self.request_id,
            time=self.wall,
            workspace=principal.workspace if principal else "default",
            key=principal.key if principal else None,
            key_id=principal.key_id if principal else None,
            user=ctx.user if ctx else (principal.user if principal else None),
            requested_model=ctx.model if ctx else "",
            model=served.attempt.model if served else (hit.model if hit else decided),
            provider=served.attempt.target.provider if served else (hit.provider if hit else None),
            target=served.attempt.target.id if served else None,
            route=self.decision.route if self.decision else None,
            endpoint=self.endpoint,
            status=status,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_tokens=usage.cached_tokens,
            cost_usd=cost,  # a cache hit costs nothing: no upstream was called
            cache_hit=hit is not None,
            cache=self.admission.cache_status if self.admission else None,
            latency_ms=(time.monotonic() - self.started) * 1000,
            ttft_ms=(first_byte_at - self.started) * 1000 if first_byte_at else None,
            attempts=self.calls,
            stream=bool(ctx and ctx.stream),
            error_type=error,
            budgets=_charged(self.graph, self.decision),
            request_body=self.request_body,
            response_body=self.response_body,
        )


def _charged(graph: Graph, decision: Decision | None) -> str | None:
    """The `budgets[]` with a `when` this request counts against, as the usage log keeps them
    (",a,b,"): at start-up their spend is rebuilt from the rows that name them (SPEC §2.6)."""
    conditional = graph.conditional_budgets
    if not conditional or decision is None:
        return None
    names = [rule.name for rule in decision.budgets if rule.name in conditional]
    return f",{','.join(names)}," if names else None


def new_request_id() -> str:
    """`req_` and 32 hex digits, as a uuid4 would give, without a getrandom() syscall per request:
    an id must be unique, not unguessable (random reseeds itself in forked workers)."""
    return "req_" + _bits(128).to_bytes(16, "big").hex()  # as f"{n:032x}", at half the cost


_bits = random.getrandbits


async def handle(state: GatewayState, request: Request, endpoint: Endpoint) -> Response:
    graph = state.graph  # SPEC §4: read once; this request finishes on this graph
    headers = request_headers(request)
    call = Call(graph, endpoint, headers.get("x-request-id") or new_request_id())
    limiter = state.limiter  # released on the one acquired, even if a reload swaps it (SPEC §4)
    holding = False
    try:
        call.principal = await state.authenticate(graph, headers)
        raw = await read_body(request, graph.server.max_body, headers)
        if graph.server.log_bodies:  # SPEC §7: prompts reach the access log only when asked
            call.request_body = raw
        body = parse_json(raw)
        validate(endpoint, body)
        if "functions" in body:  # answered with `function_call`, as OpenAI answers it
            call.legacy_functions = endpoint == "chat" and uses_legacy_functions(body)
        await limiter.acquire()
        holding = True
        ctx = build_context(endpoint, body, call.principal, headers)
        ctx = call.ctx = await state.guards.prepare(graph, ctx)  # budget_used, when routed on
        unavailable = state.pool.unavailable()
        runtime = state.runtime.view(unavailable, unavailable.targets)
        decision = call.decision = graph.decide(ctx, runtime)
        _check(decision, ctx)
        sent = apply_params(body, decision.params)
        # SPEC §1 guards: rate limits, budgets (maybe a downgrade), cache lookup
        admission = call.admission = await state.guards.admit(graph, ctx, decision, sent, runtime)
        call.downgraded = admission.downgraded_from  # SPEC §2.6: x-concord-downgraded: <from>
        if admission.decision is not decision:
            decision = call.decision = admission.decision
            sent = apply_params(body, decision.params)
        if admission.cached is not None:
            return await _replay(state, call, body)
        job = Job(
            endpoint=endpoint,
            body=sent,
            ctx=ctx,
            decision=decision,
            deadline=call.started + graph.server.request_timeout,
            stream=ctx.stream and endpoint != "embeddings",
            models=graph.models,
        )
        call.spent = job.spent
        served = call.served = await _unless_client_leaves(request, state.attempts.run(job))
        call.calls = served.calls
        if served.stream is not None:
            response = _stream(state, call, served, body, limiter)
            holding = False  # the stream releases the slot when it ends
            return response
        return await _answer(state, call, served)
    except GatewayError as error:
        if isinstance(error, AttemptsFailed):
            call.calls = error.calls
            call.answered_by = error.answered_by
        if call.request_body is not None:
            call.response_body = error.render(call.wire)
        _finish(state, call, call.record(error.status, error=error.kind))
        return error_response(error, call.wire, call.headers())
    except Exception:
        log.exception("unhandled error serving %s", call.request_id)
        error = GatewayError("Internal gateway error.")
        _finish(state, call, call.record(500, error="internal"))
        return error_response(error, call.wire, call.headers())
    except asyncio.CancelledError:  # the server's shutdown grace ran out before the answer
        cancellation_handled()  # answered, not raised: the server would log it as a crash
        error = ShuttingDown()
        _finish(state, call, call.record(error.status, error=error.kind))
        return error_response(error, call.wire, call.headers())
    finally:
        if holding:
            limiter.release()


class ClientGone(GatewayError):
    """The client hung up before the answer (nginx's 499); nobody reads this error."""

    status = 499
    code = "client_disconnected"


# Seconds a non-streamed call runs before the gateway starts listening for the client hanging
# up. A quick answer never pays for the listener task; a client that left earlier is still seen
# at once then, since the server reports a past disconnect to the first `receive()`.
LISTEN_AFTER = 0.5


async def _unless_client_leaves(request: Request, work: Awaitable[Served]) -> Served:
    """Await the attempts, cancelling them (and the upstream call) if the client disconnects.

    The body has been read, so the next ASGI message can only be `http.disconnect`: after
    `LISTEN_AFTER`, one listener task waits for it and cancels this task while the attempts are
    still running.
    """
    here = asyncio.current_task()
    listener: asyncio.Future[object] | None = None
    waiting = True

    def hang_up(done: asyncio.Future[object]) -> None:
        if waiting and here is not None and not done.cancelled():
            here.cancel()

    def listen() -> None:
        nonlocal listener
        listener = asyncio.ensure_future(request.receive())
        listener.add_done_callback(hang_up)

    timer = call_later(LISTEN_AFTER, listen)  # coarse: nearly every call ends long before
    try:
        return await work
    except asyncio.CancelledError:
        heard = listener is not None and listener.done() and not listener.cancelled()
        if here is not None and heard:
            here.uncancel()
            raise ClientGone("The client closed the connection.") from None
        raise
    finally:
        waiting = False
        timer.cancel()
        if listener is not None:
            listener.cancel()


def _check(decision: Decision, ctx: RequestContext) -> None:
    rejection = decision.rejection
    if rejection is not None:
        raise PolicyRejected(rejection.message, status=rejection.status, code=rejection.code)
    if decision.not_found:
        raise ModelNotFound.named(ctx.model)


async def _answer(state: GatewayState, call: Call, served: Served) -> Response:
    assert served.response is not None and call.ctx is not None
    upstream_body = served.response.body
    usage = served.bridge.usage(upstream_body)
    if not usage.input_tokens and not usage.output_tokens:  # the upstream reported none
        usage = Usage(call.ctx.input_tokens, estimate_answer(upstream_body))
    answer = served.bridge.response(
        upstream_body, call.ctx.model, legacy_functions=call.legacy_functions
    )
    content = orjson.dumps(answer)
    if call.admission is not None:  # SPEC §2.5: keep it for the next identical request
        attempt = served.attempt
        state.guards.store(call.admission, content, usage, attempt.model, attempt.target.provider)
    if call.request_body is not None:
        call.response_body = content
    _finish(state, call, call.record(200, usage))
    return JSONAnswer.raw(content, 200, call.raw_headers())


async def _replay(state: GatewayState, call: Call, body: dict) -> Response:
    """Answer from the cache (SPEC §2.5), as a stream when the client asked for one."""
    assert call.admission is not None and call.admission.cached is not None
    assert call.ctx is not None
    hit = call.admission.cached
    content, parsed = with_model(hit.body, call.ctx.model)
    usage = Usage(
        input_tokens=int(hit.usage.get("input_tokens", 0)),
        output_tokens=int(hit.usage.get("output_tokens", 0)),
        cached_tokens=int(hit.usage.get("cached_tokens", 0)),
    )
    if call.ctx.stream and call.endpoint != "embeddings" and parsed is not None:
        events = replay_stream(call.endpoint, parsed, include_usage=_include_usage(body))
        # recorded as any stream is: its first byte leaves now, and no body is logged for it
        _finish(state, call, call.record(200, usage, first_byte_at=time.monotonic()))
        headers = call.headers()
        headers.update(SSE_HEADERS)
        return Response(events, 200, headers, media_type="text/event-stream")
    if call.request_body is not None:
        call.response_body = content
    _finish(state, call, call.record(200, usage))
    return JSONAnswer.raw(content, 200, call.raw_headers())


def _include_usage(body: dict) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _stream(
    state: GatewayState, call: Call, served: Served, body: dict, limiter: ConcurrencyLimiter
) -> Response:
    assert served.stream is not None and call.ctx is not None and call.decision is not None
    decision = call.decision
    include_usage = _include_usage(body)
    relay = served.bridge.relay(
        call.ctx.model,
        include_usage=include_usage,
        input_tokens=call.ctx.input_tokens,
        legacy_functions=call.legacy_functions,
    )
    admission = call.admission
    if admission is not None and admission.cache_key is not None:
        relay.collector = collector_for(served.bridge.upstream)  # SPEC §2.5: cache it too

    async def on_close(stream: StreamState) -> None:
        try:
            with contextlib.suppress(Exception):  # never at the cost of the usage record
                state.attempts.stream_ended(served, decision, stream.upstream_error)
            if relay.collector is not None and stream.status == 200:
                _store_stream(state, call, served, relay)
            usage = relay.usage
            if not usage.input_tokens and not usage.output_tokens:  # the upstream reported none
                usage = _stream_estimate(call.ctx, relay)
            record = call.record(
                stream.status, usage, error=stream.error, first_byte_at=stream.first_byte_at
            )
            _finish(state, call, record)
        finally:
            limiter.release()

    return EventStreamResponse(served.stream, relay, call.wire, call.raw_headers(), on_close)  # type: ignore[return-value]


def _stream_estimate(ctx: RequestContext, relay: Relay) -> Usage:
    """A stream whose upstream reported no usage: the prompt as estimated for routing, and the
    answer's text when it was collected (for the cache); spend is never silently zero."""
    collected = relay.collector.result() if relay.collector is not None else None
    return Usage(ctx.input_tokens, estimate_answer(collected) if collected else 0)


def _store_stream(state: GatewayState, call: Call, served: Served, relay: Relay) -> None:
    """A streamed answer that ended properly is stored as the answer it stands for, so the next
    identical request is a hit, streamed or not."""
    assert relay.collector is not None and call.admission is not None and call.ctx is not None
    upstream_body = relay.collector.result()
    if upstream_body is None:
        return
    try:
        answer = served.bridge.response(
            upstream_body, call.ctx.model, legacy_functions=call.legacy_functions
        )
        content = orjson.dumps(answer)
    except Exception:  # an answer the translation cannot rebuild is simply not cached
        log.debug("streamed answer of %s not cached", call.request_id, exc_info=True)
        return
    attempt = served.attempt
    state.guards.store(call.admission, content, relay.usage, attempt.model, attempt.target.provider)


def _finish(state: GatewayState, call: Call, record: UsageRecord) -> None:
    state.recorder.record(record)
    if call.admission is not None:
        try:
            state.guards.settle(call.admission, record)
        except Exception:
            log.exception("guards.settle failed for %s", call.request_id)


async def list_models(state: GatewayState, request: Request) -> Response:
    """GET /v1/models: the catalog models the caller's workspace may see (SPEC §3), as an
    OpenAI list, or as Anthropic's model page for Anthropic clients (`anthropic-version`)."""
    graph = state.graph
    call = _models_call(graph, request)
    try:
        principal = await state.authenticate(graph, request.headers)
    except GatewayError as error:
        return error_response(error, call.wire, call.headers())
    names = graph.visible_models(principal.workspace)
    data = [_model_object(call.wire, graph, name, state.started_at) for name in names]
    if call.wire == "anthropic":  # every visible model on one page
        body: dict[str, object] = {
            "data": data,
            "has_more": False,
            "first_id": names[0] if names else None,
            "last_id": names[-1] if names else None,
        }
    else:
        body = {"object": "list", "data": data}
    return json_response(orjson.dumps(body), 200, _models_headers(call))


async def retrieve_model(state: GatewayState, request: Request, model_id: str) -> Response:
    """GET /v1/models/{id}: one model exactly as `GET /v1/models` lists it, or 404
    `model_not_found` when it is not in the catalog or not visible to the caller's workspace."""
    graph = state.graph
    call = _models_call(graph, request)
    try:
        principal = await state.authenticate(graph, request.headers)
        if model_id not in graph.visible_models(principal.workspace):
            raise ModelNotFound.named(model_id)
    except GatewayError as error:
        return error_response(error, call.wire, call.headers())
    body = _model_object(call.wire, graph, model_id, state.started_at)
    return json_response(orjson.dumps(body), 200, _models_headers(call))


def _models_call(graph: Graph, request: Request) -> Call:
    """A `/v1/models` request: Anthropic's wire format when the client sends `anthropic-version`."""
    call = Call(graph, "chat", request.headers.get("x-request-id") or new_request_id())
    if "anthropic-version" in request.headers:
        call.wire = "anthropic"
    return call


def _models_headers(call: Call) -> dict[str, str]:
    headers = {"x-request-id": call.request_id, "x-concord-config": call.graph.version}
    if call.wire == "anthropic":
        headers["request-id"] = call.request_id
    return headers


def _model_object(
    wire: ClientWire, graph: Graph, name: str, started_at: float
) -> dict[str, object]:
    """One catalog model as the client's SDK reads it: OpenAI's `Model`, Anthropic's `ModelInfo`."""
    if wire == "anthropic":
        return {
            "type": "model",
            "id": name,
            "display_name": name,
            "created_at": datetime.fromtimestamp(started_at, UTC)
            .isoformat()
            .replace("+00:00", "Z"),
            "lifecycle": "active",
            "max_input_tokens": graph.models[name].context_window,
        }
    return {"id": name, "object": "model", "created": int(started_at), "owned_by": "concord"}
