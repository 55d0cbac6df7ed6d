"""Config -> Graph, in named stages; the only place that resolves names (SPEC §2.3-§2.7).

`compile_graph(config)` turns a validated `Config` into the immutable `Graph` the data plane
evaluates per request. Every `when` is compiled once here, retry/cache/limit policies are merged
per route, and routes are indexed by the literal endpoint/model/workspace they pin, so `decide`
only assembles precomputed parts.

Semantic checks (`config.checks`) run before this and report unknown references; compile
tolerates them (an unknown model is `not_found` at decide time, an unknown fallback or provider is
skipped). What cannot be compiled at all (a malformed target, a bad regex) raises `ConfigError`.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from concord.config import model as cfg
from concord.config.errors import ConfigError, Diagnostic, Location, Path, dotted
from concord.engine import graph as g
from concord.engine import nodes
from concord.engine.decision import ProbeSettings
from concord.engine.match import Condition, WhenError, compile_when, glob_regex

if TYPE_CHECKING:
    from concord.config.source import Source

# SPEC §2.5: the cache `when` when none is given. Embeddings carry no temperature and are
# deterministic, so they are cacheable by default too.
DEFAULT_CACHE_WHEN: dict[str, Any] = {"any": [{"endpoint": "embeddings"}, {"temperature": 0}]}


def compile_graph(
    config: cfg.Config, *, source: Source | None = None, version: str = ""
) -> g.Graph:
    """Compile a validated config; raises ConfigError listing everything that cannot compile."""
    # Compiling allocates many small closures; the cyclic GC rescanning the growing heap made a
    # 10,000-route compile 6x slower. Nothing here leaks cycles, so pause it (off the request path).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _Compiler(config, source, version).run()
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class _Compiler:
    config: cfg.Config
    source: Source | None
    version: str
    errors: list[Diagnostic] = field(default_factory=list)
    scoped_limits: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        # SPEC §2.4.2: limits named by any route apply only on the routes that name them.
        self.scoped_limits = frozenset(n for route in self.config.routes for n in route.limits)

    def run(self) -> g.Graph:
        c = self.config
        providers = self.providers()
        models = self.models()
        workspaces = self.workspaces()
        visible = self.visibility(workspaces, models)
        rate_limits = self.rate_limits()
        budgets = self.budgets()
        routes = tuple(self.route(i, route, rate_limits) for i, route in enumerate(c.routes))
        default_route = self.default_route(len(routes), rate_limits)
        auth = _auth(c.auth)
        tests = self.tests(workspaces, auth.keys)
        if self.errors:
            raise ConfigError(self.errors)
        return g.Graph(
            version=self.version,
            files=tuple(self.source.files) if self.source is not None else (),
            providers=providers,
            models=models,
            server=_server(c.server),
            storage=g.StorageSettings(c.storage.state, c.storage.database, c.storage.state_failure),
            auth=auth,
            workspaces=workspaces,
            rate_limits=_by_name(rule for rule, _ in rate_limits),
            budgets=budgets,
            tests=tests,
            routes=tuple(node for node, _ in routes),
            default_route=default_route,
            index=_index(routes),
            visible=visible,
            breaker=g.BreakerPolicy(
                c.defaults.circuit_breaker.failures, c.defaults.circuit_breaker.cooldown
            ),
            key_cooldown=c.defaults.key_cooldown,
            reads_budget_used=_reads_field(c, "budget_used"),
        )

    # -- diagnostics ----------------------------------------------------------------------------

    def error(self, path: Path, message: str, hint: str | None = None) -> None:
        where = self.source.where(path) if self.source is not None else Location("<config>")
        self.errors.append(Diagnostic("error", where, dotted(path), message, hint, code="compile"))

    def when(
        self, raw: Mapping[str, Any] | None, path: Path, pins: Iterable[str] = ()
    ) -> Condition | None:
        """Compile one `when`; on error, record it and treat the condition as never matching."""
        try:
            return compile_when(raw, tuple(pins))
        except WhenError as exc:
            self.error((*path, *exc.path), exc.message, exc.hint)
            return _NEVER

    # -- stages ---------------------------------------------------------------------------------

    def providers(self) -> dict[str, g.ProviderSpec]:
        d = self.config.defaults
        keyless = self.source.keyless_providers if self.source is not None else frozenset()
        return {
            name: g.ProviderSpec(
                name=name,
                type=p.type,
                base_url=p.base_url,
                api_keys=tuple(key for key in p.api_keys if key),
                keys_declared=bool(p.api_keys) or name in keyless,
                api_version=p.api_version,
                timeout=d.timeout if p.timeout is None else p.timeout,
                max_connections=p.max_connections,
                headers=MappingProxyType(dict(p.headers)),
                key_cooldown=d.key_cooldown if p.key_cooldown is None else p.key_cooldown,
                reply=p.reply,
                latency=p.latency,
                probe=(
                    ProbeSettings(p.probe.interval, p.probe.model, p.probe.timeout)
                    if p.probe is not None
                    else None
                ),
            )
            for name, p in self.config.providers.items()
        }

    def models(self) -> dict[str, g.CatalogModel]:
        out = {}
        for name, m in self.config.models.items():
            targets = []
            for i, spec in enumerate(m.targets):
                raw, weight = (spec, 1.0) if isinstance(spec, str) else (spec.target, spec.weight)
                provider, _, upstream = raw.partition("/")
                if not provider or not upstream:
                    path = ("models", name, "targets", i)
                    self.error(path, f"target '{raw}' is not provider/model", "e.g. openai/gpt-4o")
                    continue
                targets.append(g.Target(raw, provider, upstream, weight))
            price = m.price
            out[name] = g.CatalogModel(
                name=name,
                targets=tuple(targets),
                balance=m.balance,
                price=g.Price(price.input, price.output, price.cached_input) if price else None,
                context_window=m.context_window,
                max_output_tokens=m.max_output_tokens,
                fallbacks=tuple(m.fallbacks),
            )
        return out

    def workspaces(self) -> dict[str, g.WorkspaceSpec]:
        out = {}
        for name, ws in self.config.workspaces.items():
            budget = None
            if ws.budget is not None:
                b = ws.budget
                budget = g.BudgetRule(
                    f"workspace:{name}", "workspace", b.limit_usd, b.period, b.on_exceed,
                    b.downgrade_to,
                )  # fmt: skip
            models = tuple(ws.models) if ws.models is not None else None
            out[name] = g.WorkspaceSpec(name, frozenset(ws.tags), budget, models)
        return out

    def visibility(
        self, workspaces: Mapping[str, g.WorkspaceSpec], models: Mapping[str, g.CatalogModel]
    ) -> dict[str, frozenset[str]]:
        """Per restricted workspace, the catalog names its `models` globs allow (SPEC §2.6)."""
        out = {}
        for name, ws in workspaces.items():
            if ws.models is None:
                continue
            patterns = [glob_regex(p) for p in ws.models]
            out[name] = frozenset(m for m in models if any(p.match(m) for p in patterns))
        return out

    def rate_limits(self) -> list[tuple[g.RateLimitRule, Condition | None]]:
        out = []
        for i, rl in enumerate(self.config.rate_limits):
            rule = g.RateLimitRule(rl.name, rl.per, rl.rpm, rl.tpm)
            out.append((rule, self.when(rl.when, ("rate_limits", i, "when"))))
        return out

    def budgets(self) -> tuple[nodes.BudgetNode, ...]:
        out = []
        for i, b in enumerate(self.config.budgets):
            rule = g.BudgetRule(b.name, b.scope, b.limit_usd, b.period, b.on_exceed, b.downgrade_to)
            cond = self.when(b.when, ("budgets", i, "when"))
            out.append(nodes.BudgetNode(rule, cond.test if cond is not None else None))
        return tuple(out)

    def route(
        self, i: int, route: cfg.Route, rate_limits: list[tuple[g.RateLimitRule, Condition | None]]
    ) -> tuple[nodes.RouteNode, Mapping[str, frozenset[str]]]:
        """One route with its constant decision parts, plus the literal values it pins."""
        path: Path = ("routes", i)
        cond = self.when(route.when, (*path, "when"), nodes.INDEXED_FIELDS)
        d = self.config.defaults
        cache, cache_test = self.cache(d.cache, route.cache, (*path, "cache"))
        limits = self.limits_for(route.limits, rate_limits)
        rejection = None
        if route.reject is not None:
            rejection = g.Rejection(route.reject.status, route.reject.message)
        node = nodes.RouteNode(
            index=i,
            name=route.name,
            test=cond.residual if cond is not None else None,
            why_not=cond.why_not if cond is not None else None,
            use=route.use if route.use is not None else nodes.REQUESTED,
            rejection=rejection,
            fallbacks=tuple(route.fallbacks),
            retry=_retry(d.retry, route.retry),
            timeout=d.timeout if route.timeout is None else route.timeout,
            cache=cache,
            cache_test=cache_test,
            limits=limits,
            static_limits=_static(limits),
            params=_params(route.params),
            context_overflow=route.context_overflow or d.context_overflow,
        )
        return node, (cond.pins if cond is not None else {})

    def default_route(
        self, index: int, rate_limits: list[tuple[g.RateLimitRule, Condition | None]]
    ) -> nodes.RouteNode:
        """No route matched: `use: $requested` with defaults (SPEC §2.4)."""
        d = self.config.defaults
        cache, cache_test = self.cache(d.cache, None, ("defaults", "cache"))
        limits = self.limits_for([], rate_limits)
        return nodes.RouteNode(
            index=index,
            name=None,
            retry=_retry(d.retry, None),
            timeout=d.timeout,
            cache=cache,
            cache_test=cache_test,
            limits=limits,
            static_limits=_static(limits),
            context_overflow=d.context_overflow,
        )

    def cache(
        self, defaults: cfg.CacheSpec, route: cfg.CacheSpec | bool | None, path: Path
    ) -> tuple[g.CachePolicy | None, nodes.Check | None]:
        """Route cache fields the user set override `defaults.cache` (SPEC §2.5)."""
        if route is False:
            return None, None
        spec = defaults
        when_path: Path = ("defaults", "cache", "when")
        if isinstance(route, cfg.CacheSpec):
            spec = defaults.model_copy(update=_set_fields(route))
            if "when" in route.model_fields_set:
                when_path = (*path, "when")
        if not spec.enabled:
            return None, None
        raw_when = spec.when if spec.when is not None else DEFAULT_CACHE_WHEN
        cond = self.when(raw_when, when_path)
        policy = g.CachePolicy(spec.ttl, spec.scope, spec.max_entries)
        return policy, (cond.test if cond is not None else None)

    def limits_for(
        self, names: list[str], rate_limits: list[tuple[g.RateLimitRule, Condition | None]]
    ) -> tuple[nodes.LimitNode, ...]:
        """SPEC §2.7/§2.4.2: a limit named in some route's `limits` applies only on those routes;
        every other limit applies everywhere its `when` matches."""
        scoped = self.scoped_limits
        wanted = set(names)
        return tuple(
            nodes.LimitNode(rule, cond.test if cond is not None else None)
            for rule, cond in rate_limits
            if rule.name not in scoped or rule.name in wanted
        )

    def tests(
        self, workspaces: Mapping[str, g.WorkspaceSpec], keys: Mapping[str, g.DeclaredKeySpec]
    ) -> tuple[g.RoutingTest, ...]:
        return tuple(
            g.RoutingTest(
                case.name, request_context(case.request, workspaces, keys), _expectation(case)
            )
            for case in self.config.tests
        )


# -- helpers ---------------------------------------------------------------------------------------


def _never(ctx: g.RequestContext) -> bool:
    return False


def _never_why(ctx: g.RequestContext) -> str:
    return "condition failed to compile"


_NEVER = Condition(_never, _never_why)


def _by_name(rules: Iterable[g.RateLimitRule]) -> dict[str, g.RateLimitRule]:
    out: dict[str, g.RateLimitRule] = {}
    for rule in rules:
        out.setdefault(rule.name, rule)  # a duplicate name is reported by checks; first wins
    return out


def _set_fields(model: cfg.Stored) -> dict[str, Any]:
    return {name: getattr(model, name) for name in model.model_fields_set}


def _retry(defaults: cfg.RetrySpec, route: cfg.RetrySpec | None) -> g.RetryPolicy:
    """Route retry fields the user set override `defaults.retry`, backoff field by field."""
    spec = defaults
    if route is not None:
        update = _set_fields(route)
        if "backoff" in update:
            update["backoff"] = defaults.backoff.model_copy(update=_set_fields(route.backoff))
        spec = defaults.model_copy(update=update)
    b = spec.backoff
    return g.RetryPolicy(
        attempts=spec.attempts,
        backoff=g.Backoff(b.initial, b.max, b.jitter),
        on_status=frozenset(x for x in spec.on if isinstance(x, int)),
        on_timeout="timeout" in spec.on,
        on_connection="connection" in spec.on,
    )


def _static(limits: tuple[nodes.LimitNode, ...]) -> tuple[g.RateLimitRule, ...] | None:
    if all(node.test is None for node in limits):
        return tuple(node.rule for node in limits)
    return None


def _params(params: cfg.ParamsSpec | None) -> g.ParamOverrides:
    if params is None:
        return g.ParamOverrides()
    return g.ParamOverrides(MappingProxyType(dict(params.set)), MappingProxyType(dict(params.max)))


def _index(
    routes: tuple[tuple[nodes.RouteNode, Mapping[str, frozenset[str]]], ...],
) -> nodes.RouteIndex:
    """Per indexed field: route positions by pinned literal, by pinned glob, and unpinned."""
    buckets: list[dict[str, set[int]]] = [{} for _ in nodes.INDEXED_FIELDS]
    globs: list[dict[str, set[int]]] = [{} for _ in nodes.INDEXED_FIELDS]
    wildcards: list[set[int]] = [set() for _ in nodes.INDEXED_FIELDS]
    for node, pins in routes:
        for f, name in enumerate(nodes.INDEXED_FIELDS):
            values = pins.get(name)
            if values is None:
                wildcards[f].add(node.index)
            for value in values or ():
                table = globs[f] if "*" in value else buckets[f]
                table.setdefault(value, set()).add(node.index)
    return nodes.RouteIndex(
        routes=tuple(node for node, _ in routes),
        buckets=tuple(MappingProxyType({v: frozenset(i) for v, i in b.items()}) for b in buckets),
        wildcards=tuple(frozenset(w) for w in wildcards),
        globs=tuple(
            tuple((glob_regex(pattern).match, frozenset(i)) for pattern, i in table.items())
            for table in globs
        ),
    )


def _server(s: cfg.ServerConfig) -> g.ServerSettings:
    return g.ServerSettings(
        s.host, s.port, s.max_body, s.max_concurrency, s.queue_timeout, s.request_timeout,
        tuple(s.cors_origins), s.log_bodies,
    )  # fmt: skip


def _auth(a: cfg.AuthConfig) -> g.AuthSettings:
    keys = {
        k.sha256: g.DeclaredKeySpec(k.name, k.workspace, k.user, frozenset(k.tags), k.expires)
        for k in a.keys
    }
    return g.AuthSettings(a.admin_key, a.mode, MappingProxyType(keys))


def request_context(
    request: cfg.TestRequest,
    workspaces: Mapping[str, g.WorkspaceSpec] | None = None,
    keys: Mapping[str, g.DeclaredKeySpec] | None = None,
) -> g.RequestContext:
    """The context a `tests:` or `concord explain` request stands for, as the gateway's auth
    would build it: a key declared under `auth.keys` brings its workspace, user and tags (SPEC
    §2.8), so no secret is needed to test it; tags include the workspace's (SPEC §2.4.1). A key
    name the config does not declare (one issued into the database) keeps the stated workspace."""
    declared = declared_key(keys or {}, request.key)
    workspace = declared.workspace if declared is not None else request.workspace
    ws = (workspaces or {}).get(workspace)
    tags = frozenset(request.tags) | (ws.tags if ws is not None else frozenset())
    if declared is not None:
        tags |= declared.tags
    return g.RequestContext(
        endpoint=request.endpoint,
        model=request.model,
        workspace=workspace,
        key=request.key,
        user=request.user or (declared.user if declared is not None else None),
        tags=tags,
        headers=MappingProxyType({k.lower(): v for k, v in request.headers.items()}),
        metadata=MappingProxyType(dict(request.metadata)),
        input_tokens=request.input_tokens,
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        stream=request.stream,
        tools=request.tools,
        images=request.images,
        budget_used=request.budget_used,
    )


def declared_key(
    keys: Mapping[str, g.DeclaredKeySpec], name: str | None
) -> g.DeclaredKeySpec | None:
    """The key declared under `auth.keys` with this name (names are unique), if any."""
    if name is None:
        return None
    return next((spec for spec in keys.values() if spec.name == name), None)


def _expectation(case: cfg.TestCase) -> g.TestExpectation:
    e = case.expect
    return g.TestExpectation(
        route=e.route,
        model=e.model,
        attempts=tuple(e.attempts) if e.attempts is not None else None,
        reject=e.reject,
        cache=e.cache,
        limits=tuple(e.limits) if e.limits is not None else None,
    )


def _reads_field(config: cfg.Config, field: str) -> bool:
    """Whether any `when` in the config (routes, rate limits, budgets, cache) names `field`."""
    whens: list[object] = [route.when for route in config.routes]
    whens += [route.cache.when for route in config.routes if route.cache]
    whens += [limit.when for limit in config.rate_limits]
    whens += [budget.when for budget in config.budgets]
    whens.append(config.defaults.cache.when)
    return any(_mentions(when, field) for when in whens)


def _mentions(when: object, field: str) -> bool:
    if isinstance(when, dict):
        return any(key == field or _mentions(value, field) for key, value in when.items())
    if isinstance(when, list):
        return any(_mentions(item, field) for item in when)
    return False
