"""The guards seam (SPEC §1): rate limits, budgets and cache sit between decide and attempts.

`admit` may raise a GatewayError (429 rate_limit_exceeded, budget_exceeded) or return a changed
decision (a budget downgrade: the handler reports `x-concord-downgraded` when the model changed);
`settle` runs once the request ended, with its usage record (settle reservations to actual cost).
"""

from __future__ import annotations

from typing import Protocol

from concord.engine.graph import Decision, RequestContext
from concord.gateway.record import UsageRecord


class Guards(Protocol):
    async def admit(self, ctx: RequestContext, decision: Decision) -> Decision: ...

    async def settle(
        self, ctx: RequestContext, decision: Decision, record: UsageRecord
    ) -> None: ...


class NoGuards:
    """Admits everything; the default until the state backend lands."""

    async def admit(self, ctx: RequestContext, decision: Decision) -> Decision:
        return decision

    async def settle(self, ctx: RequestContext, decision: Decision, record: UsageRecord) -> None:
        return None
