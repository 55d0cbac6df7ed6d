"""Prometheus metrics (SPEC §7), fed by usage records and attempt outcomes.

Every family is prefixed `concord_`. Labels are names from the config (route, catalog model,
provider, target, workspace) or small fixed sets (status, result); never a request id, a user id
or a model name the client made up, so the number of series stays bounded.

With `concord serve --workers N` each worker is its own process: `prepare_multiprocess_dir()`
points them all at one fresh directory (PROMETHEUS_MULTIPROC_DIR, read by prometheus-client at
import), and `render()` then sums every worker's files, so a scrape that lands on any worker sees
the totals of all of them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from concord.gateway.record import UsageRecord
from concord.providers.base import UpstreamError

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}
HEALTH_VALUES = {"healthy": 0, "degraded": 1, "unhealthy": 2}
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
NONE = "none"  # label value when a request never reached a route, model or provider


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def prepare_multiprocess_dir() -> str:
    """Give the workers about to start one fresh, empty metrics directory (call before forking).

    An operator-chosen PROMETHEUS_MULTIPROC_DIR is emptied (stale files from a previous run would
    add old counts to the new one); otherwise a new temporary directory is created.
    """
    chosen = multiprocess_dir()
    if chosen:
        shutil.rmtree(chosen, ignore_errors=True)
        os.makedirs(chosen, exist_ok=True)
    else:
        chosen = tempfile.mkdtemp(prefix="concord-metrics-")
        os.environ[MULTIPROC_ENV] = chosen
    return chosen


class Metrics:
    """The §7 families in their own registry (one per app; tests build several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "concord_requests",
            "Requests served, by route, catalog model, provider and HTTP status.",
            ["route", "model", "provider", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "concord_request_duration_seconds",
            "Time from request arrival to the end of the response.",
            ["route", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_latency = Histogram(
            "concord_upstream_duration_seconds",
            "Duration of each upstream call (every try, failed ones included).",
            ["provider", "target"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_calls = Counter(
            "concord_upstream_requests",
            "Upstream calls by target and result (ok, error, client_error).",
            ["provider", "target", "result"],
            registry=r,
        )
        self.ttft = Histogram(
            "concord_time_to_first_token_seconds",
            "Streamed responses: time from request arrival to the first byte sent.",
            ["model", "provider"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "concord_tokens",
            "Tokens by workspace, catalog model and kind (input, output, cached).",
            ["workspace", "model", "kind"],
            registry=r,
        )
        self.cost = Counter(
            "concord_cost_usd",
            "Spend in US dollars by workspace and catalog model.",
            ["workspace", "model"],
            registry=r,
        )
        self.cache_hits = Counter(
            "concord_cache_hits", "Responses served from the cache.", ["model"], registry=r
        )
        self.cache_misses = Counter(
            "concord_cache_misses",
            "Cacheable requests the cache could not answer.",
            ["model"],
            registry=r,
        )
        self.retries = Counter(
            "concord_retries", "Retries of the same target.", ["target"], registry=r
        )
        self.fallbacks = Counter(
            "concord_fallbacks",
            "Moves from a failed model to a fallback model.",
            ["from_model", "to_model"],
            registry=r,
        )
        self.circuit = Gauge(
            "concord_circuit_state",
            "Circuit breaker per target: 0 closed, 1 half-open, 2 open.",
            ["target"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.health = Gauge(
            "concord_target_health",
            "Passive health per target: 0 healthy, 1 degraded, 2 unhealthy.",
            ["provider", "target"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.reloads = Counter(
            "concord_config_reload",
            "Config reloads by result (ok, error).",
            ["result"],
            registry=r,
        )
        self.config_info = Gauge(
            "concord_config_info",
            "1 for the config version this process serves.",
            ["version"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self._version: str | None = None
        # bound methods of the per-request series, by label values (see `_request_series`)
        self._requests_cache: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}
        self._spend_cache: dict[tuple[str, str, str], Callable[[float], None]] = {}
        self._attempt_cache: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        for result in ("ok", "error"):
            self.reloads.labels(result)  # both series exist from the start, at 0

    # -- fed by the gateway -------------------------------------------------------------------

    def record(self, record: UsageRecord) -> None:
        """Count one finished request (a Recorder: cheap, never blocks)."""
        route = record.route or NONE
        model = record.model or NONE
        provider = record.provider or NONE
        status = record.status
        count_request, observe_latency = self._request_series(route, model, provider, status)
        count_request()
        observe_latency(record.latency_ms / 1000)
        if record.ttft_ms is not None:
            self.ttft.labels(model, provider).observe(record.ttft_ms / 1000)
        if record.model is not None:
            workspace = record.workspace
            for kind, count in (
                ("input", record.input_tokens),
                ("output", record.output_tokens),
                ("cached", record.cached_tokens),
                ("cost", record.cost_usd),
            ):
                if count:  # a series appears with its first non-zero count, never at 0
                    self._spend_series(workspace, model, kind)(count)
        cache = _cache_result(record)
        if cache == "hit":
            self.cache_hits.labels(model).inc()
        elif cache == "miss":
            self.cache_misses.labels(model).inc()

    def _request_series(
        self, route: str, model: str, provider: str, status: int
    ) -> tuple[Callable[[], None], Callable[[float], None]]:
        """`requests.inc` and `request_latency.observe` for these labels, looked up once.

        Label values come from the config and small fixed sets (module docstring), so the cache
        is as bounded as the series themselves; no series is ever removed, so an entry stays valid.
        """
        key = (route, model, provider, status)
        series = self._requests_cache.get(key)
        if series is None:
            series = (
                self.requests.labels(route, model, provider, str(status)).inc,
                self.request_latency.labels(route, model).observe,
            )
            self._requests_cache[key] = series
        return series

    def _spend_series(self, workspace: str, model: str, kind: str) -> Callable[[float], None]:
        """`inc` of a token counter (`kind` input, output, cached) or of the cost counter."""
        key = (workspace, model, kind)
        inc = self._spend_cache.get(key)
        if inc is None:
            if kind == "cost":
                inc = self.cost.labels(workspace, model).inc
            else:
                inc = self.tokens.labels(workspace, model, kind).inc
            self._spend_cache[key] = inc
        return inc

    def attempt(self, provider: str, target: str, seconds: float, result: str) -> None:
        key = (provider, target, result)
        series = self._attempt_cache.get(key)
        if series is None:
            series = (
                self.upstream_latency.labels(provider, target).observe,
                self.upstream_calls.labels(provider, target, result).inc,
            )
            self._attempt_cache[key] = series
        series[0](seconds)
        series[1]()

    def retried(self, target: str) -> None:
        self.retries.labels(target).inc()

    def fell_back(self, from_model: str, to_model: str) -> None:
        self.fallbacks.labels(from_model, to_model).inc()

    def reloaded(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "error").inc()

    # -- refreshed from runtime state --------------------------------------------------------

    def set_version(self, version: str) -> None:
        if version == self._version:
            return
        if self._version is not None:
            self.config_info.labels(self._version).set(0)
        self.config_info.labels(version).set(1)
        self._version = version

    def set_circuits(self, states: Iterable[tuple[str, str]]) -> None:
        for target, state in states:
            self.circuit.labels(target).set(CIRCUIT_VALUES.get(state, 0))

    def set_health(self, states: Iterable[tuple[str, str, str]]) -> None:
        for provider, target, state in states:
            self.health.labels(provider, target).set(HEALTH_VALUES.get(state, 0))

    # -- exposition ----------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type; all workers' values in multiprocess mode."""
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry), CONTENT_TYPE_LATEST

    def process_exited(self) -> None:
        """Drop this worker's live gauges so a stopped worker stops reporting circuit state."""
        directory = multiprocess_dir()
        if directory is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), directory)


def _cache_result(record: UsageRecord) -> str | None:
    """`hit`, `miss` or None (cache not consulted).

    Reads `record.cache` ("hit" / "miss" / "bypass") when the record carries it; older records
    only say `cache_hit`, and then a miss cannot be told from a bypass.
    """
    cache = getattr(record, "cache", None)
    if isinstance(cache, str):
        return cache if cache in ("hit", "miss") else None
    return "hit" if record.cache_hit else None


def upstream_result(error: UpstreamError | None) -> str:
    """`ok`, `client_error` (the request was at fault: 400/404/413/422) or `error`."""
    if error is None:
        return "ok"
    if error.status in (400, 404, 413, 422):
        return "client_error"
    return "error"
