"""The contract between the engine and the data plane (SPEC §1, §2.4).

Request contexts, runtime views, decisions and the compiled settings the data plane reads: plain
frozen dataclasses, built by `engine.compile` and returned by `Graph.decide`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Endpoint = Literal["chat", "completions", "embeddings", "messages"]
EMPTY: Mapping[str, Any] = {}


@dataclass(slots=True)
class RequestContext:
    """What routing may look at (SPEC §2.4.1). Header names are lower-case.

    Not frozen, though nothing changes a context once built (`dataclasses.replace` makes a new
    one): a frozen dataclass sets each of its sixteen fields through `object.__setattr__`, a
    cost paid on every request."""

    endpoint: Endpoint
    model: str
    workspace: str = "default"
    key: str | None = None
    user: str | None = None
    tags: frozenset[str] = frozenset()
    headers: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    input_tokens: int = 0
    max_tokens: int | None = None
    temperature: float | None = None
    stream: bool = False
    tools: bool = False
    images: bool = False
    budget_used: float = 0.0
    # a database key's id (names are not unique across workspaces); None for a key the config
    # declares, whose name is unique. Per-key limits and budgets count against the pair
    # (`concord.state.principal.key_ident`).
    key_id: str | None = None


@dataclass(slots=True, unsafe_hash=True)
class RuntimeView:
    """Balancing and circuit state owned by the data plane, passed in so `decide` stays pure.

    - `open_circuits`: target ids ("provider/model") whose breaker is open (skipped).
    - `unavailable_providers`: providers with no usable key (all cooling down or none configured).
    - `cooling_targets`: target ids whose upstream model every key of their provider is cooling
      down for (a 429 benches a key for that model only, SPEC §2.2).
    - `rr_position`: per catalog model, the round-robin counter to use for this request.
    - `latency_ms`: per target id, the moving average latency (least_latency balancing).
    - `draw`: a number in [0, 1) used by weighted balancing.
    - `assume_providers_available`: ignore providers left without keys by the environment.
      Routing tests (`concord test`, SPEC §6) set it: they check policy, and CI has no secrets.
    """

    open_circuits: frozenset[str] = frozenset()
    unavailable_providers: frozenset[str] = frozenset()
    cooling_targets: frozenset[str] = frozenset()
    rr_position: Mapping[str, int] = field(default_factory=dict)
    latency_ms: Mapping[str, float] = field(default_factory=dict)
    draw: float = 0.0
    assume_providers_available: bool = False


NO_RUNTIME = RuntimeView()


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
        """Cost in USD of one call; cached input tokens are billed at `cached_input` if set."""
        cached_rate = self.input if self.cached_input is None else self.cached_input
        fresh = max(input_tokens - cached_tokens, 0)
        total = fresh * self.input + cached_tokens * cached_rate + output_tokens * self.output
        return total / 1e6


@dataclass(frozen=True, slots=True)
class Target:
    """One upstream deployment of a catalog model: `provider/upstream-model`."""

    id: str
    provider: str
    upstream_model: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class CatalogModel:
    name: str
    targets: tuple[Target, ...]
    balance: str = "priority"
    price: Price | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None
    fallbacks: tuple[str, ...] = ()  # models tried once every target failed (SPEC §2.5)


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.25
    max: float = 8.0
    jitter: bool = True


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 2
    backoff: Backoff = Backoff()
    on_status: frozenset[int] = frozenset({429, 500, 502, 503, 504})
    on_timeout: bool = True
    on_connection: bool = True


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failures: int = 3
    cooldown: float = 600.0


@dataclass(frozen=True, slots=True)
class CachePolicy:
    ttl: float
    scope: Literal["workspace", "global"] = "workspace"
    max_entries: int = 10000


@dataclass(frozen=True, slots=True)
class RateLimitRule:
    name: str
    per: Literal["key", "workspace", "user", "global"]
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, slots=True)
class BudgetRule:
    """A budget that applies to the request; `name` is `workspace:<name>` for workspace budgets."""

    name: str
    scope: Literal["key", "workspace", "user", "global"]
    limit_usd: float
    period: Literal["day", "week", "month"] = "month"
    on_exceed: Literal["block", "downgrade"] = "block"
    downgrade_to: str | None = None


@dataclass(frozen=True, slots=True)
class ParamOverrides:
    """Route `params`: `set` forces body values, `max` caps numeric ones (SPEC §2.4.2)."""

    set: Mapping[str, Any] = field(default_factory=dict)
    max: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One entry of the attempt plan: try `target` of catalog model `model` up to `tries` times."""

    model: str
    target: Target
    tries: int
    context_window: int | None = None


@dataclass(frozen=True, slots=True)
class Skip:
    """A target left out of the plan before any call, and why (explain output)."""

    model: str
    target: str
    reason: Literal["circuit_open", "provider_unavailable", "keys_cooling", "context_window"]


@dataclass(frozen=True, slots=True)
class Rejection:
    status: int
    message: str
    code: str = "rejected_by_policy"


@dataclass(frozen=True, slots=True)
class RouteMiss:
    """Why one earlier route did not match (explain output): its name and the failing condition."""

    route: str
    condition: str


@dataclass(frozen=True, slots=True)
class Decision:
    """Everything the data plane needs to serve one request."""

    route: str | None
    requested_model: str
    model: str | None
    attempts: tuple[Attempt, ...] = ()
    skipped: tuple[Skip, ...] = ()
    rejection: Rejection | None = None
    fallbacks: tuple[str, ...] = ()
    retry: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()
    timeout: float = 60.0
    cache: CachePolicy | None = None
    rate_limits: tuple[RateLimitRule, ...] = ()
    budgets: tuple[BudgetRule, ...] = ()
    params: ParamOverrides = ParamOverrides()
    context_overflow: Literal["fallback", "truncate", "summarize"] = "fallback"
    price: Price | None = None
    key_cooldown: float = 300.0

    @property
    def not_found(self) -> bool:
        """The resolved model is not in the catalog: 404 model_not_found (SPEC §2.4)."""
        return self.rejection is None and self.model is None


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """A provider's background health probe (SPEC §5): one tiny request every `interval`."""

    interval: float
    model: str
    timeout: float


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """A provider as the data plane needs it. `api_keys` are secrets: never print them."""

    name: str
    type: Literal["openai", "azure", "anthropic", "mock"]
    base_url: str | None = None
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    api_version: str | None = None
    timeout: float = 60.0
    max_connections: int = 200
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    key_cooldown: float = 300.0
    reply: str | None = None
    latency: float = 0.0
    keys_declared: bool = False  # api_keys were written, even if the environment emptied them
    probe: ProbeSettings | None = None

    @property
    def available(self) -> bool:
        """A provider whose declared keys all came out empty cannot serve (SPEC §2.1).

        An OpenAI-compatible provider declared without `api_keys` (a local vLLM or Ollama) can.
        """
        if self.type == "mock" or self.api_keys:
            return True
        return self.type == "openai" and not self.keys_declared


# -- settings the data plane reads -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body: int = 8 * 1024 * 1024
    max_concurrency: int = 0
    queue_timeout: float = 30.0
    request_timeout: float = 600.0
    cors_origins: tuple[str, ...] = ()
    log_bodies: bool = False


@dataclass(frozen=True, slots=True)
class StorageSettings:
    state: str = "memory"
    database: str = "sqlite:///concord.db"
    state_failure: Literal["open", "closed"] = "open"


@dataclass(frozen=True, slots=True)
class DeclaredKeySpec:
    """A client key declared in the config by hash (SPEC §2.8); the hash is the mapping key."""

    name: str
    workspace: str = "default"
    user: str | None = None
    tags: frozenset[str] = frozenset()
    expires: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuthSettings:
    admin_key: str = field(default="", repr=False)
    mode: Literal["keys", "open"] = "keys"
    keys: Mapping[str, DeclaredKeySpec] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class WorkspaceSpec:
    """A workspace declared in the config; `models` are visibility globs (None = all)."""

    name: str
    tags: frozenset[str] = frozenset()
    budget: BudgetRule | None = None
    models: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Explanation:
    """`Graph.explain`: the decision and, for each earlier route, why it did not match."""

    decision: Decision
    misses: tuple[RouteMiss, ...] = ()


@dataclass(frozen=True, slots=True)
class TestExpectation:
    """What a routing test expects (SPEC §6); None fields are not checked."""

    __test__ = False  # not a pytest class

    route: str | None = None
    model: str | None = None
    attempts: tuple[str, ...] | None = None
    reject: int | bool | None = None
    cache: bool | None = None
    limits: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class RoutingTest:
    """One compiled `tests:` case: the request context to decide and what to expect."""

    name: str
    context: RequestContext
    expect: TestExpectation
