"""The attempt loop: retries, fallbacks, circuit breakers, context overflow (SPEC §2.5).

`AttemptRunner.run(job)` walks `Decision.attempts` in order. Each target is tried up to `tries`
times, with exponential backoff and full jitter capped at `backoff.max`, or the upstream's
Retry-After when it gave one; only failures listed in the retry policy are retried. A client error
(400, 404, 422) is returned at once, except a context-length error, which is handled by the route's
`context_overflow`. Every call gets `decision.timeout`, and the whole loop the request deadline.

A stream counts as served once the provider opened it (its first event already read), so a stream
may fail over only before any byte reached the client.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from concord.engine.graph import (
    Attempt,
    CatalogModel,
    Decision,
    Endpoint,
    RequestContext,
    RetryPolicy,
)
from concord.gateway.bridge import Bridge, bridge_for
from concord.gateway.errors import GatewayError, UpstreamFailed
from concord.gateway.overflow import summarize, truncate
from concord.gateway.runtime import RuntimeState
from concord.providers.base import (
    ContextLengthError,
    Provider,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamRequest,
    UpstreamResponse,
    UpstreamStatusError,
    UpstreamStream,
    UpstreamTimeout,
)
from concord.providers.keys import key_ring
from concord.translate.anthropic_openai import error_message
from concord.translate.usage import Usage

JSON = dict[str, Any]
CLIENT_ERRORS = frozenset({400, 404, 422})  # SPEC §2.5: returned at once, never retried
CLIENT_CAUSED = CLIENT_ERRORS | {413}
# Client headers an upstream of the same wire needs to honour the request as sent (SPEC §3: the
# SDKs work unchanged): Anthropic's beta features are switched on by a header, not the body.
FORWARDED_HEADERS: dict[str, tuple[str, ...]] = {"anthropic": ("anthropic-beta",)}
_NO_HEADERS: dict[str, str] = {}


class ProviderSource(Protocol):
    def get(self, name: str) -> Provider: ...


class AttemptObserver(Protocol):
    """Counting hooks for metrics and passive health (SPEC §7); must not block."""

    def called(self, attempt: Attempt, seconds: float, error: UpstreamError | None) -> None: ...

    def retried(self, attempt: Attempt) -> None: ...

    def fell_back(self, from_model: str, to_model: str) -> None: ...


class NullObserver:
    def called(self, attempt: Attempt, seconds: float, error: UpstreamError | None) -> None:
        return None

    def retried(self, attempt: Attempt) -> None:
        return None

    def fell_back(self, from_model: str, to_model: str) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Overhead:
    """A call made on the way to an answer (a context-overflow summary): it was paid for upstream
    whatever came of the request, at the price of the catalog model that made it."""

    model: str
    usage: Usage

    def cost(self, models: Mapping[str, CatalogModel]) -> float:
        return usage_cost(models, self.model, self.usage)


def usage_cost(models: Mapping[str, CatalogModel], model: str, usage: Usage) -> float:
    """USD for `usage` at catalog model `model`'s price; 0 when it has no price."""
    catalog = models.get(model)
    price = catalog.price if catalog is not None else None
    if price is None:
        return 0.0
    return price.cost(usage.input_tokens, usage.output_tokens, usage.cached_tokens)


@dataclass(slots=True)
class Job:
    """What one request asks of the attempt loop."""

    endpoint: Endpoint
    body: JSON  # the client's body, route params applied
    ctx: RequestContext
    decision: Decision
    deadline: float  # time.monotonic() by which everything must be done
    stream: bool = False
    # calls made on the way that used tokens (context-overflow summaries): paid for upstream
    # however the request ends, answered, failed or abandoned by its client
    spent: list[Overhead] = field(default_factory=list)
    # the catalog: an upstream that requires an output limit the client did not set (Anthropic)
    # gets the model's `max_output_tokens`
    models: Mapping[str, CatalogModel] = field(default_factory=dict)


@dataclass(slots=True)
class Served:
    """The attempt that answered, and its answer (a response or an open stream)."""

    attempt: Attempt
    bridge: Bridge
    response: UpstreamResponse | None = None
    stream: UpstreamStream | None = None
    calls: int = 0
    trail: list[str] = field(default_factory=list)
    opened_in: float = 0.0  # seconds the upstream took to answer (a stream: its first event)


class AttemptsFailed(UpstreamFailed):
    """Every attempt failed; `calls` upstream calls were made."""

    def __init__(self, message: str, *, status: int, calls: int, code: str | None = None) -> None:
        super().__init__(message, status=status, code=code)
        self.calls = calls
        self.answered_by: Attempt | None = None  # the target whose client error this passes on


class AttemptRunner:
    def __init__(
        self,
        providers: ProviderSource,
        runtime: RuntimeState,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.providers = providers
        self.runtime = runtime
        self.sleep = sleep
        self.rand = rand
        self.observer: AttemptObserver = NullObserver()

    async def run(self, job: Job) -> Served:
        attempts = job.decision.attempts
        routed = job.decision.model
        if attempts and attempts[0].model != routed and routed is not None:
            # the routed model's targets were left out when deciding (open circuits, a window
            # too small): the request moves to a fallback all the same
            self.observer.fell_back(routed, attempts[0].model)
        trail: list[str] = []
        calls = 0
        last: Exception | None = None
        index = 0
        while index < len(attempts):
            attempt = attempts[index]
            if index and attempt.model != attempts[index - 1].model:
                self.observer.fell_back(attempts[index - 1].model, attempt.model)
            index += 1
            try:
                provider = self.providers.get(attempt.target.provider)
                bridge = bridge_for(job.endpoint, provider.native)
                catalog = job.models.get(attempt.model)
                limit = catalog.max_output_tokens if catalog is not None else None
                body = bridge.request(job.body, attempt.target.upstream_model, limit)
            except GatewayError as error:
                # this target cannot serve the endpoint, or its format cannot carry the request:
                # the next one may (when none can, the client gets this error, a 400 say)
                trail.append(f"{attempt.target.id}: unsupported")
                last = error
                continue
            outcome = await self._target(job, attempt, provider, bridge, body, trail, calls)
            calls += outcome.calls
            if outcome.served is not None:
                outcome.served.calls = calls
                outcome.served.trail = trail
                return outcome.served
            last = outcome.error
            if isinstance(last, ContextLengthError) and outcome.skip_smaller:
                index = _next_larger(attempts, index, attempt.context_window)
        raise _all_failed(last, trail, calls, _keys_cooling(self.providers, job.decision, trail))

    async def _target(
        self,
        job: Job,
        attempt: Attempt,
        provider: Provider,
        bridge: Bridge,
        body: JSON,
        trail: list[str],
        earlier: int,
    ) -> _Outcome:
        """Up to `attempt.tries` calls of one target, after `earlier` calls to others; a summary
        call made joins `job.spent`."""
        target = attempt.target.id
        decision = job.decision
        breakers = self.runtime.breakers
        headers = _forwarded(job.ctx.headers, provider)
        outcome = _Outcome()
        reshaped = reshaped_now = False
        tries = 0
        while tries < attempt.tries:
            remaining = job.deadline - time.monotonic()
            if remaining <= 0:
                trail.append(f"{target}: deadline")
                outcome.error = outcome.error or UpstreamTimeout("request deadline exceeded")
                return outcome
            if not breakers.admit(target):
                trail.append(f"{target}: circuit_open")
                return outcome
            if tries and not reshaped_now:
                self.observer.retried(attempt)  # counted once the retry is really made
            reshaped_now = False
            tries += 1
            outcome.calls += 1
            started = time.monotonic()
            try:
                response, stream = await self._call(
                    provider, bridge, body, min(decision.timeout, remaining), job.stream, headers
                )
            except ContextLengthError as error:
                breakers.success(target)  # the target answered; the request was too big
                trail.append(f"{target}: context_length")
                outcome.error = error
                if reshaped or decision.context_overflow == "fallback":
                    outcome.skip_smaller = decision.context_overflow == "fallback"
                    return outcome
                smaller, used = await self._reshape(job, attempt, provider, bridge, body)
                if used is not None:  # a summary call was made: counted and paid for
                    outcome.calls += 1
                    job.spent.append(Overhead(attempt.model, used))
                if smaller is None:
                    outcome.skip_smaller = True
                    return outcome
                body, reshaped = smaller, True
                tries -= 1  # SPEC §2.5.1: the reshaped request is retried once more
                reshaped_now = True  # a second try of the same call, not a retry
                continue
            except UpstreamError as error:
                self._failed(target, error, decision)
                self.observer.called(attempt, time.monotonic() - started, error)
                trail.append(f"{target}: {_describe(error)}")
                outcome.error = error
                if isinstance(error, UpstreamStatusError) and error.status in CLIENT_ERRORS:
                    failed = _client_error(error, earlier + outcome.calls)
                    failed.answered_by = attempt
                    raise failed from None
                if not _retryable(error, decision.retry) or tries >= attempt.tries:
                    return outcome
                delay = self._delay(decision.retry, tries, error.retry_after)
                if delay >= job.deadline - time.monotonic():
                    return outcome  # SPEC §2.5: Retry-After capped by the total deadline
                await self.sleep(delay)
                continue
            except BaseException:
                breakers.release(target)
                raise
            seconds = time.monotonic() - started
            self.runtime.observe_latency(target, seconds * 1000)
            if stream is None:
                breakers.success(target)
                self.observer.called(attempt, seconds, None)
            else:  # judged when it ends (`stream_ended`): it may still break after its first event
                breakers.release(target)
            outcome.served = Served(attempt, bridge, response, stream, opened_in=seconds)
            return outcome
        return outcome

    async def _call(
        self,
        provider: Provider,
        bridge: Bridge,
        body: JSON,
        timeout: float,
        stream: bool,
        headers: dict[str, str] = _NO_HEADERS,
    ) -> tuple[UpstreamResponse | None, UpstreamStream | None]:
        request = UpstreamRequest(bridge.upstream, body, timeout, headers=headers)
        if getattr(provider, "bounds_timeout", False):
            # the adapter already holds the call to `request.timeout` (and raises UpstreamTimeout):
            # a second timer per call would only cost time (SPEC §2.5)
            if stream:
                return None, await provider.stream(request)
            return await provider.send(request), None
        try:
            async with asyncio.timeout(timeout):
                if stream:
                    return None, await provider.stream(request)
                return await provider.send(request), None
        except TimeoutError:
            raise UpstreamTimeout(f"{provider.name}: no answer within {timeout:g}s") from None

    async def _reshape(
        self, job: Job, attempt: Attempt, provider: Provider, bridge: Bridge, body: JSON
    ) -> tuple[JSON | None, Usage | None]:
        """SPEC §2.5.1: a smaller body for the same target (None when none can be made), and
        what a summary call used, when one answered."""
        window = attempt.context_window
        if job.decision.context_overflow == "summarize":
            remaining = job.deadline - time.monotonic()
            summarized = await summarize(provider, bridge, body, window, min(10.0, remaining))
            if summarized is not None:
                return summarized
        return truncate(bridge, body, window), None

    def stream_ended(self, served: Served, decision: Decision, error: UpstreamError | None) -> None:
        """A relayed stream is over: its target's call is judged now, for the circuit breaker,
        health and metrics, as a whole answer's is when it arrives. A stream that breaks after
        its first event counts as a failure of its target (a client leaving does not)."""
        target = served.attempt.target.id
        if error is None:
            self.runtime.breakers.success(target)
        else:
            self._failed(target, error, decision)
        self.observer.called(served.attempt, served.opened_in, error)

    def _failed(self, target: str, error: UpstreamError, decision: Decision) -> None:
        """Count towards the breaker only what says the target is unhealthy."""
        unhealthy = isinstance(error, UpstreamTimeout | UpstreamConnectionError) or (
            error.status is not None and error.status >= 500
        )
        if unhealthy:
            self.runtime.breakers.failure(target, decision.breaker)
        else:
            self.runtime.breakers.release(target)

    def _delay(self, retry: RetryPolicy, tries: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        backoff = retry.backoff
        ceiling = min(backoff.max, backoff.initial * (2 ** (tries - 1)))
        return ceiling * self.rand() if backoff.jitter else ceiling


@dataclass(slots=True)
class _Outcome:
    served: Served | None = None
    error: Exception | None = None
    calls: int = 0
    skip_smaller: bool = False  # context overflow: move on to a larger window


def charged(
    usage: Usage, cost: float, spent: Sequence[Overhead], models: Mapping[str, CatalogModel]
) -> tuple[Usage, float]:
    """`usage` and `cost` with what `spent` used added, each call at its own model's price."""
    for extra in spent:
        used = extra.usage
        usage = Usage(
            usage.input_tokens + used.input_tokens,
            usage.output_tokens + used.output_tokens,
            usage.cached_tokens + used.cached_tokens,
        )
        cost += extra.cost(models)
    return usage, cost


def _retryable(error: UpstreamError, retry: RetryPolicy) -> bool:
    if isinstance(error, UpstreamTimeout):
        return retry.on_timeout
    if isinstance(error, UpstreamConnectionError):
        return retry.on_connection
    return error.status is not None and error.status in retry.on_status


def _describe(error: UpstreamError) -> str:
    if isinstance(error, UpstreamTimeout | UpstreamConnectionError):
        return error.kind
    return str(error.status) if error.status is not None else error.kind


def _next_larger(attempts: tuple[Attempt, ...], start: int, window: int | None) -> int:
    """Index of the next attempt whose window is larger than `window` (SPEC §2.5.1 fallback)."""
    for index in range(start, len(attempts)):
        candidate = attempts[index].context_window
        if window is None or candidate is None or candidate > window:
            return index
    return len(attempts)


def _forwarded(headers: Mapping[str, str], provider: Provider) -> dict[str, str]:
    """The client headers of FORWARDED_HEADERS for this provider's wire that the client sent."""
    names = FORWARDED_HEADERS.get(getattr(provider, "wire", ""))
    if names is None:
        return _NO_HEADERS
    return {name: headers[name] for name in names if name in headers} or _NO_HEADERS


def _client_error(error: UpstreamStatusError, calls: int) -> AttemptsFailed:
    status = error.status or 400
    context = isinstance(error, ContextLengthError)
    code = "context_length_exceeded" if context else None
    failed = AttemptsFailed(_upstream_message(error), status=status, calls=calls, code=code)
    if not context:
        _keep_upstream_fields(failed, error.body)
    return failed


def _keep_upstream_fields(failed: AttemptsFailed, body: object) -> None:
    """SPEC §3: the upstream's own client error keeps what it said about the request, as the
    client's SDK would have seen it: OpenAI's error object whole (`type`, `param`, `code` and
    whatever else it holds; an OpenAI client gets it as it came), Anthropic's error `type`;
    Anthropic's `not_found_error` is the model not being there, OpenAI's `model_not_found`."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return
    kind = error.get("type")
    if body.get("type") == "error":  # type: ignore[union-attr]  # Anthropic's shape
        if isinstance(kind, str):
            failed.anthropic_type = kind[:100]
            if kind == "not_found_error":
                failed.code = "model_not_found"
        return
    failed.upstream_error = error  # rendered for OpenAI clients as it came, over our fields
    code = error.get("code")
    failed.code = code[:100] if isinstance(code, str) else None  # the usage log's error type


def _upstream_message(error: UpstreamError) -> str:
    return error_message(error.body) if error.body is not None else error.message


def _all_failed(
    last: Exception | None,
    trail: list[str],
    calls: int,
    cooling: tuple[float, list[str]] | None = None,
) -> GatewayError:
    if isinstance(last, GatewayError) and calls == 0:
        return last  # nothing was called: e.g. embeddings on a chat-only provider
    if (
        isinstance(last, UpstreamStatusError)
        and last.status in CLIENT_CAUSED
        and trail
        and not trail[-1].endswith(("circuit_open", "deadline", "unsupported"))
    ):
        return _client_error(last, calls)  # SPEC §3: the last upstream status when client-caused
    if cooling is not None:
        return _rate_limited(*cooling, calls)
    listed = "; ".join(trail) if trail else "no target was available"
    return AttemptsFailed(f"All upstream attempts failed: {listed}", status=502, calls=calls)


def _rate_limited(wait: float, providers: list[str], calls: int) -> AttemptsFailed:
    """429 with Retry-After: the keys are back then, so an SDK that retried at once (as it does
    after a 502) would only be turned away again. Never 0 seconds, and never a key."""
    seconds = max(math.ceil(wait), 1)
    names = ", ".join(f"'{name}'" for name in providers)
    noun = "provider" if len(providers) == 1 else "providers"
    message = f"Rate limited upstream: the API keys of {noun} {names} are cooling down"
    failed = AttemptsFailed(
        f"{message}; retry after {seconds}s", status=429, calls=calls, code="rate_limit_exceeded"
    )
    failed.headers = {"Retry-After": str(seconds)}
    return failed


def _keys_cooling(
    providers: ProviderSource, decision: Decision, trail: list[str]
) -> tuple[float, list[str]] | None:
    """When cooling keys (and the upstream 429s that cooled them) are all that kept every
    target from answering: seconds until the soonest key is back, and the providers concerned."""
    planned = {a.target.id: (a.target.provider, a.target.upstream_model) for a in decision.attempts}
    blocked: list[tuple[str, str]] = []
    for skip in decision.skipped:
        if skip.reason not in ("keys_cooling", "provider_unavailable"):
            return None
        provider, _, model = skip.target.partition("/")
        blocked.append((provider, model))
    for entry in trail:
        target, _, outcome = entry.rpartition(": ")
        if outcome != "429" or target not in planned:
            return None
        blocked.append(planned[target])
    waits = [_key_wait(providers, provider, model) for provider, model in blocked]
    if not waits or any(wait is None for wait in waits):
        return None
    names = list(dict.fromkeys(provider for provider, _ in blocked))
    return min(wait for wait in waits if wait is not None), names


def _key_wait(providers: ProviderSource, name: str, model: str) -> float | None:
    """Seconds until a key of provider `name` serves `model`; None when it has no keys."""
    try:
        ring = key_ring(providers.get(name))
    except KeyError:
        return None
    return ring.wait(model) if ring is not None else None
