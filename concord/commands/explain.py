"""`concord explain [-c FILE] --model M ... [REQUEST.json]` (SPEC §6): show how a request routes.

Builds the request context from the options and/or an OpenAI or Anthropic request body (options
win) the way a `tests:` request is built, so a key declared under `auth.keys` brings its
workspace, user and tags as the gateway's auth would. Runs the same `Graph.explain` the data
plane's decide is built on, then the budget step the gateway applies at the stated
`--budget-used` (SPEC §2.6: a 429 block or a downgrade), and prints the matched route, why earlier
routes missed, the attempt plan and every policy that applies. Reads and changes no runtime
state, and never prints a secret. Exit 0, 1 on an invalid config or request, 2 when a file
cannot be read.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from concord.commands.test import EXIT_FAILED, EXIT_OK, EXIT_UNREADABLE, load_for_command
from concord.engine.graph import (
    NO_RUNTIME,
    BudgetRule,
    Decision,
    Explanation,
    Graph,
    Rejection,
    RequestContext,
    RuntimeView,
)

if TYPE_CHECKING:
    from pydantic import ValidationError

    from concord.state.budgets import BudgetGrant

ENDPOINTS = ("chat", "completions", "embeddings", "messages")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", help="config file")
    parser.add_argument("request", nargs="?", metavar="REQUEST.json", help="a request body")
    parser.add_argument("--model", help="the model the client asks for")
    parser.add_argument("--endpoint", choices=ENDPOINTS, help="default: chat")
    parser.add_argument("--workspace", help="default: default")
    parser.add_argument(
        "--key", help="API-key name; one declared under auth.keys brings its workspace and tags"
    )
    parser.add_argument("--user", help="end-user id")
    parser.add_argument("--tag", action="append", default=[], help="a key/workspace tag")
    parser.add_argument("--header", action="append", default=[], metavar="K=V")
    parser.add_argument("--metadata", action="append", default=[], metavar="K=V")
    parser.add_argument("--input-tokens", type=int, metavar="N")
    parser.add_argument("--max-tokens", type=int, metavar="N")
    parser.add_argument("--temperature", type=float, metavar="T")
    parser.add_argument("--stream", action="store_true", default=None)
    parser.add_argument(
        "--budget-used",
        type=float,
        metavar="F",
        help="spend/limit of every budget that applies, 0.0 and up (1.0 = exhausted)",
    )


def run(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {}
    if args.request:
        body, code = _read_body(args.request)
        if body is None:
            return code
        from concord.engine.explain import endpoint_of, request_fields

        fields.update(request_fields(body), endpoint=endpoint_of(body))
    try:
        fields.update(_option_fields(args))
    except ValueError as exc:
        print(f"concord explain: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not fields.get("model"):
        print("concord explain: give --model or a REQUEST.json with a model", file=sys.stderr)
        return EXIT_FAILED
    graph, code = load_for_command(args.config, "explain")
    if graph is None:
        return code
    try:
        ctx = _context(graph, fields)
    except ValueError as exc:
        print(f"concord explain: invalid request: {exc}", file=sys.stderr)
        return EXIT_FAILED
    _note_key(graph, ctx, fields.get("workspace"))
    sys.stdout.write(_explain(graph, ctx))
    return EXIT_OK


def _explain(graph: Graph, ctx: RequestContext) -> str:
    """The decision as serve would carry it out: routing, then the budget step."""
    from concord.engine.explain import render

    explanation = graph.explain(ctx)
    outcome = budget_outcome(graph, ctx, explanation.decision)
    text = render(Explanation(outcome.decision, explanation.misses), graph, ctx)
    line = outcome.describe(ctx.budget_used)
    return text + (line + "\n" if line else "")


def _read_body(path: str) -> tuple[dict[str, Any] | None, int]:
    try:
        with open(path, encoding="utf-8") as handle:
            body = json.load(handle)
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return None, EXIT_UNREADABLE
    except json.JSONDecodeError as exc:
        print(f"{path}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}", file=sys.stderr)
        return None, EXIT_FAILED
    if not isinstance(body, dict):
        print(f"{path}: a request body must be a JSON object", file=sys.stderr)
        return None, EXIT_FAILED
    return body, EXIT_OK


def _option_fields(args: argparse.Namespace) -> dict[str, Any]:
    """Fields given as options; they override what the body says."""
    out: dict[str, Any] = {}
    for name in ("model", "endpoint", "workspace", "key", "user", "input_tokens", "max_tokens",
                 "temperature", "stream", "budget_used"):  # fmt: skip
        value = getattr(args, name)
        if value is not None:
            out[name] = value
    if args.tag:
        out["tags"] = args.tag
    if args.header:
        out["headers"] = {k.lower(): v for k, v in _pairs(args.header, "--header")}
    if args.metadata:
        out["metadata"] = dict(_pairs(args.metadata, "--metadata"))
    return out


def _pairs(items: list[str], option: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} expects KEY=VALUE, got '{item}'")
        pairs.append((key, value))
    return pairs


def _context(graph: Graph, fields: dict[str, Any]) -> RequestContext:
    """The context the data plane would build, through the same builder as a `tests:` request
    (so explain and test agree); explain assumes no prompt unless told."""
    from pydantic import ValidationError

    from concord.config.model import TestRequest
    from concord.engine.compile import request_context

    try:
        request = TestRequest.model_validate({"input_tokens": 0, **fields})
    except ValidationError as exc:
        raise ValueError(_first_error(exc)) from None
    return request_context(request, graph.workspaces, graph.auth.keys)


def _first_error(exc: ValidationError) -> str:
    """The first problem only: an explain request is one flag or body away from right."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}"


def _note_key(graph: Graph, ctx: RequestContext, stated: str | None) -> None:
    """Say on stderr when the key decides the workspace, or when the config does not know it."""
    from concord.engine.compile import declared_key

    if ctx.key is None:
        return
    note = ""
    if declared_key(graph.auth.keys, ctx.key) is None:
        note = f"key '{ctx.key}' is not declared under auth.keys; "
        note += f"explained as a key of workspace '{ctx.workspace}'"
    elif stated is not None and stated != ctx.workspace:
        note = f"key '{ctx.key}' belongs to workspace '{ctx.workspace}'; "
        note += f"--workspace {stated} is ignored, as the gateway would"
    if note:
        print(f"concord explain: {note}", file=sys.stderr)


# -- the budget step (SPEC §2.6) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetOutcome:
    """What the gateway's budget step does to a decision: `decision` is what it then serves
    (a 429 rejection when blocked); `grant` names the exhausted budget that acted, if any."""

    decision: Decision
    grant: BudgetGrant | None = None
    downgraded_from: str | None = None  # the x-concord-downgraded header

    def describe(self, used: float) -> str:
        """One `budget:` line for explain; empty when no budget is exhausted."""
        grant = self.grant
        if grant is None or grant.rule is None:
            return ""
        head = f"budget: '{grant.rule.name}' exhausted at budget_used {used:g} -> "
        rejection = self.decision.rejection
        if rejection is not None:
            return head + f"{rejection.status} {rejection.code}"
        if self.downgraded_from is not None:
            header = f"x-concord-downgraded: {self.downgraded_from}"
            return head + f"downgraded to {self.decision.model} ({header})"
        return head + f"downgrade to {grant.downgrade_to} not applied; served as asked"


def budget_outcome(
    graph: Graph, ctx: RequestContext, decision: Decision, runtime: RuntimeView = NO_RUNTIME
) -> BudgetOutcome:
    """The gateway's budget step (`StateGuards.admit`) for a decision, taking every budget that
    applies to stand at `ctx.budget_used` (spend / limit): a block budget wins and answers 429,
    else an exhausted downgrade budget moves the request to `downgrade_to`. Budgets of
    workspaces that only the database knows are not seen here."""
    if decision.rejection is not None or decision.model is None:
        return BudgetOutcome(decision)  # refused before the guards run
    grant = budget_grant(decision.budgets, ctx)
    if grant.rule is None:
        return BudgetOutcome(decision)
    if grant.outcome == "blocked":
        return BudgetOutcome(_blocked(decision, grant.rule), grant)
    downgraded = graph.downgrade(decision, grant.downgrade_to, ctx, runtime)
    if downgraded is None:
        return BudgetOutcome(decision, grant)
    return BudgetOutcome(downgraded, grant, decision.model)


def budget_guard(
    graph: Graph, ctx: RequestContext, decision: Decision, runtime: RuntimeView
) -> Decision:
    """`budget_outcome` as the guard `concord test` runs after each decision."""
    return budget_outcome(graph, ctx, decision, runtime).decision


def budget_grant(rules: Sequence[BudgetRule], ctx: RequestContext) -> BudgetGrant:
    """The grant the state backend would give at the stated spend, built with the gateway's own
    budget plan and precedence (`budget_plan`, `grant_for`), without a backend."""
    from concord.gateway.guards import principal_ids
    from concord.state.backend import BudgetVerdict
    from concord.state.budgets import budget_plan, grant_for

    plan = budget_plan(rules, principal_ids(ctx))
    used = ctx.budget_used
    exhausted = tuple(i for i, (rule, _, _) in enumerate(plan.entries) if _exhausted(rule, used))
    blocked_by = next((i for i in exhausted if plan.entries[i][2]), None)
    spent = tuple(used * rule.limit_usd for rule in plan.applied)
    return grant_for(BudgetVerdict(blocked_by is None, spent, exhausted, blocked_by), plan.applied)


def _exhausted(rule: BudgetRule, used: float) -> bool:
    """A period admits requests until its spend reaches the limit (a zero limit admits none)."""
    return not math.isinf(rule.limit_usd) and used * rule.limit_usd >= rule.limit_usd


def _blocked(decision: Decision, rule: BudgetRule) -> Decision:
    """The 429 insufficient_quota / budget_exceeded answer, as a rejected decision."""
    from concord.gateway.errors import BudgetExceeded

    error = BudgetExceeded.named(rule.name)
    rejection = Rejection(error.status, error.message, error.code or "budget_exceeded")
    return Decision(decision.route, decision.requested_model, None, rejection=rejection)
