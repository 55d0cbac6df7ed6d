"""The Starlette application: routes, lifespan, and the state every request shares (SPEC §1, §3).

`GatewayState.graph` is the one attribute hot reload swaps (`state.set_graph(new)`); everything
derived from a graph (the config key store) is rebuilt lazily when it changes. Lifespan syncs the
provider pool on start and closes it on shutdown, after uvicorn let in-flight requests finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from concord.config.errors import ConfigError
from concord.engine.graph import Endpoint, Graph
from concord.gateway import tokens
from concord.gateway.attempts import AttemptRunner
from concord.gateway.auth import (
    ConfigKeyStore,
    KeyStore,
    Principal,
    authenticate,
    open_principal,
)
from concord.gateway.guards import Guards, NoGuards
from concord.gateway.handlers import handle, list_models, retrieve_model
from concord.gateway.limits import ConcurrencyLimiter
from concord.gateway.record import NullRecorder, Recorder
from concord.gateway.respond import json_response
from concord.gateway.runtime import RuntimeState
from concord.gateway.unrouted import EXCEPTION_HANDLERS
from concord.observability.logs import log_operations
from concord.observability.readiness import DEGRADED, SERVING, ReadinessCheck, run_checks
from concord.providers.registry import ProviderPool

CONFIG_ENV = "CONCORD_CONFIG"


class Component(Protocol):
    """A subsystem plugged into the app (reload, admin API, records, metrics...).

    `routes()` are mounted beside the gateway's own; `start` runs in lifespan after the provider
    pool is ready and `stop` in reverse order at shutdown, after in-flight requests finished.
    """

    def routes(self) -> list[BaseRoute]: ...

    async def start(self, state: GatewayState) -> None: ...

    async def stop(self, state: GatewayState) -> None: ...


class GatewayState:
    """Shared by all requests of one process; survives config reloads."""

    def __init__(
        self,
        graph: Graph,
        *,
        pool: ProviderPool | None = None,
        recorder: Recorder | None = None,
        guards: Guards | None = None,
        key_store: KeyStore | None = None,
        runtime: RuntimeState | None = None,
    ) -> None:
        self.graph = graph
        self.pool = pool if pool is not None else ProviderPool()  # an empty pool is falsy
        self.pool.sync(graph.providers)  # adapters open their sessions lazily, inside the loop
        self.recorder: Recorder = recorder or NullRecorder()
        self.guards: Guards = guards or NoGuards()
        self.runtime = runtime or RuntimeState()
        self.attempts = AttemptRunner(self.pool, self.runtime)
        self.limiter = ConcurrencyLimiter(graph.server.max_concurrency, graph.server.queue_timeout)
        self.started_at = time.time()
        self.ready = False
        self.config_path: str | None = None
        # SPEC §3 /readyz: subsystems add named checks (state backend, database)
        self.readiness_checks: dict[str, ReadinessCheck] = {}
        self._key_store = key_store  # a database store, when one is plugged in
        self._derived_for: Graph | None = None
        self._config_keys = ConfigKeyStore({}, {})
        self._anonymous = Principal()

    def set_graph(self, graph: Graph) -> None:
        """Swap in a new graph (hot reload): providers sync, the limiter follows the settings."""
        self.pool.sync(graph.providers)
        server = graph.server
        if (server.max_concurrency, server.queue_timeout) != (
            self.limiter.limit,
            self.limiter.queue_timeout,
        ):
            self.limiter = ConcurrencyLimiter(server.max_concurrency, server.queue_timeout)
        self.graph = graph

    async def authenticate(self, graph: Graph, headers: Mapping[str, str]) -> Principal:
        if graph is not self._derived_for:
            self._config_keys = ConfigKeyStore(graph.auth.keys, graph.workspaces)
            self._anonymous = open_principal(graph.workspaces)
            self._derived_for = graph
        # SPEC §2.8: declared keys first, found without a suspension point; the plugged-in store
        # (the database's keys) only for a key the config does not declare
        return await authenticate(
            headers,
            self._key_store,
            open_mode=graph.auth.mode == "open",
            anonymous=self._anonymous,
            declared=self._config_keys.principals,
        )


class ConfigVersionHeader:
    """Adds `x-concord-config` to answers that lack it (health, admin, 404s); the gateway's own
    `/v1/` answers carry the version of the graph they were served by, so they pass untouched."""

    def __init__(self, app: ASGIApp, state: GatewayState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        version = self.state.graph.version.encode()

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(name.lower() == b"x-concord-config" for name, _ in headers):
                    headers.append((b"x-concord-config", version))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_version)


# The cyclic collector's thresholds while serving. A request allocates a few hundred container
# objects and frees nearly all of them by reference counting, so CPython's default (a young
# collection every 700 net allocations) runs the collector every few requests for little
# reclaimed: measured, about a tenth of the CPU per proxied request. Collections still run,
# a hundred times less often; what they find (reference cycles) is rare on the request path.
GC_THRESHOLDS = (100_000, 50, 100)

# What browser code may read of an answer under CORS (SPEC §3 headers, and Retry-After)
EXPOSED_HEADERS = (
    "x-request-id",
    "request-id",
    "x-concord-route",
    "x-concord-model",
    "x-concord-provider",
    "x-concord-attempts",
    "x-concord-cache",
    "x-concord-config",
    "x-concord-downgraded",
    "retry-after",
)

GATEWAY_PATHS: dict[str, Endpoint] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/messages": "messages",
}


async def serve_gateway_path(
    state: GatewayState, scope: Scope, receive: Receive, send: Send
) -> bool:
    """Answer `POST` on the four gateway paths with `handle`; False for anything else (other
    methods, trailing slashes, a root path), which goes through the router to the same routes."""
    if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
        return False
    kind = GATEWAY_PATHS.get(scope["path"])
    if kind is None:
        return False
    response = await handle(state, Request(scope, receive, send), kind)
    await response(scope, receive, send)
    return True


class GatewayDispatch:
    """Sends the gateway paths straight to `handle`, past Starlette's router, exception
    middleware and endpoint wrappers: `handle` turns every exception into an answer itself, so
    those layers only cost time on the hot path. Used when CORS must see every answer."""

    def __init__(self, app: ASGIApp, state: GatewayState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await serve_gateway_path(self.state, scope, receive, send):
            await self.app(scope, receive, send)


class GatewayApp(Starlette):
    """The gateway's Starlette app. Without CORS, the gateway paths are answered before the
    middleware stack: `handle` catches every exception and sets every header itself (the
    config version included), so the error middleware and the version-header wrapper would
    only add a frame and a `send` wrapper per message to the requests that matter most."""

    fast_path: GatewayState | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.fast_path
        if state is not None:
            scope["app"] = self
            if await serve_gateway_path(state, scope, receive, send):
                return
        await super().__call__(scope, receive, send)


def create_app_from_graph(
    graph: Graph,
    *,
    recorder: Recorder | None = None,
    guards: Guards | None = None,
    key_store: KeyStore | None = None,
    runtime: RuntimeState | None = None,
    pool: ProviderPool | None = None,
    components: Sequence[Component] = (),
    config_path: str | None = None,
) -> Starlette:
    """The gateway app serving `graph`; the keyword seams are for tests and later subsystems."""
    state = GatewayState(
        graph, pool=pool, recorder=recorder, guards=guards, key_store=key_store, runtime=runtime
    )
    state.config_path = config_path

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.pool.sync(state.graph.providers)
        await asyncio.to_thread(tokens.warm)
        started: list[Component] = []
        thresholds = gc.get_threshold()
        try:
            for component in components:
                await component.start(state)
                started.append(component)
            state.ready = True
            # Everything built so far (config, graph, pools, database engine) lives as long as
            # the process: keep it out of the collector's full passes, which would otherwise
            # walk it again and again under load. Undone at shutdown.
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
            yield
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
            state.ready = False
            for component in reversed(started):
                await component.stop(state)
            await state.pool.close()

    def endpoint(kind: Endpoint):  # type: ignore[no-untyped-def]
        async def serve(request: Request) -> Response:
            return await handle(state, request, kind)

        serve.__name__ = f"serve_{kind}"
        return serve

    async def models(request: Request) -> Response:
        return await list_models(state, request)

    async def model(request: Request) -> Response:
        return await retrieve_model(state, request, request.path_params["model_id"])

    async def healthz(request: Request) -> Response:
        return json_response(b'{"status":"ok"}', 200, {})

    async def readyz(request: Request) -> Response:
        if not state.ready:
            return json_response(b'{"status":"starting"}', 503, {})
        checks = await run_checks(state.readiness_checks)
        ready = all(result in SERVING for result in checks.values())
        status = "unready" if not ready else DEGRADED if DEGRADED in checks.values() else "ready"
        body = {"status": status, "config": state.graph.version}
        return json_response(orjson.dumps({**body, "checks": checks}), 200 if ready else 503, {})

    routes = [
        *(Route(path, endpoint(kind), methods=["POST"]) for path, kind in GATEWAY_PATHS.items()),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", model, methods=["GET"]),  # ids may hold slashes
        Route("/healthz", healthz, methods=["GET"]),
        Route("/_health", healthz, methods=["GET"]),  # SPEC §3.1: V0 aliases
        Route("/health", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    for component in components:
        routes.extend(component.routes())
    middleware = []
    if graph.server.cors_origins:  # SPEC §3.1
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(graph.server.cors_origins),
                allow_methods=["*"],
                allow_headers=["*"],
                expose_headers=list(EXPOSED_HEADERS),
            )
        )
    middleware.append(Middleware(ConfigVersionHeader, state=state))  # SPEC §3: on every answer
    if graph.server.cors_origins:  # CORS must see the gateway's answers: dispatch inside it
        middleware.append(Middleware(GatewayDispatch, state=state))
    app = GatewayApp(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,  # SPEC §3: JSON errors, even for unknown paths
    )
    app.state.gateway = state
    if not graph.server.cors_origins:
        app.fast_path = state  # otherwise answered before the middleware stack
    return app


def create_app(config_path: str, *, env: Mapping[str, str] | None = None) -> Starlette:
    """Load and compile `config_path` (raises ConfigError) and build the full app serving it.

    `concord.gateway.assemble` decides which subsystems a config needs (state backend,
    database, reload watcher, admin API, metrics) and wires them in as components.
    """
    from concord.config.load import load_serving
    from concord.gateway.assemble import assemble

    graph, warnings = load_serving(config_path, env)
    seams = assemble(graph, config_path, env, warnings=warnings)
    return create_app_from_graph(graph, config_path=config_path, **seams)


def app_from_env(retry_every: float = 1.0) -> Starlette:
    """Factory for `uvicorn --factory` with several workers: the config path is in the env.

    Runs in each worker before it serves. SIGHUP is ignored until the reloader takes it over (the
    supervisor passes SIGHUP on, and a worker just starting must not die of it).

    `concord serve` checks the config before it starts any worker, so a worker finds the file
    invalid only when it replaces one that died after a bad edit. Exiting then would only have
    the supervisor start it again, and again: instead it says what is wrong (once per distinct
    problem, as `concord serve` reports it) and reads the file again every `retry_every` seconds
    until it loads, while the other workers go on serving their last good config. It stops
    waiting when told to stop, or when the supervisor is gone.
    """
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    log_operations()  # this worker's own messages, as JSON lines (level from the supervisor)
    path = os.environ[CONFIG_ENV]
    supervisor = os.getppid()
    try:
        return create_app(path)
    except ConfigError as exc:
        error = exc
    # Nothing is served while waiting, so SIGTERM and SIGINT end the worker at once (uvicorn's
    # own handlers would only note them for a server that has not started).
    stops = (signal.SIGTERM, signal.SIGINT)
    previous = {stop: signal.signal(stop, signal.SIG_DFL) for stop in stops}
    try:
        reported = ""
        while not any(map(_stop_noted_by, previous.values())):
            if str(error) != reported:
                reported = str(error)
                print(
                    f"concord serve: {path} is not a valid configuration; this worker waits for "
                    f"a valid one (the other workers keep serving):\n"
                    + textwrap.indent(reported, "  "),
                    file=sys.stderr,
                    flush=True,
                )
            time.sleep(retry_every)
            if os.getppid() != supervisor:
                break  # orphaned: no one is left to pass requests or a stop on
            try:
                return create_app(path)
            except ConfigError as exc:
                error = exc
        raise SystemExit(0)
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)


def _stop_noted_by(handler: object) -> bool:
    """Whether the signal handler in place before the wait (uvicorn's server, a bound method) has
    already noted a stop: one that came while the worker started would otherwise go unheeded."""
    return getattr(getattr(handler, "__self__", None), "should_exit", False) is True
