"""Prometheus metrics (SPEC §7), fed by usage records and attempt outcomes.

Every family is prefixed `concord_`. Labels are names from the config (route, catalog model,
provider, target, workspace) or small fixed sets (status, result); never a request id, a user id
or a model name the client made up, so the number of series stays bounded.

With `concord serve --workers N` each worker is its own process: `prepare_multiprocess_dir()`
points them all at one fresh directory (PROMETHEUS_MULTIPROC_DIR, read by prometheus-client at
import), and `render()` then sums every worker's files, so a scrape that lands on any worker sees
the totals of all of them. One process counts the families every request updates in plain tables
instead (`tallies.py`), which a scrape exposes the same way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
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
from concord.observability.tallies import Family, Labels, Tallies, count, observe
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
    add old counts to the new one); otherwise a new temporary directory is created, which
    `remove_own_multiprocess_dir` deletes when the workers are done.
    """
    chosen = multiprocess_dir()
    if chosen:
        shutil.rmtree(chosen, ignore_errors=True)
        os.makedirs(chosen, exist_ok=True)
    else:
        chosen = tempfile.mkdtemp(prefix=_OWN_DIR_PREFIX)
        os.environ[MULTIPROC_ENV] = chosen
    return chosen


_OWN_DIR_PREFIX = "concord-metrics-"


def remove_own_multiprocess_dir(directory: str) -> None:
    """Delete the metrics directory `prepare_multiprocess_dir` made; one an operator chose stays
    (it may be watched, or mounted)."""
    if os.path.basename(directory).startswith(_OWN_DIR_PREFIX) and os.path.dirname(
        directory
    ) == os.path.normpath(tempfile.gettempdir()):
        shutil.rmtree(directory, ignore_errors=True)


# The families every request updates (see tallies.py for why they are kept apart).
REQUESTS = Family(
    "concord_requests",
    "Requests served, by route, catalog model, provider and HTTP status.",
    ("route", "model", "provider", "status"),
)
REQUEST_LATENCY = Family(
    "concord_request_duration_seconds",
    "Time from request arrival to the end of the response.",
    ("route", "model"),
    LATENCY_BUCKETS,
)
UPSTREAM_LATENCY = Family(
    "concord_upstream_duration_seconds",
    "Duration of each upstream call (every try, failed ones included).",
    ("provider", "target"),
    LATENCY_BUCKETS,
)
UPSTREAM_CALLS = Family(
    "concord_upstream_requests",
    "Upstream calls by target and result (ok, error, client_error).",
    ("provider", "target", "result"),
)
TTFT = Family(
    "concord_time_to_first_token_seconds",
    "Streamed responses: time from request arrival to the first byte sent.",
    ("model", "provider"),
    TTFT_BUCKETS,
)
TOKENS = Family(
    "concord_tokens",
    "Tokens by workspace, catalog model and kind (input, output, cached).",
    ("workspace", "model", "kind"),
)
COST = Family(
    "concord_cost_usd",
    "Spend in US dollars by workspace and catalog model.",
    ("workspace", "model"),
)
CACHE_HITS = Family("concord_cache_hits", "Responses served from the cache.", ("model",))
CACHE_MISSES = Family(
    "concord_cache_misses", "Cacheable requests the cache could not answer.", ("model",)
)
REQUEST_FAMILIES = (
    REQUESTS,
    REQUEST_LATENCY,
    UPSTREAM_LATENCY,
    UPSTREAM_CALLS,
    TTFT,
    TOKENS,
    COST,
    CACHE_HITS,
    CACHE_MISSES,
)


class _Series:
    """A prometheus-client metric's children by label values, each looked up once: label values
    come from the config and small fixed sets (module docstring), and no series is removed."""

    __slots__ = ("children", "metric")

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.children: dict[Labels, Any] = {}

    def child(self, labels: Labels) -> Any:
        child = self.children.get(labels)
        if child is None:
            child = self.children[labels] = self.metric.labels(*labels)
        return child


def _count_shared(series: _Series, labels: Labels, amount: float = 1) -> None:
    """`tallies.count` for a prometheus-client counter."""
    series.child(labels).inc(amount)


def _observe_shared(series: _Series, labels: Labels, bounds: Sequence[float], value: float) -> None:
    """`tallies.observe` for a prometheus-client histogram (its buckets are its own)."""
    series.child(labels).observe(value)


def _shared(family: Family, registry: CollectorRegistry) -> Any:
    """`family` as a prometheus-client metric (its values shared between worker processes)."""
    if family.buckets is None:
        return Counter(family.name, family.help, family.labels, registry=registry)
    return Histogram(
        family.name, family.help, family.labels, buckets=family.buckets, registry=registry
    )


class Metrics:
    """The §7 families in their own registry (one per app; tests build several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The per-request families: plain tallies in one process, exposed when scraped; under
        # workers prometheus-client metrics, whose values the processes share. `record` and
        # `attempt` update either through `_count` and `_observe`.
        if multiprocess_dir() is None:
            tallies = Tallies(REQUEST_FAMILIES)
            r.register(tallies)
            series: list[Any] = [tallies.tables[family.name] for family in REQUEST_FAMILIES]
            self._count, self._observe = count, observe
        else:
            series = [_Series(_shared(family, r)) for family in REQUEST_FAMILIES]
            self._count, self._observe = _count_shared, _observe_shared
        (
            self._requests,
            self._latency,
            self._upstream_latency,
            self._upstream_calls,
            self._ttft,
            self._tokens,
            self._cost,
            self._cache_hits,
            self._cache_misses,
        ) = series
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
        self.state_up = Gauge(
            "concord_state_backend_up",
            "1 while the shared state backend (Redis) answers, 0 while limits and budgets run on "
            "per-process counters or are refused (storage.state_failure).",
            multiprocess_mode="livemin",
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
        for result in ("ok", "error"):
            self.reloads.labels(result)  # both series exist from the start, at 0

    # -- fed by the gateway -------------------------------------------------------------------

    def record(self, record: UsageRecord) -> None:
        """Count one finished request (a Recorder: cheap, never blocks)."""
        count, observe = self._count, self._observe
        route = record.route or NONE
        model = record.model or NONE
        provider = record.provider or NONE
        count(self._requests, (route, model, provider, str(record.status)))
        observe(self._latency, (route, model), LATENCY_BUCKETS, record.latency_ms / 1000)
        if record.ttft_ms is not None:
            observe(self._ttft, (model, provider), TTFT_BUCKETS, record.ttft_ms / 1000)
        if record.model is not None:
            workspace = record.workspace
            if record.input_tokens:  # a series appears with its first non-zero count, never at 0
                count(self._tokens, (workspace, model, "input"), record.input_tokens)
            if record.output_tokens:
                count(self._tokens, (workspace, model, "output"), record.output_tokens)
            if record.cached_tokens:
                count(self._tokens, (workspace, model, "cached"), record.cached_tokens)
            if record.cost_usd:
                count(self._cost, (workspace, model), record.cost_usd)
        cache = _cache_result(record)
        if cache == "hit":
            count(self._cache_hits, (model,))
        elif cache == "miss":
            count(self._cache_misses, (model,))

    def attempt(self, provider: str, target: str, seconds: float, result: str) -> None:
        self._observe(self._upstream_latency, (provider, target), LATENCY_BUCKETS, seconds)
        self._count(self._upstream_calls, (provider, target, result))

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

    def set_state_up(self, up: bool) -> None:
        self.state_up.set(1 if up else 0)

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
        forget_worker(os.getpid())


def forget_worker(pid: int) -> None:
    """Drop the live gauges of worker `pid` (it stopped, or died and was replaced): what it
    reported (an open circuit, a config version) must not outlive it. Its counts stay."""
    directory = multiprocess_dir()
    if directory is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, directory)


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
