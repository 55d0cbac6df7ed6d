"""The decision graph: what a compiled config is at request time (SPEC §1, §2.4).

`Graph.decide(ctx, runtime)` is pure: given the request's context and the runtime view the data
plane provides (open circuits, round-robin positions, latency stats, a random draw), it returns a
`Decision` — the matched route or a rejection, the ordered attempt plan, and every policy that
applies. It performs no I/O and never raises a config error: the compiler proved the graph sound.

The types below are the contract between the engine and the data plane.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal

Endpoint = Literal["chat", "completions", "embeddings", "messages"]
EMPTY: Mapping[str, Any] = {}


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What routing may look at (SPEC §2.4.1). Header names are lower-case."""

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


@dataclass(frozen=True, slots=True)
class RuntimeView:
    """Balancing and circuit state owned by the data plane, passed in so `decide` stays pure.

    - `open_circuits`: target ids ("provider/model") whose breaker is open (skipped).
    - `unavailable_providers`: providers with no usable key (all cooling down or none configured).
    - `rr_position`: per catalog model, the round-robin counter to use for this request.
    - `latency_ms`: per target id, the moving average latency (least_latency balancing).
    - `draw`: a number in [0, 1) used by weighted balancing.
    - `assume_providers_available`: ignore providers left without keys by the environment.
      Routing tests (`concord test`, SPEC §6) set it: they check policy, and CI has no secrets.
    """

    open_circuits: frozenset[str] = frozenset()
    unavailable_providers: frozenset[str] = frozenset()
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
    reason: Literal["circuit_open", "provider_unavailable", "context_window"]


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


# -- compiled nodes (built by engine.compile, read only by Graph) ----------------------------------

Check = Callable[[RequestContext], bool]
WhyNot = Callable[[RequestContext], "str | None"]
REQUESTED = "$requested"


@dataclass(frozen=True, slots=True)
class LimitNode:
    """A rate limit as a route sees it: the rule and its compiled `when` (None = always)."""

    rule: RateLimitRule
    test: Check | None = None


@dataclass(frozen=True, slots=True)
class BudgetNode:
    """A `budgets[]` entry: the rule and its compiled `when` (None = always)."""

    rule: BudgetRule
    test: Check | None = None


@dataclass(frozen=True, slots=True)
class RouteNode:
    """A route with every constant part of its decision precomputed (SPEC §2.4.2).

    `test` checks what the route index did not (None = nothing left to check); `why_not`
    explains a miss against the whole `when`. `static_limits` is set when no applicable rate
    limit has a `when`, so decide needs no per-request filtering.
    """

    index: int
    name: str | None
    test: Check | None = None
    why_not: WhyNot | None = None
    use: str | None = REQUESTED
    rejection: Rejection | None = None
    fallbacks: tuple[str, ...] = ()
    retry: RetryPolicy = RetryPolicy()
    timeout: float = 60.0
    cache: CachePolicy | None = None
    cache_test: Check | None = None
    limits: tuple[LimitNode, ...] = ()
    static_limits: tuple[RateLimitRule, ...] | None = ()
    params: ParamOverrides = ParamOverrides()
    context_overflow: Literal["fallback", "truncate", "summarize"] = "fallback"


INDEXED_FIELDS = ("endpoint", "model", "workspace")


@dataclass(frozen=True, slots=True)
class RouteIndex:
    """Which routes can match a given (endpoint, model, workspace).

    Routes whose `when` pins an indexed field to strings sit in per-value buckets (literals) or
    glob lists; the others are wildcards for that field. The candidates of a request are the
    intersection of sets of route positions (C-speed set operations), sorted back into file
    order so first-match-wins is preserved, and memoised per key. For a field without globs,
    values no route pins share one entry, so the tables are bounded by the config; the rest is
    bounded by `_MEMO_LIMIT`.
    """

    routes: tuple[RouteNode, ...]
    buckets: tuple[Mapping[str, frozenset[int]], ...]
    wildcards: tuple[frozenset[int], ...]
    globs: tuple[tuple[tuple[Callable[[str], Any], frozenset[int]], ...], ...] = ((), (), ())
    memo: dict[tuple[Any, ...], tuple[tuple[Check, RouteNode], ...]] = field(default_factory=dict)
    allowed: dict[tuple[Any, ...], frozenset[int]] = field(default_factory=dict)
    checks: tuple[tuple[Check, RouteNode], ...] = field(init=False)

    def __post_init__(self) -> None:
        # (test, route) pairs, a test always present: the hot loop does one unpack and one call.
        pairs = tuple((node.test or _always, node) for node in self.routes)
        object.__setattr__(self, "checks", pairs)

    def candidates(self, key: tuple[Any, ...]) -> tuple[tuple[Check, RouteNode], ...]:
        """(residual test, route) for the routes that may match `key`, in file order."""
        found = self.memo.get(key)
        if found is not None:
            return found
        known = tuple(
            value if value in bucket or globs else None
            for value, bucket, globs in zip(key, self.buckets, self.globs, strict=True)
        )
        found = self.memo.get(known)
        if found is None:
            # (endpoint, model) pairs are few: intersect those once, then with the workspace's.
            pair = self._allowed((0, 1), known[:2])
            positions = pair & self._allowed((2,), known[2:])
            found = tuple(map(self.checks.__getitem__, sorted(positions)))
            _remember(self.memo, known, found)
        _remember(self.memo, key, found)
        return found

    def _allowed(self, fields: tuple[int, ...], values: tuple[Any, ...]) -> frozenset[int]:
        """Routes that accept `values` for the indexed `fields`: buckets, globs, wildcards."""
        found = self.allowed.get((fields, values))
        if found is None:
            sets = []
            for f, value in zip(fields, values, strict=True):
                accepted = set(self.wildcards[f])
                if isinstance(value, str):
                    accepted.update(self.buckets[f].get(value, ()))
                    for match, positions in self.globs[f]:
                        if match(value):
                            accepted.update(positions)
                sets.append(accepted)
            found = frozenset(sets[0].intersection(*sets[1:]))
            _remember(self.allowed, (fields, values), found)
        return found


_MEMO_LIMIT = 65536


def _always(ctx: RequestContext) -> bool:
    return True


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    """Memoise within a bound: keys can be client-chosen strings."""
    if len(memo) < _MEMO_LIMIT:
        memo[key] = value


# -- the graph -------------------------------------------------------------------------------------


class Graph:
    """A compiled config: immutable, shared by every request until the next reload swaps it.

    Build it with `concord.engine.compile.compile_graph`. Internal memo tables fill lazily but
    never change an answer: `decide` is a pure function of (ctx, runtime).
    """

    __slots__ = (
        "_breaker",
        "_budget_nodes",
        "_budgets_memo",
        "_budgets_static",
        "_decisions",
        "_default_route",
        "_index",
        "_key_cooldown",
        "_plans",
        "_provider_ok",
        "_routes",
        "_routes_by_name",
        "_visible",
        "_workspace_budgets",
        "auth",
        "budgets",
        "files",
        "models",
        "providers",
        "rate_limits",
        "server",
        "storage",
        "tests",
        "version",
        "workspaces",
    )

    version: str
    files: tuple[str, ...]
    providers: Mapping[str, ProviderSpec]
    models: Mapping[str, CatalogModel]
    server: ServerSettings
    storage: StorageSettings
    auth: AuthSettings
    workspaces: Mapping[str, WorkspaceSpec]
    rate_limits: Mapping[str, RateLimitRule]
    budgets: tuple[BudgetRule, ...]
    tests: tuple[RoutingTest, ...]

    def __init__(
        self,
        *,
        version: str,
        files: tuple[str, ...],
        providers: Mapping[str, ProviderSpec],
        models: Mapping[str, CatalogModel],
        server: ServerSettings,
        storage: StorageSettings,
        auth: AuthSettings,
        workspaces: Mapping[str, WorkspaceSpec],
        rate_limits: Mapping[str, RateLimitRule],
        budgets: tuple[BudgetNode, ...],
        tests: tuple[RoutingTest, ...],
        routes: tuple[RouteNode, ...],
        default_route: RouteNode,
        index: RouteIndex,
        visible: Mapping[str, frozenset[str]],
        breaker: BreakerPolicy,
        key_cooldown: float,
    ) -> None:
        init = object.__setattr__
        init(self, "version", version)
        init(self, "files", files)
        init(self, "providers", MappingProxyType(dict(providers)))
        init(self, "models", MappingProxyType(dict(models)))
        init(self, "server", server)
        init(self, "storage", storage)
        init(self, "auth", auth)
        init(self, "workspaces", MappingProxyType(dict(workspaces)))
        init(self, "rate_limits", MappingProxyType(dict(rate_limits)))
        init(self, "budgets", tuple(node.rule for node in budgets))
        init(self, "tests", tests)
        init(self, "_budget_nodes", budgets)
        init(self, "_routes", routes)
        init(self, "_default_route", default_route)
        init(self, "_index", index)
        init(self, "_visible", MappingProxyType(dict(visible)))
        init(self, "_breaker", breaker)
        init(self, "_key_cooldown", key_cooldown)
        by_name: dict[str | None, RouteNode] = {}
        for node in routes:
            by_name.setdefault(node.name, node)
        init(self, "_routes_by_name", MappingProxyType(by_name))
        ok = frozenset(name for name, spec in providers.items() if spec.available)
        init(self, "_provider_ok", ok)
        budgets_by_ws = {ws.name: ws.budget for ws in workspaces.values() if ws.budget}
        init(self, "_workspace_budgets", MappingProxyType(budgets_by_ws))
        init(self, "_plans", {})
        init(self, "_decisions", {})
        init(self, "_budgets_memo", {})
        init(self, "_budgets_static", all(node.test is None for node in budgets))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Graph is immutable; compile a new one")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Graph is immutable; compile a new one")

    def __repr__(self) -> str:
        return (
            f"<Graph version={self.version!r} routes={len(self._routes)} models={len(self.models)}>"
        )

    @property
    def route_names(self) -> tuple[str, ...]:
        """Route names in evaluation order."""
        return tuple(node.name or "" for node in self._routes)

    # -- decide -------------------------------------------------------------------------------

    def decide(self, ctx: RequestContext, runtime: RuntimeView = NO_RUNTIME) -> Decision:
        """Route one request (SPEC §2.4): pure, no I/O, never raises."""
        try:
            node = self._match(ctx)
            if node.rejection is not None:
                return Decision(node.name, ctx.model, None, rejection=node.rejection)
            model = ctx.model if node.use == REQUESTED else node.use
            return self._serve(node, model, ctx, runtime, check_visibility=True)
        except Exception:  # a bug must not take the request path down with it
            return _internal_error(ctx)

    def replan(
        self,
        decision: Decision,
        model: str,
        ctx: RequestContext,
        runtime: RuntimeView = NO_RUNTIME,
    ) -> Decision:
        """The same route's policies serving catalog `model` (budget downgrade, SPEC §2.6)."""
        try:
            node = self._routes_by_name.get(decision.route, self._default_route)
            return self._serve(node, model, ctx, runtime, check_visibility=False)
        except Exception:
            return _internal_error(ctx)

    def explain(self, ctx: RequestContext, runtime: RuntimeView = NO_RUNTIME) -> Explanation:
        """The decision and, per route before the matched one, the first condition that failed."""
        decision = self.decide(ctx, runtime)
        try:
            matched = self._match(ctx)
            end = len(self._routes) if matched is self._default_route else matched.index
            misses = []
            for node in self._routes[:end]:
                reason = node.why_not(ctx) if node.why_not is not None else None
                misses.append(RouteMiss(node.name or "", reason or "did not match"))
        except Exception:  # the context is malformed; decide already answered
            return Explanation(decision)
        return Explanation(decision, tuple(misses))

    def budgets_for(self, ctx: RequestContext) -> tuple[BudgetRule, ...]:
        """Budgets that apply to a request: its workspace's, then matching `budgets[]` (§2.6)."""
        key = None
        if self._budgets_static:  # without `when`s, budgets depend on three facts only
            key = (ctx.workspace, ctx.key is None, ctx.user is None)
            found = self._budgets_memo.get(key)
            if found is not None:
                return found
        own = self._workspace_budgets.get(ctx.workspace)
        rules = [own] if own is not None else []
        for node in self._budget_nodes:
            scope = node.rule.scope
            if (scope == "key" and ctx.key is None) or (scope == "user" and ctx.user is None):
                continue
            if node.test is None or node.test(ctx):
                rules.append(node.rule)
        budgets = tuple(rules)
        if key is not None:
            _remember(self._budgets_memo, key, budgets)
        return budgets

    def visible_models(self, workspace: str) -> list[str]:
        """Catalog names a workspace may see and call (`GET /v1/models`)."""
        visible = self._visible.get(workspace)
        return [name for name in self.models if visible is None or name in visible]

    # -- internals ----------------------------------------------------------------------------

    def _match(self, ctx: RequestContext) -> RouteNode:
        """The first route whose `when` holds, or the implicit `use: $requested` route."""
        key = (ctx.endpoint, ctx.model, ctx.workspace)
        index = self._index
        for test, node in index.memo.get(key) or index.candidates(key):
            if test(ctx):
                return node
        return self._default_route

    def _serve(
        self,
        node: RouteNode,
        model: str | None,
        ctx: RequestContext,
        runtime: RuntimeView,
        *,
        check_visibility: bool,
    ) -> Decision:
        if model not in self.models:
            return Decision(node.name, ctx.model, None)
        if check_visibility:
            visible = self._visible.get(ctx.workspace)
            if visible is not None and model not in visible:
                return Decision(node.name, ctx.model, None)
        need = ctx.input_tokens + (ctx.max_tokens or 0)
        check_window = node.context_overflow == "fallback"
        cacheable = node.cache is not None and (node.cache_test is None or node.cache_test(ctx))
        key = None
        if node.static_limits is not None and self._budgets_static:
            # The common case: the Decision is a function of these alone, so it is shared.
            key = (node.index, model, ctx.model, cacheable, ctx.workspace, ctx.key is None,
                   ctx.user is None)  # fmt: skip
            hit = self._decisions.get(key)
            if hit is not None and hit[0].holds(runtime, need, check_window):
                return hit[1]
        plan = self._plans.get((node.index, model)) or self._static_plan(node, model)
        budgets = self.budgets_for(ctx)
        if not plan.holds(runtime, need, check_window):
            attempts, skipped = self._plan(plan.chain, node, ctx, runtime)
            return self._assemble(node, plan, ctx, budgets, cacheable, attempts, skipped)
        decision = self._assemble(node, plan, ctx, budgets, cacheable)
        if key is not None:
            _remember(self._decisions, key, (plan, decision))
        return decision

    def _assemble(
        self,
        node: RouteNode,
        plan: StaticPlan,
        ctx: RequestContext,
        budgets: tuple[BudgetRule, ...],
        cacheable: bool,
        attempts: tuple[Attempt, ...] | None = None,
        skipped: tuple[Skip, ...] | None = None,
    ) -> Decision:
        limits = node.static_limits
        if limits is None:
            limits = tuple(n.rule for n in node.limits if n.test is None or n.test(ctx))
        first = plan.chain[0]
        return Decision(
            node.name,
            ctx.model,
            first.name,
            attempts=plan.attempts if attempts is None else attempts,
            skipped=plan.skipped if skipped is None else skipped,
            fallbacks=plan.fallbacks,
            retry=node.retry,
            breaker=self._breaker,
            timeout=node.timeout,
            cache=node.cache if cacheable else None,
            rate_limits=limits,
            budgets=budgets,
            params=node.params,
            context_overflow=node.context_overflow,
            price=first.price,
            key_cooldown=self._key_cooldown,
        )

    def _static_plan(self, node: RouteNode, model: str) -> StaticPlan:
        """The plan with no runtime state and a prompt that fits every window (memoised)."""
        seen: dict[str, CatalogModel] = {}
        self._expand(model, seen)
        for name in node.fallbacks:
            self._expand(name, seen)
        chain = tuple(seen.values())
        bare = RequestContext("chat", model)
        attempts, skipped = self._plan(chain, node, bare, NO_RUNTIME)
        windows = [m.context_window for m in chain if m.context_window is not None]
        plan = StaticPlan(
            chain=chain,
            attempts=attempts,
            skipped=skipped,
            fallbacks=tuple(m.name for m in chain[1:]),
            balanced=any(m.balance != "priority" and len(m.targets) > 1 for m in chain),
            target_ids=frozenset(t.id for m in chain for t in m.targets),
            providers=frozenset(t.provider for m in chain for t in m.targets),
            min_window=min(windows) if windows else None,
        )
        _remember(self._plans, (node.index, model), plan)
        return plan

    def _expand(self, name: str, seen: dict[str, CatalogModel]) -> None:
        """`name`, then its fallbacks depth first; a model already planned is not repeated."""
        catalog = self.models.get(name)
        if catalog is None or name in seen:
            return
        seen[name] = catalog
        for fallback in catalog.fallbacks:
            self._expand(fallback, seen)

    def _plan(
        self,
        chain: tuple[CatalogModel, ...],
        node: RouteNode,
        ctx: RequestContext,
        runtime: RuntimeView,
    ) -> tuple[tuple[Attempt, ...], tuple[Skip, ...]]:
        """The attempt plan (SPEC §2.3, §2.5): targets by balance, skipping unusable ones."""
        attempts: list[Attempt] = []
        skipped: list[Skip] = []
        need = ctx.input_tokens + (ctx.max_tokens or 0)
        check_window = node.context_overflow == "fallback"
        tries = node.retry.attempts
        for catalog in chain:
            window = catalog.context_window
            if check_window and window is not None and window < need:
                skipped.extend(Skip(catalog.name, t.id, "context_window") for t in catalog.targets)
                continue
            usable = []
            for target in catalog.targets:
                reason = self._skip_reason(target, runtime)
                if reason is None:
                    usable.append(target)
                else:
                    skipped.append(Skip(catalog.name, target.id, reason))
            for target in order_targets(catalog, usable, runtime):
                attempts.append(Attempt(catalog.name, target, tries, window))
        return tuple(attempts), tuple(skipped)

    def _skip_reason(
        self, target: Target, runtime: RuntimeView
    ) -> Literal["circuit_open", "provider_unavailable"] | None:
        if target.provider not in self._provider_ok and not (
            runtime.assume_providers_available and target.provider in self.providers
        ):
            return "provider_unavailable"
        if target.provider in runtime.unavailable_providers:
            return "provider_unavailable"
        if target.id in runtime.open_circuits:
            return "circuit_open"
        return None


@dataclass(frozen=True, slots=True)
class StaticPlan:
    """A route's plan for one model with no runtime state: reused while the runtime allows.

    `chain` is the model, its fallbacks depth first, then the route's fallbacks (SPEC §2.5).
    """

    chain: tuple[CatalogModel, ...]
    attempts: tuple[Attempt, ...]
    skipped: tuple[Skip, ...]
    fallbacks: tuple[str, ...]
    balanced: bool
    target_ids: frozenset[str]
    providers: frozenset[str]
    min_window: int | None

    def holds(self, runtime: RuntimeView, need: int, check_window: bool) -> bool:
        """Whether this request under `runtime` gets exactly the static plan."""
        if self.balanced or (runtime.assume_providers_available and self.skipped):
            return False
        if runtime.open_circuits and not self.target_ids.isdisjoint(runtime.open_circuits):
            return False
        unavailable = runtime.unavailable_providers
        if unavailable and not self.providers.isdisjoint(unavailable):
            return False
        return not (check_window and self.min_window is not None and need > self.min_window)


def order_targets(
    catalog: CatalogModel, usable: list[Target], runtime: RuntimeView
) -> list[Target]:
    """Targets in the order to try them, by the model's `balance` (SPEC §2.3)."""
    if len(usable) < 2 or catalog.balance == "priority":
        return usable
    if catalog.balance == "weighted":
        total = sum(t.weight for t in usable)
        point = runtime.draw * total
        first = len(usable) - 1
        for i, target in enumerate(usable):
            point -= target.weight
            if point < 0:
                first = i
                break
        rest = sorted(usable[:first] + usable[first + 1 :], key=lambda t: -t.weight)
        return [usable[first], *rest]
    if catalog.balance == "round_robin":
        shift = runtime.rr_position.get(catalog.name, 0) % len(usable)
        return usable[shift:] + usable[:shift]
    if catalog.balance == "least_latency":
        latency = runtime.latency_ms
        return sorted(usable, key=lambda t: (t.id in latency, latency.get(t.id, 0.0)))
    return usable


def _internal_error(ctx: RequestContext) -> Decision:
    requested = getattr(ctx, "model", "")
    rejection = Rejection(500, "internal routing error", code="routing_error")
    return Decision(
        None, requested if isinstance(requested, str) else "", None, rejection=rejection
    )
