"""The guards step (SPEC §1): rate limits, budgets and the response cache, between decide and the
attempts.

The handler calls, per request:

    prepare(graph, ctx)      → ctx with `budget_used` filled in, when a route condition reads it
    admit(graph, ctx, decision, body, runtime)
                             → Admission: rate limits charged (§2.7), the worst case reserved on
                               every budget (§2.6, possibly downgrading the decision), and the
                               cache looked up (§2.5); raises RateLimited, BudgetExceeded or
                               StateUnreachable
    store(admission, ...)    → a successful answer kept for later hits (written by settle)
    settle(admission, record)→ token buckets corrected to actual usage, budgets to actual cost,
                               the stored answer written: one backend call, not waited for
                               (both are plain calls: nothing on the response path waits)

`StateGuards` is also the `Component` that owns the state backend: opened once per process from
`storage.state`, kept across reloads (SPEC §4: limits, spend and cache survive them), reported by
`/readyz`, closed at shutdown. A streamed answer is stored once the stream has ended, folded back
into the complete answer (`translate.collect`), so it is replayed either way too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.routing import BaseRoute

from concord.engine.graph import (
    BudgetRule,
    Decision,
    Graph,
    RateLimitRule,
    RequestContext,
    RuntimeView,
    StorageSettings,
)
from concord.gateway.errors import BudgetExceeded, Overloaded, RateLimited
from concord.gateway.record import UsageRecord
from concord.observability.readiness import DEGRADED
from concord.state import (
    BudgetGrant,
    BudgetKeeper,
    CachedResponse,
    RateGrant,
    RateLimiter,
    ResponseCache,
    Settlement,
    StateBackend,
    StateUnavailable,
    Ticket,
    cache_directives,
    cache_key,
    open_state,
    worst_case_cost,
)
from concord.state import RateLimited as LimitHit
from concord.state.budgets import OK as NO_BUDGET
from concord.state.budgets import BudgetPlan, budget_plan, grant_for
from concord.state.cache import encode_entry
from concord.state.principal import key_ident
from concord.state.ratelimit import NO_GRANT, RatePlan, rate_plan
from concord.translate.usage import Usage

if TYPE_CHECKING:
    from concord.gateway.app import GatewayState

log = logging.getLogger("concord.gateway")

CacheStatus = Literal["hit", "miss", "bypass"]
JSON = dict[str, Any]

# Redis socket timeout (seconds). Long enough that a busy event loop (hundreds of requests in
# flight, each answer read late) is not mistaken for an outage; a refused connection still fails
# at once, and ResilientState probes a dead server only once per second.
STATE_TIMEOUT = 1.0

# Rate and budget plans are memoised per (rule tuple, principal); past this many entries the memo
# starts over, so a flood of distinct keys or users cannot grow it without bound.
PLAN_MEMO_MAX = 4096

_Rules = tuple[BudgetRule, ...]

# (id of the decision's rule tuple, key name, key id, workspace, user)
_PlanKey = tuple[int, str | None, str | None, str | None, str | None]
P = TypeVar("P")


class StateUnreachable(Overloaded):
    """503: the request needs limits or budgets and the shared state is down with
    `storage.state_failure: closed` (SPEC §1); the same types as any other 503 overload."""


@dataclass(slots=True)
class Admission:
    """What the guards granted one request; the handler keeps it until `settle`."""

    decision: Decision
    downgraded_from: str | None = None  # SPEC §2.6: x-concord-downgraded
    rate: RateGrant = NO_GRANT
    budget: BudgetGrant = NO_BUDGET
    cache_key: str | None = None  # set when the answer may be stored
    cache_ttl: float = 0.0
    cache_status: CacheStatus = "bypass"
    cached: CachedResponse | None = None  # a hit: answer from here, call no upstream
    store: tuple[str, bytes, float] | None = None  # an answer to write with the settlement


class Guards(Protocol):
    async def prepare(self, graph: Graph, ctx: RequestContext) -> RequestContext: ...

    async def admit(
        self,
        graph: Graph,
        ctx: RequestContext,
        decision: Decision,
        body: JSON,
        runtime: RuntimeView,
    ) -> Admission: ...

    def store(
        self, admission: Admission, body: bytes, usage: Usage, model: str, provider: str
    ) -> None: ...

    def settle(self, admission: Admission, record: UsageRecord) -> None: ...


class NoGuards:
    """Admits everything and caches nothing (tests and embedders without a state backend)."""

    async def prepare(self, graph: Graph, ctx: RequestContext) -> RequestContext:
        return ctx

    async def admit(
        self,
        graph: Graph,
        ctx: RequestContext,
        decision: Decision,
        body: JSON,
        runtime: RuntimeView,
    ) -> Admission:
        return Admission(decision)

    def store(
        self, admission: Admission, body: bytes, usage: Usage, model: str, provider: str
    ) -> None:
        return None

    def settle(self, admission: Admission, record: UsageRecord) -> None:
        return None


class StateGuards:
    """Guards on a `StateBackend`, and the component that owns that backend."""

    def __init__(self, backend: StateBackend) -> None:
        self.backend = backend
        self.limiter = RateLimiter(backend)
        self.keeper = BudgetKeeper(backend)
        self.cache = ResponseCache(backend)
        # Each entry keeps its rule tuple alive, so the tuple's id cannot be reused meanwhile.
        self._rate_plans: dict[_PlanKey, tuple[Sequence[RateLimitRule], RatePlan]] = {}
        self._budget_plans: dict[_PlanKey, tuple[Sequence[BudgetRule], BudgetPlan]] = {}
        # SPEC §2.6: budgets of workspaces the graph does not declare (created through the admin
        # API); `gateway.assemble` plugs in the records' workspace directory
        self.workspace_budget: Callable[[Graph, str], BudgetRule | None] = _no_budget
        self._joined: dict[tuple[int, BudgetRule], tuple[Sequence[BudgetRule], _Rules]] = {}

    @classmethod
    def open(cls, storage: StorageSettings) -> StateGuards:
        """Open the backend `storage.state` names (SPEC §1); a `key_prefix` query parameter on a
        Redis URL keeps several deployments apart on one Redis server."""
        url, prefix = split_key_prefix(storage.state)
        backend = open_state(
            url, failure=storage.state_failure, key_prefix=prefix, timeout=STATE_TIMEOUT
        )
        return cls(backend)

    # -- Component ------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return []

    async def start(self, state: GatewayState) -> None:
        state.readiness_checks["state"] = self.ready

    async def stop(self, state: GatewayState) -> None:
        state.readiness_checks.pop("state", None)
        await self.backend.close()

    async def ready(self) -> bool | str:
        """SPEC §3 /readyz: ready while the backend answers; "degraded" (still ready) while it is
        down but `state_failure: open` keeps requests flowing on per-process counters."""
        if await self.backend.ping():
            return True
        return DEGRADED if getattr(self.backend, "failure", "closed") == "open" else False

    @property
    def state_healthy(self) -> bool:
        """Whether the shared backend answered last time it was asked (the metric's source)."""
        return bool(getattr(self.backend, "healthy", True))

    # -- request path ---------------------------------------------------------------------------

    async def prepare(self, graph: Graph, ctx: RequestContext) -> RequestContext:
        """SPEC §2.4.1 `budget_used`, read from the backend only for graphs that route on it."""
        if not graph.reads_budget_used:
            return ctx
        rules = self._budgets(graph, ctx, graph.budgets_for(ctx))
        if not rules:
            return ctx
        try:
            used = await self.keeper.used(rules, principal_ids(ctx))
        except StateUnavailable:
            raise _unreachable() from None
        return replace(ctx, budget_used=used)

    async def admit(
        self,
        graph: Graph,
        ctx: RequestContext,
        decision: Decision,
        body: JSON,
        runtime: RuntimeView,
    ) -> Admission:
        """Rate limits, budgets and the cache read in one backend call (one Redis round trip);
        a request refused by either is charged nothing."""
        admission = Admission(decision)
        rules = decision.rate_limits
        budgets = self._budgets(graph, ctx, decision.budgets)
        if not rules and not budgets and decision.cache is None:
            return admission  # SPEC §1: nothing to guard, no state to touch
        now = time.time()
        max_tokens = _max_tokens(body, ctx)
        estimate = ctx.input_tokens + (max_tokens or 0)  # SPEC §2.7: tokens reserve the estimate
        rates = self._rate_plan(rules, ctx) if rules else None
        buckets = rates.buckets_at(estimate) if rates is not None else ()
        spend = self._budget_plan(budgets, ctx) if budgets else None
        lines = spend.lines_at(now) if spend is not None and spend.entries else ()
        amount = self._worst_case(graph, ctx, decision, max_tokens) if lines else 0.0
        read = self._plan_cache(ctx, admission, body)
        if not buckets and not lines and read is None:
            return admission
        ticket = Ticket(buckets, lines, amount, read)
        try:
            admitted = await self.backend.admit(ticket, now)
        except StateUnavailable:
            raise _unreachable() from None
        if not admitted.rate.allowed:
            assert rates is not None  # only a bucket refuses
            rule, kind = rates.origins[admitted.rate.denied or 0]
            hit = LimitHit(rule.name, kind, admitted.rate.retry_after)
            raise RateLimited(
                f"Rate limit '{hit.rule}' exceeded ({hit.kind} per minute). "
                f"Retry after {hit.retry_after_header} s.",
                headers={"retry-after": hit.retry_after_header},
            )
        if admitted.rate.reservation is not None:
            admission.rate = RateGrant(admitted.rate.reservation, estimate)
        try:
            if admitted.budget is not None:
                assert spend is not None  # a verdict answers lines
                admission.budget = grant_for(admitted.budget, spend.applied)
                await self._apply_budget(graph, ctx, admission, body, runtime)
            if read is not None and admission.decision is decision:
                self._found(admission, admitted.cached)
        except BaseException:
            self._release(admission)  # refused or cancelled: no tokens used, nothing spent
            raise
        return admission

    def _budgets(
        self, graph: Graph, ctx: RequestContext, declared: Sequence[BudgetRule]
    ) -> Sequence[BudgetRule]:
        """The graph's budgets for the request, led by its database workspace's own (the same
        tuple every time, so the budget plans stay memoised)."""
        own = self.workspace_budget(graph, ctx.workspace)
        if own is None:
            return declared
        key = (id(declared), own)
        found = self._joined.get(key)
        if found is not None and found[0] is declared:
            return found[1]
        joined = (own, *declared)
        _remember(self._joined, key, (declared, joined))
        return joined

    def _rate_plan(self, rules: Sequence[RateLimitRule], ctx: RequestContext) -> RatePlan:
        """The decision's buckets for this principal, built once (the rule tuples come from the
        compiled graph, so the same few recur)."""
        return _per_principal(self._rate_plans, rules, ctx, rate_plan)

    def _budget_plan(self, budgets: Sequence[BudgetRule], ctx: RequestContext) -> BudgetPlan:
        """The decision's budget lines for this principal, less the period (see `_rate_plan`)."""
        return _per_principal(self._budget_plans, budgets, ctx, budget_plan)

    @staticmethod
    def _worst_case(
        graph: Graph, ctx: RequestContext, decision: Decision, max_tokens: int | None
    ) -> float:
        """SPEC §2.6: the worst-case cost reserved on every budget."""
        catalog = graph.models.get(decision.model) if decision.model else None
        return worst_case_cost(
            decision.price,
            ctx.input_tokens,
            max_tokens,
            default_max_tokens=catalog.max_output_tokens if catalog else None,
        )

    async def _apply_budget(
        self,
        graph: Graph,
        ctx: RequestContext,
        admission: Admission,
        body: JSON,
        runtime: RuntimeView,
    ) -> None:
        """SPEC §2.6: block, or downgrade the model (and look the cache up for the new one)."""
        grant, decision = admission.budget, admission.decision
        if grant.outcome == "blocked":
            name = grant.rule.name if grant.rule else "budget"
            raise BudgetExceeded.named(name)
        downgraded = graph.downgrade(decision, grant.downgrade_to, ctx, runtime)
        if downgraded is None:
            return
        admission.decision = downgraded
        admission.downgraded_from = decision.model
        admission.cache_key, admission.cache_ttl, admission.cache_status = None, 0.0, "bypass"
        read = self._plan_cache(ctx, admission, body)
        if read is not None:  # rare: a second round trip for the downgraded model's entry
            self._found(admission, await self._read(read))

    def _plan_cache(self, ctx: RequestContext, admission: Admission, body: JSON) -> str | None:
        """SPEC §2.5: Cache-Control decides whether to read and write; the key is the resolved
        model plus every output-shaping field, scoped to the workspace unless `scope: global`.
        Returns the backend key to read, or None."""
        decision = admission.decision
        policy = decision.cache
        if policy is None or decision.model is None:
            return None
        directives = cache_directives(ctx.headers)
        if not directives.read and not directives.write:
            return None
        key = cache_key(
            decision.model,
            ctx.endpoint,
            body,
            ctx.workspace if policy.scope == "workspace" else None,
        )
        if directives.write:
            admission.cache_key = key
            admission.cache_ttl = policy.ttl
        return self.cache.namespace + key if directives.read else None  # else bypass

    async def _read(self, key: str) -> bytes | None:
        try:
            return await self.backend.cache_get(key)
        except StateUnavailable:
            return None

    @staticmethod
    def _found(admission: Admission, raw: bytes | None) -> None:
        admission.cached = CachedResponse.from_bytes(raw) if raw is not None else None
        admission.cache_status = "hit" if admission.cached is not None else "miss"

    def _release(self, admission: Admission) -> None:
        """Give back what a request that will not run reserved."""
        settlement = Settlement(admission.rate.reservation, 0, admission.budget.reservation, 0.0)
        admission.rate, admission.budget = NO_GRANT, NO_BUDGET
        if not settlement.empty:
            self.backend.settle(settlement)

    def store(
        self, admission: Admission, body: bytes, usage: Usage, model: str, provider: str
    ) -> None:
        """Keep the answer for the next identical request; it is written with the settlement,
        in the same backend call (the handler always settles after storing)."""
        if admission.cache_key is None or admission.cached is not None:
            return
        usage_map = {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cached_tokens": usage.cached_tokens,
        }
        entry = encode_entry(body, usage_map, model, provider, time.time())
        admission.store = (self.cache.namespace + admission.cache_key, entry, admission.cache_ttl)

    def settle(self, admission: Admission, record: UsageRecord) -> None:
        """Tokens to what the upstream used (none for a hit); budgets to the record's cost: what
        the upstream calls made for the request used, answered or not (a failed request costs 0
        unless a context-overflow summary was made on the way).
        Handed to the backend without waiting: off the response path, yet applied before any
        later call of this process (so the next request sees it)."""
        tokens = 0 if record.cache_hit else max(record.input_tokens + record.output_tokens, 0)
        rate, budget, store = admission.rate, admission.budget.reservation, admission.store
        reservation = rate.reservation if tokens != rate.tokens_estimate else None
        admission.rate, admission.budget, admission.store = NO_GRANT, NO_BUDGET, None
        if reservation is None and budget is None and store is None:
            return  # nothing held, nothing to write: no settlement to build
        cost = 0.0 if record.cache_hit else record.cost_usd
        self.backend.settle(Settlement(reservation, tokens, budget, cost, store))


def _no_budget(graph: Graph, workspace: str) -> BudgetRule | None:
    return None


def principal_ids(ctx: RequestContext) -> Mapping[str, str | None]:
    return {"key": key_ident(ctx.key, ctx.key_id), "workspace": ctx.workspace, "user": ctx.user}


def _per_principal(
    memo: dict[_PlanKey, tuple[Any, P]],
    rules: Sequence[Any],
    ctx: RequestContext,
    build: Callable[[Any, Mapping[str, str | None]], P],
) -> P:
    """`build(rules, principal ids)`, remembered per rule tuple and principal; the entry holds
    the tuple itself, so a reused id of a tuple since dropped can never match."""
    key = (id(rules), ctx.key, ctx.key_id, ctx.workspace, ctx.user)
    found = memo.get(key)
    if found is not None and found[0] is rules:
        return found[1]
    plan = build(rules, principal_ids(ctx))
    _remember(memo, key, (rules, plan))
    return plan


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    if len(memo) >= PLAN_MEMO_MAX:
        memo.clear()
    memo[key] = value


def _max_tokens(body: JSON, ctx: RequestContext) -> int | None:
    """The output cap the upstream will see (route params applied), else the client's."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return ctx.max_tokens


def _unreachable() -> StateUnreachable:
    return StateUnreachable(
        "Shared state is unreachable; this request needs rate limits or budgets.",
        headers={"retry-after": "1"},
    )


def split_key_prefix(url: str, default: str = "concord:") -> tuple[str, str]:
    """`redis://h:6379/0?key_prefix=team-a:` → (`redis://h:6379/0`, `team-a:`); Redis itself
    would reject the unknown query parameter."""
    if "key_prefix=" not in url:
        return url, default
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((value for name, value in query if name == "key_prefix"), default)
    rest = urlencode([(name, value) for name, value in query if name != "key_prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix
