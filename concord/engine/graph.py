"""The decision graph: what a compiled config is at request time (SPEC §1, §2.4).

`Graph.decide(ctx, runtime)` is pure: given the request's context and the runtime view the data
plane provides (open circuits, round-robin positions, latency stats, a random draw), it returns a
`Decision` — the matched route or a rejection, the ordered attempt plan, and every policy that
applies. It performs no I/O and never raises a config error: the compiler proved the graph sound.

The contract types live in `engine.decision` and are re-exported here, where callers look.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

from concord.engine.decision import (
    EMPTY,
    NO_RUNTIME,
    Attempt,
    AuthSettings,
    Backoff,
    BreakerPolicy,
    BudgetRule,
    CachePolicy,
    CatalogModel,
    Decision,
    DeclaredKeySpec,
    Endpoint,
    Explanation,
    ParamOverrides,
    Price,
    ProviderSpec,
    RateLimitRule,
    Rejection,
    RequestContext,
    RetryPolicy,
    RouteMiss,
    RoutingTest,
    RuntimeView,
    ServerSettings,
    Skip,
    StorageSettings,
    Target,
    TestExpectation,
    WorkspaceSpec,
)
from concord.engine.nodes import (
    REQUESTED,
    BudgetNode,
    RouteIndex,
    RouteNode,
    _remember,
)
from concord.engine.plan import StaticPlan, order_targets

__all__ = [
    "EMPTY",
    "NO_RUNTIME",
    "Attempt",
    "AuthSettings",
    "Backoff",
    "BreakerPolicy",
    "BudgetNode",
    "BudgetRule",
    "CachePolicy",
    "CatalogModel",
    "Decision",
    "DeclaredKeySpec",
    "Endpoint",
    "Explanation",
    "Graph",
    "ParamOverrides",
    "Price",
    "ProviderSpec",
    "RateLimitRule",
    "Rejection",
    "RequestContext",
    "RetryPolicy",
    "RouteIndex",
    "RouteMiss",
    "RouteNode",
    "RoutingTest",
    "RuntimeView",
    "ServerSettings",
    "Skip",
    "StorageSettings",
    "Target",
    "TestExpectation",
    "WorkspaceSpec",
]


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
        "conditional_budgets",
        "files",
        "models",
        "providers",
        "rate_limits",
        "reads_budget_used",
        "server",
        "storage",
        "tests",
        "unconditional_budgets",
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
    reads_budget_used: bool  # some `when` reads budget_used: the data plane fetches spend first
    unconditional_budgets: tuple[BudgetRule, ...]  # `budgets[]` without `when` (spend rebuilds)
    # `budgets[]` with a `when`, by name: a usage row names those it was charged to, so their
    # spend can be rebuilt too
    conditional_budgets: Mapping[str, BudgetRule]

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
        reads_budget_used: bool = True,
    ) -> None:
        init = object.__setattr__
        init(self, "reads_budget_used", reads_budget_used)
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
        init(self, "unconditional_budgets", tuple(n.rule for n in budgets if n.test is None))
        conditional = {n.rule.name: n.rule for n in budgets if n.test is not None}
        init(self, "conditional_budgets", MappingProxyType(conditional))
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

    def downgrade(
        self,
        decision: Decision,
        target: str | None,
        ctx: RequestContext,
        runtime: RuntimeView = NO_RUNTIME,
    ) -> Decision | None:
        """An exhausted budget's move to `target` (SPEC §2.6), or None where the request is
        served as asked: no target, already on it, embeddings (no cheaper model to move to), or
        a target this route cannot serve. The gateway and `concord explain` both ask here."""
        if target is None or target == decision.model or ctx.endpoint == "embeddings":
            return None
        downgraded = self.replan(decision, target, ctx, runtime)
        if downgraded.model is None or downgraded.rejection is not None:
            return None
        return downgraded

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
    ) -> Literal["circuit_open", "provider_unavailable", "keys_cooling"] | None:
        if target.provider not in self._provider_ok and not (
            runtime.assume_providers_available and target.provider in self.providers
        ):
            return "provider_unavailable"
        if target.provider in runtime.unavailable_providers:
            return "provider_unavailable"
        if target.id in runtime.cooling_targets:
            return "keys_cooling"
        if target.id in runtime.open_circuits:
            return "circuit_open"
        return None


def _internal_error(ctx: RequestContext) -> Decision:
    requested = getattr(ctx, "model", "")
    rejection = Rejection(500, "internal routing error", code="routing_error")
    return Decision(
        None, requested if isinstance(requested, str) else "", None, rejection=rejection
    )
